"""Import prompts, replies and preferences from files into a project, all or nothing.

Sources: JSONL, JSON (a list), CSV, parquet, or a folder saved by ``datasets``
(``Dataset.save_to_disk``). Shapes, detected from the first record's fields (or named), one
shape per file:

| shape | fields | what is stored |
|---|---|---|
| prompt | ``prompt`` (text) or ``messages`` | a prompt |
| dolly | ``instruction``, ``context``, ``response``, ``category`` | a prompt and the human response as a reply |
| alpaca | ``instruction``, ``input``, ``output`` | a prompt and the output as a reply |
| preference | ``prompt``, ``chosen``, ``rejected`` (text or messages) | a prompt, two replies, a ranking by the import annotator |
| hh-rlhf | ``chosen``, ``rejected``: transcripts of Human / Assistant turns | the same; the prompt is the shared turns |

Every record is checked before anything is written; the first error names the line (or row)
and the field, and the database is left as it was.

    report = import_file(store, project_id, Path("dolly.jsonl"))
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from annotations.accounts import import_annotator
from annotations.store import PromptRecord, ReplyRecord, Store, StoreError, insert_prompt, insert_reply

SHAPES = ("auto", "prompt", "dolly", "alpaca", "preference", "hh-rlhf")
HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


class ImportFailed(StoreError):
    """A file cannot be imported; the message says where and why. Nothing was written."""


@dataclass
class ImportItem:
    prompt: PromptRecord
    replies: list[ReplyRecord] = field(default_factory=list)
    preferred: bool = False  # replies[0] is chosen over replies[1]


@dataclass(frozen=True)
class ImportReport:
    prompts: int
    replies: int
    rankings: int
    shapes: dict[str, int]
    skipped: list[str] = field(default_factory=list)  # why each left-out record was left out


# -- reading files ---------------------------------------------------------------------------
def read_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) for every record of a file or saved ``datasets`` folder."""
    path = Path(path)
    if path.is_dir():
        return _read_datasets_folder(path)
    if not path.is_file():
        raise ImportFailed(f"{path} not found")
    suffix = path.suffix.lower()
    name = path.name
    if suffix == ".jsonl":
        out = []
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="strict").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ImportFailed(f"{name} line {n}: not valid JSON ({exc.args[0]})") from exc
            out.append((f"{name} line {n}", record))
        return out
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ImportFailed(f"{name}: not valid JSON ({exc.args[0]})") from exc
        if not isinstance(data, list):
            raise ImportFailed(f"{name}: expected a JSON list of records")
        return [(f"{name} record {n}", r) for n, r in enumerate(data, 1)]
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            return [(f"{name} line {reader.line_num}", dict(r)) for r in reader]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ImportFailed(f"{name}: not a readable parquet file ({exc})") from exc
        return [(f"{name} row {n}", r) for n, r in enumerate(rows, 1)]
    raise ImportFailed(f"{name}: unsupported file type {suffix!r}; use .jsonl, .json, .csv, .parquet or a saved datasets folder")


def _read_datasets_folder(folder: Path) -> list[tuple[str, dict]]:
    """Rows of a ``save_to_disk`` folder, read as Arrow streams (no ``datasets`` import needed)."""
    import pyarrow as pa

    files = sorted(folder.glob("data-*.arrow")) or sorted(folder.glob("*.arrow"))
    if not files:
        raise ImportFailed(f"{folder} is not a saved datasets folder (no .arrow files); save it with Dataset.save_to_disk")
    out: list[tuple[str, dict]] = []
    for f in files:
        try:
            with pa.memory_map(str(f)) as source:
                table = pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid as exc:
            raise ImportFailed(f"{f.name}: not a readable Arrow file ({exc})") from exc
        out += [(f"{folder.name} row {len(out) + n}", r) for n, r in enumerate(table.to_pylist(), 1)]
    return out


# -- shapes ------------------------------------------------------------------------------------
def detect_shape(record: dict) -> str:
    # A field counts when present, even empty, so an empty value is reported as such.
    keys = {k for k, v in record.items() if v is not None and not (isinstance(v, float) and v != v)}
    if {"chosen", "rejected"} <= keys:
        return "preference" if "prompt" in keys else "hh-rlhf"
    if "instruction" in keys and ("response" in keys or "context" in keys):
        return "dolly"
    if "instruction" in keys:
        return "alpaca"
    return "prompt"


def _text(record: dict, key: str, where: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, float) and value != value):  # None or NaN from CSV/parquet
        value = ""
    if not isinstance(value, str):
        raise ImportFailed(f"{where}: field '{key}' must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise ImportFailed(f"{where}: field '{key}' is missing or empty")
    return value.strip()


def _messages(value, where: str, key: str) -> list[dict]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ImportFailed(f"{where}: field '{key}' must be a list of messages") from exc
    if not isinstance(value, list) or not value:
        raise ImportFailed(f"{where}: field '{key}' must be a non-empty list of messages")
    out = []
    for n, m in enumerate(value, 1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ImportFailed(f"{where}: field '{key}' message {n} needs a 'role' and a text 'content'")
        if m["role"] not in ("system", "user", "assistant"):
            raise ImportFailed(f"{where}: field '{key}' message {n} has role {m['role']!r}; use system, user or assistant")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def prompt_from_messages(messages: list[dict], source: str, category: str = "", metadata: dict | None = None) -> PromptRecord:
    """A prompt record for a conversation: text is the single user turn, or the transcript."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return PromptRecord(messages[0]["content"], None, source, category, metadata)
    text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    return PromptRecord(text, messages, source, category, metadata)


def split_hh(transcript: str, where: str, key: str) -> tuple[list[dict], str]:
    """An HH-RLHF transcript as (messages before the last reply, the last assistant reply)."""
    parts = HH_TURN.split(transcript)
    if len(parts) < 5 or parts[0].strip():
        raise ImportFailed(f"{where}: field '{key}' is not an HH-RLHF transcript of '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    turns = [{"role": "user" if parts[i] == "Human" else "assistant", "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]
    if turns[-1]["role"] != "assistant":
        raise ImportFailed(f"{where}: field '{key}' does not end with an Assistant reply")
    return turns[:-1], turns[-1]["content"]


def parse_record(record: dict, where: str, source: str, shape: str = "auto") -> tuple[str, ImportItem]:
    """(shape, item) for one record; ImportFailed naming ``where`` and the field if it is bad."""
    if not isinstance(record, dict):
        raise ImportFailed(f"{where}: expected an object with named fields")
    shape = detect_shape(record) if shape == "auto" else shape
    category = _text(record, "category", where, required=False) if "category" in record else ""
    if shape == "prompt":
        if record.get("messages") not in (None, ""):
            msgs = _messages(record["messages"], where, "messages")
            return shape, ImportItem(prompt_from_messages(msgs, source, category))
        key = "prompt" if "prompt" in record else "text" if "text" in record else None
        if key is None:
            raise ImportFailed(f"{where}: no 'prompt', 'text' or 'messages' field (found: {', '.join(record) or 'nothing'})")
        return shape, ImportItem(PromptRecord(_text(record, key, where), None, source, category))
    if shape == "dolly":
        instruction = _text(record, "instruction", where)
        context = _text(record, "context", where, required=False)
        text = f"{instruction}\n\n{context}" if context else instruction
        response = _text(record, "response", where, required=False)
        replies = [ReplyRecord(response, model="human", checkpoint=source)] if response else []
        return shape, ImportItem(PromptRecord(text, None, source, category, {"instruction": instruction, "context": context}), replies)
    if shape == "alpaca":
        instruction = _text(record, "instruction", where)
        extra = _text(record, "input", where, required=False)
        text = f"{instruction}\n\n{extra}" if extra else instruction
        output = _text(record, "output", where, required=False)
        replies = [ReplyRecord(output, model="human", checkpoint=source)] if output else []
        return shape, ImportItem(PromptRecord(text, None, source, category, {"instruction": instruction, "input": extra}), replies)
    if shape == "preference":
        raw_prompt, chosen, rejected = record.get("prompt"), record.get("chosen"), record.get("rejected")
        if isinstance(raw_prompt, list) or isinstance(chosen, list):
            msgs = _messages(raw_prompt, where, "prompt")
            ch = _messages(chosen, where, "chosen")
            rj = _messages(rejected, where, "rejected")
            for key, reply in (("chosen", ch), ("rejected", rj)):
                if reply[-1]["role"] != "assistant":
                    raise ImportFailed(f"{where}: field '{key}' must end with an assistant message")
            prompt = prompt_from_messages(msgs, source, category)
            texts = (ch[-1]["content"].strip(), rj[-1]["content"].strip())
        else:
            prompt = PromptRecord(_text(record, "prompt", where), None, source, category)
            texts = (_text(record, "chosen", where), _text(record, "rejected", where))
        return shape, _preference(prompt, texts, where, source)
    if shape == "hh-rlhf":
        # _text strips the transcript's leading "\n\n"; put it back so every turn splits alike.
        prefix, best = split_hh("\n\n" + _text(record, "chosen", where), where, "chosen")
        prefix_r, worst = split_hh("\n\n" + _text(record, "rejected", where), where, "rejected")
        if prefix != prefix_r:
            raise ImportFailed(f"{where}: 'chosen' and 'rejected' differ before their last reply; they must share the conversation")
        if not prefix or prefix[-1]["role"] != "user":
            raise ImportFailed(f"{where}: the conversation must end with a Human turn before the replies")
        return shape, _preference(prompt_from_messages(prefix, source, category), (best, worst), where, source)
    raise ImportFailed(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def _preference(prompt: PromptRecord, texts: tuple[str, str], where: str, source: str) -> ImportItem:
    if not texts[0] or not texts[1]:
        raise ImportFailed(f"{where}: 'chosen' and 'rejected' replies must not be empty")
    replies = [ReplyRecord(texts[0], model="import", checkpoint=source), ReplyRecord(texts[1], model="import", checkpoint=source)]
    return ImportItem(prompt, replies, preferred=True)


def parse_file(path: Path, shape: str = "auto", skip_invalid: bool = False) -> tuple[list[ImportItem], dict[str, int], list[str]]:
    """Every record of ``path`` parsed and checked; nothing is written.

    With ``skip_invalid`` a bad record is left out and its error kept in the third value;
    without it the first bad record stops the import.
    """
    if shape not in SHAPES:
        raise ImportFailed(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    path = Path(path)
    records = read_records(path)
    if not records:
        raise ImportFailed(f"{path.name} holds no records")
    if shape == "auto":
        # One shape per file, read off the first record: a preference file whose line 51
        # lacks 'rejected' is an error there, not a plain prompt.
        first = records[0][1]
        if not isinstance(first, dict):
            raise ImportFailed(f"{records[0][0]}: expected an object with named fields")
        shape = detect_shape(first)
    items, shapes, skipped = [], {}, []
    for where, record in records:
        try:
            kind, item = parse_record(record, where, path.name, shape)
        except ImportFailed as exc:
            if not skip_invalid:
                raise ImportFailed(f"{exc} (nothing was imported; fix the record, or leave bad records out with --skip-invalid)") from exc
            skipped.append(str(exc))
            continue
        shapes[kind] = shapes.get(kind, 0) + 1
        items.append(item)
    if not items:
        raise ImportFailed(f"{path.name}: no valid records" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return items, shapes, skipped


def import_file(
    store: Store, project_id: int, path: Path, shape: str = "auto", import_as: str = "import", skip_invalid: bool = False
) -> ImportReport:
    """Import a file into a project in one transaction; a bad record means nothing is written."""
    items, shapes, skipped = parse_file(path, shape, skip_invalid)
    store.project(project_id)  # a clear error for an unknown project before anything else
    annotator = import_annotator(store, import_as) if any(i.preferred for i in items) else None
    n_replies = n_rankings = 0
    with store.transaction() as cur:
        for item in items:
            prompt_id = insert_prompt(cur, project_id, item.prompt)
            reply_ids = [insert_reply(cur, prompt_id, r) for r in item.replies]
            n_replies += len(reply_ids)
            if item.preferred:
                ranks = json.dumps({str(reply_ids[0]): 1, str(reply_ids[1]): 2})
                cur.execute(
                    "INSERT INTO rankings (prompt_id, annotator_id, status, ranks, submitted) "
                    "VALUES (?, ?, 'submitted', ?, current_timestamp)",
                    [prompt_id, annotator, ranks],
                )
                n_rankings += 1
    return ImportReport(len(items), n_replies, n_rankings, shapes, skipped)
