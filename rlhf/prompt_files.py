"""Read a file of prompts for batch generation: JSONL, JSON, CSV, parquet or plain text.

Each record needs a ``prompt`` (text), ``messages`` (a chat), or ``instruction`` (with an
optional ``input`` or ``context``, the alpaca and dolly shapes). Plain text files hold one
prompt per line. Errors name the line (or row) and the field.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path


class PromptFileError(ValueError):
    """The prompts file cannot be used; the message names the line and field."""


def _prompt_of(record: dict, where: str) -> str | list[dict]:
    if not isinstance(record, dict):
        raise PromptFileError(f"{where}: expected an object with a 'prompt', 'messages' or 'instruction' field")
    if record.get("messages") is not None:
        messages = record["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise PromptFileError(f"{where}: field 'messages' must be a list of {{'role', 'content'}} objects")
        if not messages:
            raise PromptFileError(f"{where}: field 'messages' is empty")
        return messages
    if record.get("prompt") is not None:
        text = record["prompt"]
        if not isinstance(text, str) or not text.strip():
            raise PromptFileError(f"{where}: field 'prompt' must be non-empty text")
        return text
    if record.get("instruction") is not None:
        text = str(record["instruction"]).strip()
        extra = str(record.get("input") or record.get("context") or "").strip()
        if not text:
            raise PromptFileError(f"{where}: field 'instruction' is empty")
        return f"{text}\n\n{extra}" if extra else text
    raise PromptFileError(f"{where}: no 'prompt', 'messages' or 'instruction' field (found: {', '.join(record) or 'nothing'})")


def read_prompt_records(path: Path, limit: int | None = None) -> list[tuple[dict, str | list[dict]]]:
    """(original record, prompt) pairs from ``path``, in file order (or the first ``limit``)."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(f"prompts file {path} not found")
    try:
        out = _records(path, limit)
    except PromptFileError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptFileError(f"prompts file {path} cannot be read: {exc}") from exc
    except Exception as exc:  # pyarrow's errors for a file that is not parquet
        raise PromptFileError(f"{path}: not a readable {path.suffix} file ({exc})") from exc
    if not out:
        raise PromptFileError(f"{path} holds no prompts")
    return out


def _records(path: Path, limit: int | None) -> list[tuple[dict, str | list[dict]]]:
    suffix = path.suffix.lower()
    out: list[tuple[dict, str | list[dict]]] = []
    if suffix in (".jsonl", ".txt", ""):
        with path.open(encoding="utf-8") as handle:
            for n, line in enumerate(handle, 1):
                if limit is not None and len(out) >= limit:
                    break
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if suffix != ".jsonl":
                    out.append(({"prompt": line}, line))
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise PromptFileError(f"{path}:{n}: not valid JSON ({exc.args[0]})") from exc
                out.append((record, _prompt_of(record, f"{path}:{n}")))
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise PromptFileError(f"{path}: not valid JSON ({exc.args[0]})") from exc
        if not isinstance(data, list):
            raise PromptFileError(f"{path}: expected a JSON list of records")
        out = [(r, _prompt_of(r, f"{path}: record {n}")) for n, r in enumerate(data[:limit], 1)]
    elif suffix == ".csv":
        with path.open(newline="") as handle:
            # Line 1 is the header, so record n sits on line n + 1.
            out = [(r, _prompt_of(r, f"{path}:{n}")) for n, r in enumerate(itertools.islice(csv.DictReader(handle), limit), 2)]
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        if limit is None:
            rows = pq.read_table(path).to_pylist()
        else:
            first = next(pq.ParquetFile(path).iter_batches(batch_size=limit), None)
            rows = first.to_pylist() if first is not None else []
        out = [(r, _prompt_of(r, f"{path}: row {n}")) for n, r in enumerate(rows, 1)]
    else:
        raise PromptFileError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json, .csv, .parquet or .txt")
    return out
