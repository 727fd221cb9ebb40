"""Preference pairs for reward training, read from files (the contract with the annotation store).

Sources: a snapshot folder (its ``preference.parquet``), or a file of TRL preference records
(``prompt`` / ``chosen`` / ``rejected``, plain text or chat messages) or HH-RLHF transcripts
(``chosen`` / ``rejected`` only): .jsonl, .json, .parquet, optionally gzipped (.jsonl.gz).

    pairs = read_pairs(Path("snapshots/snap-..."))    # list[Pair]
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")


class PairFileError(ValueError):
    """The pairs cannot be read; the message names the record and the field."""


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    margin: float | None = None
    agreement: float | None = None  # share of annotators who agreed, when a snapshot says


TRANSCRIPT_TURN = re.compile(r"(?:^|\n\n)(User|Assistant|System): ")


def transcript_messages(prompt: str) -> list[dict]:
    """A ``User: ... / Assistant: ...`` transcript (as pairs files give prompts) as chat messages.

    Text that is not a transcript is the user's one message.
    """
    if not prompt.startswith(("User: ", "System: ")):
        return [{"role": "user", "content": prompt}]
    parts = TRANSCRIPT_TURN.split(prompt)
    return [{"role": parts[i].lower(), "content": parts[i + 1].strip()} for i in range(1, len(parts) - 1, 2)]


def _render(messages: list[dict]) -> str:
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def conversation_tokens(tokenizer, messages: list[dict]) -> int:
    """Tokens of a conversation as a causal LM sees it (chat template with the reply's opening)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        return len(ids)
    return len(tokenizer(_render(messages), add_special_tokens=True)["input_ids"])


def last_turns(messages: list[dict], tokenizer, budget: int) -> list[dict]:
    """The end of a conversation that fits in ``budget`` tokens: the last turns first.

    Earlier turns are dropped whole (with the system message), so what is kept starts with a
    user turn; if the last user turn alone is too long, the start of its text is cut. What the
    reply answers is at the end of a conversation, so that is what survives.
    """
    if budget <= 0 or not messages or conversation_tokens(tokenizer, messages) <= budget:
        return list(messages)
    kept = [m for m in messages if m["role"] != "system"]
    while len(kept) > 1 and conversation_tokens(tokenizer, kept) > budget:
        kept = kept[1:]
        while len(kept) > 1 and kept[0]["role"] != "user":
            kept = kept[1:]
    for _ in range(4):  # a cut can re-tokenise a little differently at its edge
        over = conversation_tokens(tokenizer, kept) - budget
        if over <= 0:
            break
        ids = tokenizer(kept[0]["content"], add_special_tokens=False)["input_ids"]
        keep = max(1, len(ids) - over)
        kept = [{**kept[0], "content": tokenizer.decode(ids[-keep:]).lstrip()}, *kept[1:]]
    return kept


def _split_hh(text: str, where: str, key: str) -> tuple[str, str]:
    parts = HH_TURN.split("\n\n" + text.lstrip("\n"))
    if len(parts) < 5:
        raise PairFileError(f"{where}: field '{key}' is not an HH-RLHF transcript")
    turns = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts), 2)]
    if turns[-1][0] != "Assistant":
        raise PairFileError(f"{where}: field '{key}' does not end with an Assistant reply")
    prompt = "\n\n".join(f"{'User' if r == 'Human' else 'Assistant'}: {t}" for r, t in turns[:-1])
    return prompt, turns[-1][1]


def _text(value, where: str, key: str) -> str:
    if isinstance(value, list):
        if not value or not all(isinstance(m, dict) and "content" in m for m in value):
            raise PairFileError(f"{where}: field '{key}' must be text or a list of messages")
        return value[-1]["content"] if key != "prompt" else _render(value)
    if not isinstance(value, str):
        raise PairFileError(f"{where}: field '{key}' must be text, got {type(value).__name__}")
    return value


def pair_from_record(record: dict, where: str) -> Pair:
    if not isinstance(record, dict) or "chosen" not in record or "rejected" not in record:
        raise PairFileError(f"{where}: needs 'chosen' and 'rejected' (and 'prompt', unless HH-RLHF transcripts)")
    margin = record.get("margin")
    agreement = record.get("agreement")
    if record.get("prompt") is not None:
        return Pair(
            _text(record["prompt"], where, "prompt"),
            _text(record["chosen"], where, "chosen"),
            _text(record["rejected"], where, "rejected"),
            float(margin) if margin is not None else None,
            float(agreement) if agreement is not None else None,
        )
    prompt, chosen = _split_hh(_text(record["chosen"], where, "chosen"), where, "chosen")
    prompt_r, rejected = _split_hh(_text(record["rejected"], where, "rejected"), where, "rejected")
    if prompt != prompt_r:
        raise PairFileError(f"{where}: 'chosen' and 'rejected' differ before their last reply")
    return Pair(prompt, chosen, rejected)


def _parquet_rows(source: Path, limit: int | None) -> list[dict]:
    import pyarrow.parquet as pq

    if limit is None:
        return pq.read_table(source).to_pylist()
    first = next(pq.ParquetFile(source).iter_batches(batch_size=limit), None)
    return first.to_pylist() if first is not None else []


def _rows(source: Path, limit: int | None, skip_invalid: bool = False, report: PairReport | None = None) -> list[tuple[str, dict]]:
    """(where, record) of a pairs file, or of its first ``limit`` records."""
    name = source.name.lower()
    if name.endswith(".parquet"):
        return [(f"{source.name} row {n}", r) for n, r in enumerate(_parquet_rows(source, limit), 1)]
    opener = gzip.open if name.endswith(".gz") else open
    with opener(source, "rt", encoding="utf-8") as handle:
        if name.endswith((".json", ".json.gz")):
            try:
                data = json.loads(handle.read())
            except ValueError as exc:
                raise PairFileError(f"{source.name}: not valid JSON ({exc})") from exc
            if not isinstance(data, list):
                raise PairFileError(f"{source.name}: expected a JSON list of records")
            return [(f"{source.name} record {n}", r) for n, r in enumerate(data[:limit], 1)]
        rows = []
        for n, line in enumerate(handle, 1):
            if limit is not None and len(rows) >= limit:
                break
            if line.strip():
                try:
                    rows.append((f"{source.name} line {n}", json.loads(line)))
                except ValueError as exc:
                    if not skip_invalid or report is None:
                        raise PairFileError(f"{source.name} line {n}: not valid JSON ({exc})") from exc
                    # kept in file order; read_pairs lists it where it stands
                    rows.append((f"{source.name} line {n}", PairFileError(f"{source.name} line {n}: not valid JSON ({exc})")))
        return rows


@dataclass
class PairReport:
    """What reading a pairs file kept, left out (``skip_invalid``) and found suspicious."""

    kept: int = 0
    left_out: list[str] = field(default_factory=list)  # "pairs.jsonl line 48: 'chosen' and 'rejected' differ ..."
    warnings: list[str] = field(default_factory=list)  # kept, but worth a look (an empty reply)

    def summary(self, source: str | Path) -> str:
        """One line for the log: kept / left out / warnings, then what was left out and why."""
        name = Path(source).name
        line = f"{name}: {self.kept} pairs kept, {len(self.left_out)} left out"
        if self.warnings:
            line += f", {len(self.warnings)} with an empty reply (kept)"
        details = [f"  left out: {x}" for x in self.left_out[:20]] + [f"  warning: {x}" for x in self.warnings[:20]]
        more = len(self.left_out) + len(self.warnings) - len(details)
        return "\n".join([line, *details] + ([f"  ... and {more} more"] if more > 0 else []))


def read_pairs(source: Path, limit: int | None = None, skip_invalid: bool = False, report: PairReport | None = None) -> list[Pair]:
    """Every pair of a snapshot folder or a preference file, in order (or the first ``limit``).

    With a ``limit`` only the start of the file is read: a cheap check that it exists, can be
    read and parses, before a run folder is made for it. With ``skip_invalid`` a record that
    cannot be a pair (a missing field, transcripts that differ before their last reply, a line
    that is not JSON) is left out and named in ``report`` instead of refusing the whole file;
    a pair with an empty reply is kept and named in ``report.warnings``.
    """
    report = report if report is not None else PairReport()
    source = Path(source)
    if source.is_dir():
        if not (source / "preference.parquet").is_file():
            raise PairFileError(f"{source} is not a snapshot folder (no preference.parquet)")
        source = source / "preference.parquet"
    if not source.is_file():
        raise PairFileError(f"{source} not found")
    try:
        rows = _rows(source, limit, skip_invalid, report)
    except PairFileError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise PairFileError(f"{source} cannot be read: {exc}") from exc
    except Exception as exc:  # pyarrow's errors for a file that is not parquet
        raise PairFileError(f"{source.name}: not a readable {source.suffix or 'pairs'} file ({exc})") from exc
    pairs = []
    for where, record in rows:
        try:
            if isinstance(record, PairFileError):
                raise record
            pair = pair_from_record(record, where)
        except PairFileError as exc:
            if not skip_invalid:
                raise
            report.left_out.append(str(exc))
            continue
        if not pair.chosen.strip() or not pair.rejected.strip():
            side = "chosen" if not pair.chosen.strip() else "rejected"
            report.warnings.append(f"{where}: the {side} reply is empty")
        pairs.append(pair)
    report.kept = len(pairs)
    if not pairs:
        left = f"; all {len(report.left_out)} records were left out, e.g. {report.left_out[0]}" if report.left_out else ""
        raise PairFileError(f"{source} holds no pairs{left}")
    return pairs


def split_pairs(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, held out): a seeded shuffle, the first ``fraction`` held out."""
    import random

    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = int(round(len(pairs) * fraction))
    return [pairs[i] for i in order[n_eval:]], [pairs[i] for i in order[:n_eval]]


def read_split(data: str, eval_data: str | None, fraction: float, seed: int, skip_invalid: bool = False) -> tuple[list[Pair], list[Pair]]:
    """The training and held-out pairs of a run config (a separate held-out file, or a split).

    Prints what was kept and left out of each file (the run's log shows it).
    """
    if not data:
        raise ValueError("the config needs 'data': a snapshot folder or a preference file")
    report = PairReport()
    pairs = read_pairs(Path(data), skip_invalid=skip_invalid, report=report)
    print(report.summary(data), flush=True)
    if eval_data:
        held = PairReport()
        held_out = read_pairs(Path(eval_data), skip_invalid=skip_invalid, report=held)
        print(held.summary(eval_data), flush=True)
        return pairs, held_out
    return split_pairs(pairs, fraction, seed)
