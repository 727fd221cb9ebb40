"""Instruction data for supervised fine-tuning, read into conversations.

Accepted records (JSONL, JSON, CSV, parquet; one shape per record is enough):

- dolly-15k: ``instruction``, ``context``, ``response`` (``category`` kept)
- alpaca: ``instruction``, ``input``, ``output``
- conversations: ``messages`` = [{role, content}, ...] ending with the assistant's turn
- prompt / response (or ``completion``), and TRL preference records (``prompt``, ``chosen``: the
  chosen reply is the target)

Every example becomes a list of chat messages whose last message is the assistant's reply,
the only part the loss counts. Errors name the line (or row) and the field.
"""

from __future__ import annotations

import csv
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path


class InstructionFileError(ValueError):
    """The file cannot be used for SFT; the message names the line and field."""


@dataclass
class Example:
    messages: list[dict]
    category: str = ""
    meta: dict = field(default_factory=dict)


def _text(record: dict, key: str, where: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, float) and value != value):  # missing or NaN (CSV / parquet)
        if required:
            raise InstructionFileError(f"{where}: field {key!r} is missing")
        return ""
    if not isinstance(value, str):
        raise InstructionFileError(f"{where}: field {key!r} must be text")
    if required and not value.strip():
        raise InstructionFileError(f"{where}: field {key!r} is empty")
    return value.strip()


def example_from_record(record: dict, where: str) -> Example:
    if not isinstance(record, dict):
        raise InstructionFileError(f"{where}: expected an object")
    if record.get("messages") is not None:
        msgs = record["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            raise InstructionFileError(f"{where}: field 'messages' must be a list of {{'role', 'content'}} objects")
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            raise InstructionFileError(f"{where}: 'messages' must end with an assistant turn (the reply to learn)")
        if not str(msgs[-1]["content"]).strip():
            raise InstructionFileError(f"{where}: the last assistant turn is empty")
        return Example([{"role": m["role"], "content": str(m["content"])} for m in msgs])
    if record.get("instruction") is not None:
        instruction = _text(record, "instruction", where)
        if "response" in record:  # dolly
            extra, reply, category = (
                _text(record, "context", where, False),
                _text(record, "response", where),
                str(record.get("category") or ""),
            )
        elif "output" in record:  # alpaca
            extra, reply, category = _text(record, "input", where, False), _text(record, "output", where), ""
        else:
            raise InstructionFileError(f"{where}: an 'instruction' record needs 'response' (dolly) or 'output' (alpaca)")
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        return Example([{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}], category)
    if record.get("prompt") is not None:
        prompt = _text(record, "prompt", where)
        for key in ("response", "completion", "chosen"):
            if key in record:
                return Example([{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(record, key, where)}])
        raise InstructionFileError(f"{where}: a 'prompt' record needs 'response', 'completion' or 'chosen'")
    raise InstructionFileError(
        f"{where}: no 'messages', 'instruction' or 'prompt' field (found: {', '.join(map(str, record)) or 'nothing'}); "
        "use the dolly, alpaca, conversation or prompt/response shape"
    )


def read_records(path: Path, limit: int | None = None) -> list[tuple[str, dict]]:
    """(where, record) for every record of a JSONL / JSON / CSV / parquet file (or the first ``limit``)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        out = []
        with path.open(encoding="utf-8") as handle:
            for n, line in enumerate(handle, 1):
                if limit is not None and len(out) >= limit:
                    break
                if line.strip():
                    try:
                        out.append((f"{path}:{n}", json.loads(line)))
                    except ValueError as exc:
                        raise InstructionFileError(f"{path}:{n}: not valid JSON ({exc.args[0]})") from exc
        return out
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise InstructionFileError(f"{path}: not valid JSON ({exc.args[0]})") from exc
        if not isinstance(data, list):
            raise InstructionFileError(f"{path}: expected a JSON list of records")
        return [(f"{path} record {n}", r) for n, r in enumerate(data[:limit], 1)]
    if suffix == ".csv":
        with path.open(newline="") as handle:
            return [(f"{path} row {n}", dict(r)) for n, r in enumerate(itertools.islice(csv.DictReader(handle), limit), 2)]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        if limit is None:
            rows = pq.read_table(path).to_pylist()
        else:
            first = next(pq.ParquetFile(path).iter_batches(batch_size=limit), None)
            rows = first.to_pylist() if first is not None else []
        return [(f"{path} row {n}", r) for n, r in enumerate(rows, 1)]
    raise InstructionFileError(f"{path}: unsupported file type {suffix or '(none)'}; use .jsonl, .json, .csv or .parquet")


def read_examples(path: Path, limit: int | None = None) -> list[Example]:
    """Every example of the file (or the first ``limit``), checked; InstructionFileError at the first bad record."""
    path = Path(path)
    if not path.is_file():
        raise InstructionFileError(f"instruction file {path} not found")
    try:
        records = read_records(path, limit)
    except InstructionFileError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise InstructionFileError(f"{path} cannot be read: {exc}") from exc
    except Exception as exc:  # pyarrow's errors for a file that is not parquet
        raise InstructionFileError(f"{path}: not a readable {path.suffix} file ({exc})") from exc
    examples = [example_from_record(record, where) for where, record in records]
    if not examples:
        raise InstructionFileError(f"{path} holds no examples")
    return examples
