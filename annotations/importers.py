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

Every record is read and checked before the store is touched, outside its write lock. Text
files must be UTF-8 (a byte-order mark is fine); other bytes are named by offset and line.
A bad record is one that is not valid JSON, is nested deeper than ``Limits.json_depth``, holds
a lone surrogate (``"\\ud800"``), misses a field, has a prompt or reply over the size limits
(:mod:`annotations.limits`), or is a preference whose chosen and rejected replies are the same.
Without ``skip_invalid`` any bad record stops the import: :class:`ImportFailed` lists them all
with their line and reason, and nothing is written. With it, bad records (broken JSON lines
included) are left out and listed in the report.

Exact duplicates are skipped, not imported twice: a record with the same prompt and replies as
an earlier record of the file, or as a prompt already in the project (a record without replies:
the same prompt). The report counts them and names their lines.

The records that remain go in as one transaction of a few bulk statements (ids taken from the
sequences, rows inserted as Arrow tables), so a 50,000-line file holds the store's write lock
for a fraction of a second and annotators submitting meanwhile are not held up.

    report = import_file(store, project_id, Path("dolly.jsonl"))
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from annotations.accounts import import_annotator_in
from annotations.limits import Limits
from annotations.store import PromptRecord, ReplyRecord, Store, StoreError, bulk_insert, check_prompt, check_text

SHAPES = ("auto", "prompt", "dolly", "alpaca", "preference", "hh-rlhf")
HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")
LISTED = 20  # bad records a failure message names (the exception carries all of them)
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
UTF8_BOM = b"\xef\xbb\xbf"
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_IN_PROJECT = ""  # "where first seen" of a prompt that is already in the project
SAVE_AS_UTF8 = "save the file as UTF-8 (in Excel: 'CSV UTF-8'; in an editor: save with the encoding UTF-8) and import it again"


@dataclass(frozen=True)
class Problem:
    """A record that was refused or left out: its file, its place ("line 7", "row 3") and why."""

    file: str
    place: str
    reason: str
    line: int | None = None

    @property
    def where(self) -> str:
        return f"{self.file} {self.place}" if self.place else self.file

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class ImportFailed(StoreError):
    """A file cannot be imported; the message says where and why. Nothing was written.

    ``problems`` holds every bad record, ``skippable`` whether leaving them out would let the
    other records import. The message itself names no front end's controls: :meth:`hint` says
    how to go on in the caller's words (``rerun with --skip-invalid``, ``tick 'Leave bad records out'``).
    """

    def __init__(self, message: str, problems: Sequence[Problem] = (), skippable: bool = False) -> None:
        super().__init__(message)
        self.problems = list(problems)
        self.skippable = skippable

    def hint(self, leave_out: str) -> str:
        """What to do next, with ``leave_out`` naming the front end's way to leave bad records out."""
        if not self.skippable:
            return ""
        return f"Fix the file, or {leave_out} to import the other records (each one left out is listed)."


@dataclass
class ImportItem:
    prompt: PromptRecord
    replies: list[ReplyRecord] = field(default_factory=list)
    preferred: bool = False  # replies[0] is chosen over replies[1]
    shape: str = ""
    place: str = ""
    line: int | None = None


@dataclass(frozen=True)
class ImportReport:
    prompts: int
    replies: int
    rankings: int
    shapes: dict[str, int]
    left_out: list[Problem] = field(default_factory=list)  # bad records left out (skip_invalid)
    duplicates: list[Problem] = field(default_factory=list)  # records not imported because they are already there

    @property
    def skipped(self) -> list[str]:
        """Why each left-out record was left out, as text ("data.jsonl line 7: not valid JSON (...)")."""
        return [str(p) for p in self.left_out]

    def duplicates_note(self, first: int = 5) -> str:
        """One sentence on the duplicates skipped: how many, and the places of the first few."""
        n = len(self.duplicates)
        if not n:
            return ""
        places = ", ".join(p.place for p in self.duplicates[:first]) + (", ..." if n > first else "")
        return (
            f"Skipped {n:,} duplicate record{'s' if n != 1 else ''} (the same prompt and replies as an earlier record "
            f"or as a prompt already in the project): {self.duplicates[0].file} {places}."
        )


@dataclass(frozen=True)
class ParsedFile:
    file: str  # the file's name as shown in messages
    items: list[ImportItem]
    problems: list[Problem]  # bad records (left out: parse_file raises unless skip_invalid)


@dataclass(frozen=True)
class RawRecord:
    """A record as read from the file, or why it could not be read (``problem``)."""

    place: str
    line: int | None
    value: object = None
    problem: str | None = None


class _Bad(Exception):
    """A record is bad; the message is the reason, without the place."""


def show(text: str) -> str:
    """Text safe to print and to send to a browser: undecodable names and lone surrogates as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# -- reading files ---------------------------------------------------------------------------
def read_records(path: Path, limits: Limits | None = None) -> list[RawRecord]:
    """Every record of a file or saved ``datasets`` folder, in file order.

    A record that cannot be read (a broken JSON line, a line that is not UTF-8, nesting deeper
    than the limit, a lone surrogate) comes back with its ``problem``. A file that cannot be read at all (not
    found, not UTF-8 outside JSONL, damaged JSON structure or parquet) raises ImportFailed.
    """
    limits = limits or Limits.from_env()
    path = Path(path)
    name = show(path.name)
    if path.is_dir():
        return _read_datasets_folder(path, limits)
    if not path.is_file():
        raise ImportFailed(f"{show(str(path))} not found")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ImportFailed(f"{name}: unsupported file type {show(suffix)!r}; use .jsonl, .json, .csv, .parquet or a saved datasets folder")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ImportFailed(f"{name}: not a readable parquet file ({show(str(exc))})") from exc
        return _checked_rows(rows, 0, limits)
    data = path.read_bytes()
    _check_text_file(data, name)
    bom = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    if suffix == ".jsonl":
        return _read_jsonl(data[bom:], name, bom, limits)
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, bom + exc.start) + 1
        raise ImportFailed(f"{name} line {line}: {_not_utf8(data[bom + exc.start], bom + exc.start)}; {SAVE_AS_UTF8}") from None
    return _read_json(text, name, limits) if suffix == ".json" else _read_csv(text, name)


def _check_text_file(data: bytes, name: str) -> None:
    """Refuse UTF-16/32 files (a BOM, or NUL bytes early on) with what to do, before anything reads them as UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        raise ImportFailed(f"{name} is UTF-16 or UTF-32 (it starts with that byte-order mark); {SAVE_AS_UTF8}")
    nul = data.find(b"\x00", 0, 4096)
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ImportFailed(f"{name} line {line}: NUL bytes (offset {nul:,}): the file is UTF-16 or not text; {SAVE_AS_UTF8}")


def _not_utf8(byte: int, offset: int) -> str:
    return f"the byte at offset {offset:,} of the file (0x{byte:02X}) is not UTF-8"


def _read_jsonl(data: bytes, name: str, base: int, limits: Limits) -> list[RawRecord]:
    records: list[RawRecord] = []
    try:
        lines: list[str] | list[bytes] = data.decode("utf-8").split("\n")  # not splitlines(): U+2028 is valid inside JSON
    except UnicodeDecodeError:
        lines = data.split(b"\n")  # decode line by line, so the other lines can still be read
    offset = base
    for n, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            start, offset = offset, offset + len(line) + 1
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                records.append(RawRecord(f"line {n}", n, problem=f"{_not_utf8(line[exc.start], start + exc.start)}; {SAVE_AS_UTF8}"))
                continue
        if not line.strip():
            continue
        value, reason = _load_json(line, limits)
        records.append(RawRecord(f"line {n}", n, value, reason))
    return records


def _load_json(raw: str, limits: Limits) -> tuple[object, str | None]:
    """(value, None) for a valid record, (None, why) for a broken one; never RecursionError."""
    try:
        value = json.loads(raw)
    except RecursionError:
        return None, _too_deep(limits)
    except ValueError as exc:
        return None, f"not valid JSON ({exc.args[0]})"
    return value, _tree_problem(value, raw, limits)


def _too_deep(limits: Limits, at: str = "") -> str:
    where = f" (at field '{at}')" if at else ""
    return (
        f"nested more than {limits.json_depth} levels deep{where}; records are objects of text fields and messages: "
        "flatten it, or raise STUDIO_MAX_JSON_DEPTH"
    )


def _tree_problem(value: object, raw: str | None, limits: Limits) -> str | None:
    """Why a parsed record cannot be stored (too deep, a lone surrogate), or None.

    ``raw`` is the record's JSON text, if it came from JSON: then only records that could be too
    deep (more brackets than the limit) or hold a surrogate escape are walked.
    """
    if raw is not None:
        may_be_deep = raw.count("{") + raw.count("[") > limits.json_depth
        if not may_be_deep and not ("\\u" in raw and _ESCAPED_SURROGATE.search(raw)):
            return None
    # Iterative, so no depth of nesting can exhaust Python's stack.
    stack: list[tuple[object, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            bad = _SURROGATE.search(node)
            if bad:
                return (
                    f"field '{show(path) or '(the record)'}' holds a lone surrogate (\\u{ord(bad.group()):04x}), which is not text; "
                    f"remove it, or {SAVE_AS_UTF8}"
                )
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > limits.json_depth:
            return _too_deep(limits, show(path)[:80])
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in pairs:
            if isinstance(key, str) and _SURROGATE.search(key):
                return f"a field name holds a lone surrogate ({show(key)!r}), which is not text; remove it, or {SAVE_AS_UTF8}"
            sub = f"{path}[{key}]" if isinstance(node, list) else (f"{path}.{key}" if path else str(key))
            stack.append((child, depth + 1, sub if len(sub) <= 200 else path))
    return None


def _read_json(text: str, name: str, limits: Limits) -> list[RawRecord]:
    """A JSON list read one record at a time, so each record gets its number and line."""
    i = _JSON_SPACE.match(text).end()
    if text[i : i + 1] != "[":
        try:
            json.loads(text)
        except RecursionError:
            raise ImportFailed(f"{name}: {_too_deep(limits)}") from None
        except ValueError as exc:
            raise ImportFailed(f"{name}: not valid JSON ({exc.args[0]})") from None
        raise ImportFailed(f"{name}: expected a JSON list of records, [{{...}}, {{...}}]")
    decoder = json.JSONDecoder()
    records: list[RawRecord] = []
    line, counted = 1, 0
    i = _JSON_SPACE.match(text, i + 1).end()
    n = 0
    closed = text[i : i + 1] == "]"
    i += closed
    while not closed:
        n += 1
        line += text.count("\n", counted, i)
        counted = i
        place = f"record {n} (line {line})"
        try:
            value, end = decoder.raw_decode(text, i)
        except RecursionError:
            raise ImportFailed(f"{name} {place}: {_too_deep(limits)}; the rest of the file cannot be read past it") from None
        except json.JSONDecodeError as exc:
            raise ImportFailed(
                f"{name} line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno}); a JSON list cannot be read past it, "
                "so no record was imported. Fix it, or save the records as JSONL (one per line)"
            ) from None
        records.append(RawRecord(place, line, value, _tree_problem(value, text[i:end], limits)))
        i = _JSON_SPACE.match(text, end).end()
        sep = text[i : i + 1]
        if sep == "]":
            closed = True
            i += 1
        elif sep == ",":
            i = _JSON_SPACE.match(text, i + 1).end()
        else:
            at = text.count("\n", 0, i) + 1
            raise ImportFailed(f"{name} line {at}: not valid JSON (expected ',' or ']' after record {n})")
    if _JSON_SPACE.match(text, i).end() != len(text):
        raise ImportFailed(f"{name} line {text.count(chr(10), 0, i) + 1}: not valid JSON (more text after the list ends)")
    return records


def _read_csv(text: str, name: str) -> list[RawRecord]:
    # csv refuses fields over 131,072 characters with an error that stops the reader; let every
    # field through (raising the module's limit, never lowering it) so that an oversize prompt
    # is a bad record with its line, like in any other format.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records: list[RawRecord] = []
    try:
        columns = reader.fieldnames or []
        start = reader.line_num + 1  # the line a record starts on (a quoted field may span lines)
        for row in reader:
            extra = f"has more fields than the header's {len(columns)} columns" if None in row else None
            records.append(RawRecord(f"line {start}", start, row, extra))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ImportFailed(f"{name} line {reader.line_num}: not valid CSV ({exc})") from None
    return records


def _checked_rows(rows: list, first: int, limits: Limits) -> list[RawRecord]:
    return [RawRecord(f"row {n}", None, row, _tree_problem(row, None, limits)) for n, row in enumerate(rows, first + 1)]


def _read_datasets_folder(folder: Path, limits: Limits) -> list[RawRecord]:
    """Rows of a ``save_to_disk`` folder, read as Arrow streams (no ``datasets`` import needed)."""
    import pyarrow as pa

    files = sorted(folder.glob("data-*.arrow")) or sorted(folder.glob("*.arrow"))
    if not files:
        raise ImportFailed(f"{show(str(folder))} is not a saved datasets folder (no .arrow files); save it with Dataset.save_to_disk")
    records: list[RawRecord] = []
    for f in files:
        try:
            with pa.memory_map(str(f)) as source:
                rows = pa.ipc.open_stream(source).read_all().to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ImportFailed(f"{show(f.name)}: not a readable Arrow file ({show(str(exc))})") from exc
        records += _checked_rows(rows, len(records), limits)
    return records


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


def _text(record: dict, key: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, float) and value != value):  # None or NaN from CSV/parquet
        value = ""
    if not isinstance(value, str):
        raise _Bad(f"field '{key}' must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise _Bad(f"field '{key}' is missing or empty")
    return value.strip()


def _messages(value: object, key: str, limits: Limits) -> list[dict]:
    if isinstance(value, str):  # a conversation stored as JSON text (CSV, parquet)
        parsed, reason = _load_json(value, limits)
        if reason:
            raise _Bad(f"field '{key}' must be a list of messages: {reason}")
        value = parsed
    if not isinstance(value, list) or not value:
        raise _Bad(f"field '{key}' must be a non-empty list of messages")
    out = []
    for n, m in enumerate(value, 1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise _Bad(f"field '{key}' message {n} needs a 'role' and a text 'content'")
        if m["role"] not in ("system", "user", "assistant"):
            raise _Bad(f"field '{key}' message {n} has role {show(m['role'])!r}; use system, user or assistant")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def prompt_from_messages(messages: list[dict], source: str, category: str = "", metadata: dict | None = None) -> PromptRecord:
    """A prompt record for a conversation: text is the single user turn, or the transcript."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return PromptRecord(messages[0]["content"], None, source, category, metadata)
    text = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    return PromptRecord(text, messages, source, category, metadata)


def split_hh(transcript: str, key: str) -> tuple[list[dict], str]:
    """An HH-RLHF transcript as (messages before the last reply, the last assistant reply)."""
    parts = HH_TURN.split(transcript)
    if len(parts) < 5 or parts[0].strip():
        raise _Bad(f"field '{key}' is not an HH-RLHF transcript of '\\n\\nHuman:' / '\\n\\nAssistant:' turns")
    turns = [{"role": "user" if parts[i] == "Human" else "assistant", "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]
    if turns[-1]["role"] != "assistant":
        raise _Bad(f"field '{key}' does not end with an Assistant reply")
    return turns[:-1], turns[-1]["content"]


def parse_record(record: dict, where: str, source: str, shape: str = "auto", limits: Limits | None = None) -> tuple[str, ImportItem]:
    """(shape, item) for one record; ImportFailed naming ``where`` and the field if it is bad."""
    try:
        return _parse(record, source, shape, limits or Limits.from_env())
    except _Bad as bad:
        raise ImportFailed(f"{where}: {bad}") from None


def _parse(record: object, source: str, shape: str, limits: Limits) -> tuple[str, ImportItem]:
    if not isinstance(record, dict):
        raise _Bad("expected an object with named fields")
    shape = detect_shape(record) if shape == "auto" else shape
    category = _text(record, "category", required=False) if "category" in record else ""
    if shape == "prompt":
        if record.get("messages") not in (None, ""):
            msgs = _messages(record["messages"], "messages", limits)
            return shape, _item(limits, prompt_from_messages(msgs, source, category))
        key = "prompt" if "prompt" in record else "text" if "text" in record else None
        if key is None:
            found = ", ".join(show(str(k)) for k in record) or "nothing"
            raise _Bad(f"no 'prompt', 'text' or 'messages' field (found: {found})")
        return shape, _item(limits, PromptRecord(_text(record, key), None, source, category))
    if shape == "dolly":
        instruction = _text(record, "instruction")
        context = _text(record, "context", required=False)
        text = f"{instruction}\n\n{context}" if context else instruction
        response = _text(record, "response", required=False)
        replies = [("response", ReplyRecord(response, model="human", checkpoint=source))] if response else []
        return shape, _item(limits, PromptRecord(text, None, source, category, {"instruction": instruction, "context": context}), replies)
    if shape == "alpaca":
        instruction = _text(record, "instruction")
        extra = _text(record, "input", required=False)
        text = f"{instruction}\n\n{extra}" if extra else instruction
        output = _text(record, "output", required=False)
        replies = [("output", ReplyRecord(output, model="human", checkpoint=source))] if output else []
        return shape, _item(limits, PromptRecord(text, None, source, category, {"instruction": instruction, "input": extra}), replies)
    if shape == "preference":
        raw_prompt, chosen, rejected = record.get("prompt"), record.get("chosen"), record.get("rejected")
        if isinstance(raw_prompt, list) or isinstance(chosen, list):
            msgs = _messages(raw_prompt, "prompt", limits)
            ch = _messages(chosen, "chosen", limits)
            rj = _messages(rejected, "rejected", limits)
            for key, reply in (("chosen", ch), ("rejected", rj)):
                if reply[-1]["role"] != "assistant":
                    raise _Bad(f"field '{key}' must end with an assistant message")
            prompt = prompt_from_messages(msgs, source, category)
            texts = (ch[-1]["content"].strip(), rj[-1]["content"].strip())
        else:
            prompt = PromptRecord(_text(record, "prompt"), None, source, category)
            texts = (_text(record, "chosen"), _text(record, "rejected"))
        return shape, _preference(limits, prompt, texts, source)
    if shape == "hh-rlhf":
        # _text strips the transcript's leading "\n\n"; put it back so every turn splits alike.
        prefix, best = split_hh("\n\n" + _text(record, "chosen"), "chosen")
        prefix_r, worst = split_hh("\n\n" + _text(record, "rejected"), "rejected")
        if prefix != prefix_r:
            raise _Bad("'chosen' and 'rejected' differ before their last reply; they must share the conversation")
        if not prefix or prefix[-1]["role"] != "user":
            raise _Bad("the conversation must end with a Human turn before the replies")
        return shape, _preference(limits, prompt_from_messages(prefix, source, category), (best, worst), source)
    raise ImportFailed(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def _preference(limits: Limits, prompt: PromptRecord, texts: tuple[str, str], source: str) -> ImportItem:
    if not texts[0] or not texts[1]:
        raise _Bad("'chosen' and 'rejected' replies must not be empty")
    if texts[0] == texts[1]:
        raise _Bad("'chosen' and 'rejected' are the same reply; a preference needs two different replies")
    replies = [(key, ReplyRecord(text, model="import", checkpoint=source)) for key, text in zip(("chosen", "rejected"), texts, strict=True)]
    return _item(limits, prompt, replies, preferred=True)


def _item(limits: Limits, prompt: PromptRecord, replies: Sequence[tuple[str, ReplyRecord]] = (), preferred: bool = False) -> ImportItem:
    """An item whose prompt and replies the store will accept (size limits, valid text)."""
    try:
        check_prompt(limits, prompt)
    except StoreError as exc:
        raise _Bad(str(exc)) from None
    for key, reply in replies:
        try:
            check_text(limits, "reply", reply.text)
        except StoreError as exc:
            raise _Bad(f"field '{key}': {exc}") from None
    return ImportItem(prompt, [r for _, r in replies], preferred)


def parse_file(path: Path, shape: str = "auto", skip_invalid: bool = False, limits: Limits | None = None) -> ParsedFile:
    """Every record of ``path`` read, parsed and checked; nothing is written.

    Without ``skip_invalid`` any bad record raises ImportFailed listing all of them; with it the
    bad records are left out and come back in ``problems``.
    """
    if shape not in SHAPES:
        raise ImportFailed(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    limits = limits or Limits.from_env()
    path = Path(path)
    name = show(path.name)
    records = read_records(path, limits)
    if not records:
        raise ImportFailed(f"{name} holds no records")
    if shape == "auto":
        # One shape per file, read off the first readable record: a preference file whose
        # line 51 lacks 'rejected' is an error there, not a plain prompt.
        first = next((r.value for r in records if r.problem is None), None)
        shape = detect_shape(first) if isinstance(first, dict) else "prompt"
    items: list[ImportItem] = []
    problems: list[Problem] = []
    for raw in records:
        if raw.problem is not None:
            problems.append(Problem(name, raw.place, raw.problem, raw.line))
            continue
        try:
            kind, item = _parse(raw.value, name, shape, limits)
        except _Bad as exc:
            problems.append(Problem(name, raw.place, str(exc), raw.line))
            continue
        item.shape, item.place, item.line = kind, raw.place, raw.line
        items.append(item)
    if problems and (not skip_invalid or not items):
        head = f"{name}: no valid records" if not items else None
        raise ImportFailed(_problems_message(name, problems, head), problems, skippable=bool(items))
    return ParsedFile(name, items, problems)


def _problems_message(name: str, problems: list[Problem], head: str | None = None) -> str:
    if len(problems) == 1 and head is None:
        return str(problems[0])
    lines = [head or f"{name}: {len(problems):,} bad records", ""]
    lines += [f"- {p.place}: {p.reason}" for p in problems[:LISTED]]
    if len(problems) > LISTED:
        lines.append(f"- and {len(problems) - LISTED:,} more")
    return "\n".join(lines)


# -- duplicates -------------------------------------------------------------------------------
Existing = dict[str, list[tuple[str, ...]]]  # prompt text -> the replies (in id order) of each prompt with that text


def _existing(read: Callable[[str, list], list[tuple]], project_id: int, after: int = 0) -> tuple[Existing, int]:
    """The project's prompts (id > ``after``) with their replies, and the highest prompt id seen."""
    rows = read(
        "SELECT p.id, p.text, list(r.text ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL) "
        "FROM prompts p LEFT JOIN replies r ON r.prompt_id = p.id WHERE p.project_id = ? AND p.id > ? GROUP BY p.id, p.text",
        [project_id, after],
    )
    found: Existing = {}
    for _, text, replies in rows:
        found.setdefault(text, []).append(tuple(replies or ()))
    return found, max((r[0] for r in rows), default=after)


def _dedupe(items: list[ImportItem], existing: Existing, file: str) -> tuple[list[ImportItem], list[Problem]]:
    """The items that are neither in the project already nor repeats of an earlier item, and the rest as problems.

    An item without replies repeats a prompt the project or file already has; an item with
    replies repeats one with the same prompt and the same replies (a project prompt whose first
    replies are those: candidates generated later come after the imported ones).
    """
    prompts: dict[str, str] = {}
    with_replies: dict[tuple[str, tuple[str, ...]], str] = {}
    for text, reply_lists in existing.items():
        prompts[text] = _IN_PROJECT
        for replies in reply_lists:
            for n in range(1, len(replies) + 1):
                with_replies[(text, replies[:n])] = _IN_PROJECT
    keep: list[ImportItem] = []
    duplicates: list[Problem] = []
    for item in items:
        text = item.prompt.text
        replies = tuple(r.text for r in item.replies)
        first = with_replies.get((text, replies)) if replies else prompts.get(text)
        if first is not None:
            what = "prompt and replies" if replies else "prompt"
            reason = f"the same {what} as {first}" if first else f"the same {what} is already in the project"
            duplicates.append(Problem(file, item.place, reason, item.line))
            continue
        prompts.setdefault(text, item.place)
        if replies:
            with_replies.setdefault((text, replies), item.place)
        keep.append(item)
    return keep, duplicates


# -- writing ----------------------------------------------------------------------------------
class _Batch:
    """The rows of an import as Arrow columns, built before the write lock is taken."""

    def __init__(self, items: list[ImportItem], project_id: int) -> None:
        import pyarrow as pa

        def strings(values: list) -> pa.Array:
            return pa.array(values, pa.string())

        def as_json(value: object) -> str | None:
            return json.dumps(value) if value else None

        self.items = items
        self.prompts = {
            "project_id": pa.array([project_id] * len(items), pa.int64()),
            "text": strings([i.prompt.text for i in items]),
            "messages": strings([as_json(i.prompt.messages) for i in items]),
            "source": strings([i.prompt.source for i in items]),
            "category": strings([i.prompt.category for i in items]),
            "metadata": strings([as_json(i.prompt.metadata) for i in items]),
        }
        replies = [(n, r) for n, i in enumerate(items) for r in i.replies]
        self.reply_of = [n for n, _ in replies]  # the item each reply belongs to
        self.replies = {
            "text": strings([r.text for _, r in replies]),
            "model": strings([r.model for _, r in replies]),
            "checkpoint": strings([r.checkpoint for _, r in replies]),
            "sampling": strings([as_json(r.sampling) for _, r in replies]),
        }
        # Each preferred item's first reply (chosen) and second (rejected), as positions in the reply rows.
        first = {}
        for pos, n in enumerate(self.reply_of):
            first.setdefault(n, pos)
        self.pairs = [(n, first[n]) for n, i in enumerate(items) if i.preferred]

    def write(self, cur, import_as: str) -> tuple[int, int, int]:
        """Insert everything in the open transaction ``cur``: (prompts, replies, rankings)."""
        import pyarrow as pa

        if not self.items:
            return 0, 0, 0
        annotator = import_annotator_in(cur, import_as) if self.pairs else None
        prompt_ids = bulk_insert(cur, "prompts", "prompt_id_seq", self.prompts)
        reply_ids = bulk_insert(
            cur, "replies", "reply_id_seq", {"prompt_id": pa.array([prompt_ids[n] for n in self.reply_of], pa.int64()), **self.replies}
        )
        if self.pairs:
            ranks = [f'{{"{reply_ids[pos]}": 1, "{reply_ids[pos + 1]}": 2}}' for _, pos in self.pairs]
            bulk_insert(
                cur,
                "rankings",
                "ranking_id_seq",
                {
                    "prompt_id": pa.array([prompt_ids[n] for n, _ in self.pairs], pa.int64()),
                    "annotator_id": pa.array([annotator] * len(self.pairs), pa.int64()),
                    "status": pa.array(["submitted"] * len(self.pairs), pa.string()),
                    "ranks": pa.array(ranks, pa.string()),
                },
                constants={"submitted": "current_timestamp"},
            )
        return len(prompt_ids), len(reply_ids), len(self.pairs)


def import_file(
    store: Store, project_id: int, path: Path, shape: str = "auto", import_as: str = "import", skip_invalid: bool = False
) -> ImportReport:
    """Import a file into a project in one transaction; a bad record means nothing is written.

    Reading, checking, looking for duplicates and building the rows happen before the store's
    write lock is taken; the lock is held only for the bulk inserts.
    """
    parsed = parse_file(path, shape, skip_invalid, store.limits)
    store.project(project_id)  # a clear error for an unknown project before anything else
    existing, seen = _existing(store.read, project_id)  # committed state, without waiting for the write lock
    items, duplicates = _dedupe(parsed.items, existing, parsed.file)
    batch = _Batch(items, project_id)
    with store.transaction() as cur:
        # Prompts that landed in the project since the duplicate check (another import) count too.
        fresh, _ = _existing(lambda sql, params: cur.execute(sql, params).fetchall(), project_id, seen)
        if fresh:
            for text, lists in fresh.items():
                existing.setdefault(text, []).extend(lists)
            items, duplicates = _dedupe(parsed.items, existing, parsed.file)
            batch = _Batch(items, project_id)
        prompts, replies, rankings = batch.write(cur, import_as)
    shapes: dict[str, int] = {}
    for item in items:
        shapes[item.shape] = shapes.get(item.shape, 0) + 1
    return ImportReport(prompts, replies, rankings, shapes, parsed.problems, duplicates)
