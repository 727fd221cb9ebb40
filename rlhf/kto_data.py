"""Replies marked desirable or undesirable (KTO's unpaired preference data), read from files.

Sources:

- a snapshot folder made with the KTO option (its ``kto.parquet``: ``prompt``, ``completion``,
  ``label`` (True = desirable), ``source`` = ``thumbs`` or ``ranking``, plus store ids);
- a file in TRL's unpaired preference format: ``prompt`` / ``completion`` / ``label`` (a bool
  or 0/1), plain text or TRL's conversational message lists; .jsonl, .json, .parquet, .gz;
- a TRL or HH-RLHF preference pairs file (or a snapshot's ``preference.parquet`` named as a
  file): each pair becomes two examples, the chosen reply desirable and the rejected one
  undesirable, as TRL's ``unpair_preference_dataset`` does; the log says so.

    examples = read_kto_examples(Path("snapshots/snap-..."))        # list[KTOExample]
    train, held_out = read_kto_split("kto.jsonl", None, 0.1, seed=0)

KTO learns from the contrast between the two kinds, so data with only one kind is refused.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from rlhf.preference_data import PairFileError, _rows, _text, pair_from_record

KTO_FILE = "kto.parquet"
PAIRS_FILE = "preference.parquet"


class KTODataError(PairFileError):
    """The KTO data cannot be used; the message names the record and the field, or what to do."""


@dataclass(frozen=True)
class KTOExample:
    prompt: str  # text, or a "User: ... / Assistant: ..." transcript for a conversation
    completion: str
    label: bool  # True = desirable
    source: str | None = None  # thumbs, ranking, pair (converted from a preference pair), or None


@dataclass
class KTOReport:
    """What reading KTO data found, for the run's log."""

    examples: int = 0
    desirable: int = 0
    undesirable: int = 0
    converted_pairs: int = 0  # preference pairs turned into two examples each
    duplicates: int = 0  # converted examples left out: the same reply, prompt and label already read
    both_ways: int = 0  # replies marked desirable and undesirable for the same prompt (kept, both)

    def summary(self, source: str | Path) -> str:
        """One line (and a note per oddity) for the log."""
        line = f"{Path(source).name}: {self.examples} KTO examples, {self.desirable} desirable and {self.undesirable} undesirable"
        notes = []
        if self.converted_pairs:
            notes.append(
                f"  converted {self.converted_pairs} preference pairs: chosen reply = desirable, rejected reply = undesirable"
                + (f" ({self.duplicates} repeated replies left out)" if self.duplicates else "")
            )
        if self.both_ways:
            notes.append(f"  warning: {self.both_ways} replies are marked both desirable and undesirable for the same prompt (kept)")
        return "\n".join([line, *notes])


def _label(value, where: str) -> bool:
    # parquet gives bools; JSON may give 0/1 (TRL's datasets use both)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise KTODataError(f"{where}: field 'label' must be true/false or 1/0 (true = desirable), got {value!r}")


def examples_from_record(record: dict, where: str) -> list[KTOExample]:
    """One example for a KTO record, two for a preference pair (chosen desirable, rejected undesirable)."""
    if isinstance(record, dict) and "label" in record:
        for key in ("prompt", "completion"):
            if record.get(key) is None:
                raise KTODataError(f"{where}: needs '{key}' (a KTO record has 'prompt', 'completion' and 'label')")
        source = record.get("source")
        return [
            KTOExample(
                _text(record["prompt"], where, "prompt"),
                _text(record["completion"], where, "completion"),
                _label(record["label"], where),
                str(source) if source is not None else None,
            )
        ]
    if isinstance(record, dict) and "chosen" in record and "rejected" in record:
        pair = pair_from_record(record, where)
        return [KTOExample(pair.prompt, pair.chosen, True, "pair"), KTOExample(pair.prompt, pair.rejected, False, "pair")]
    raise KTODataError(
        f"{where}: needs 'prompt', 'completion' and 'label' (KTO: true = desirable), "
        "or 'chosen' and 'rejected' (a preference pair, converted)"
    )


def _source_file(source: Path) -> Path:
    if source.is_dir():
        if (source / KTO_FILE).is_file():
            return source / KTO_FILE
        if (source / PAIRS_FILE).is_file():
            raise KTODataError(
                f"snapshot {source.name} has no KTO data ({KTO_FILE}): make a new snapshot with the KTO option in the admin "
                "console (thumbs up/down and rankings become desirable and undesirable replies), or, to use this snapshot's "
                f"preference pairs (chosen = desirable, rejected = undesirable), name its file: {source / PAIRS_FILE}"
            )
        raise KTODataError(f"{source} is not a snapshot folder (no {KTO_FILE})")
    if not source.is_file():
        raise KTODataError(f"{source} not found")
    return source


def snapshot_kto_counts(folder: Path) -> tuple[int, int] | None:
    """(desirable, undesirable) of a snapshot folder's KTO data, reading only its label column; None without KTO data."""
    path = Path(folder) / KTO_FILE
    if not path.is_file():
        return None
    try:
        import pyarrow.parquet as pq

        labels = pq.read_table(path, columns=["label"]).column("label").to_pylist()
    except Exception:  # unreadable: the run's own check will say why
        return None
    desirable = sum(bool(x) for x in labels)
    return desirable, len(labels) - desirable


def one_kind_message(name: str, desirable: int, undesirable: int) -> str | None:
    """Why data with a single kind of example cannot train KTO, and what to do; None when both are there."""
    if desirable and undesirable:
        return None
    if not desirable and not undesirable:
        return f"{name} holds no KTO examples"
    if desirable:
        return (
            f"{name} holds only desirable replies ({desirable}): KTO learns from the contrast, so it needs undesirable ones "
            "too; add thumbs-down replies or the lower-ranked replies (a snapshot with the KTO option has both), or train "
            "on these replies with SFT instead"
        )
    return (
        f"{name} holds only undesirable replies ({undesirable}): KTO needs desirable ones too; add thumbs-up replies or "
        "the top-ranked replies (a snapshot with the KTO option has both)"
    )


def read_kto_examples(path: Path, limit: int | None = None, report: KTOReport | None = None) -> list[KTOExample]:
    """Every example of a snapshot folder or a file, in order (or those of its first ``limit`` records).

    With a ``limit`` only the start is read: a cheap check that the data exists and parses, before
    a run folder is made; whether both kinds are present is then not judged (a file may be sorted
    by label). A full read refuses data with one kind only.
    """
    report = report if report is not None else KTOReport()
    try:
        return _read(Path(path), limit, report)
    except KTODataError:
        raise
    except PairFileError as exc:  # the shared readers' errors (a line that is not JSON, a bad field)
        raise KTODataError(str(exc)) from exc


def _read(path: Path, limit: int | None, report: KTOReport) -> list[KTOExample]:
    source = _source_file(path)
    try:
        rows = _rows(source, limit)
    except PairFileError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise KTODataError(f"{source} cannot be read: {exc}") from exc
    except Exception as exc:  # pyarrow's errors for a file that is not parquet
        raise KTODataError(f"{source.name}: not a readable {source.suffix or 'data'} file ({exc})") from exc
    examples: list[KTOExample] = []
    converted: set[tuple[str, str, bool]] = set()
    labels: dict[tuple[str, str], set[bool]] = {}
    for where, record in rows:
        found = examples_from_record(record, where)
        if len(found) == 2:
            report.converted_pairs += 1
        for ex in found:
            key = (ex.prompt, ex.completion, ex.label)
            if ex.source == "pair":
                # all-pairs rankings repeat a reply in several pairs; once per label is enough
                if key in converted:
                    report.duplicates += 1
                    continue
                converted.add(key)
            labels.setdefault((ex.prompt, ex.completion), set()).add(ex.label)
            examples.append(ex)
    report.examples = len(examples)
    report.desirable = sum(ex.label for ex in examples)
    report.undesirable = report.examples - report.desirable
    report.both_ways = sum(len(v) == 2 for v in labels.values())
    problem = one_kind_message(source.name if source.name != KTO_FILE else str(path), report.desirable, report.undesirable)
    if problem and (limit is None or not examples):
        raise KTODataError(problem)
    return examples


def split_examples(examples: list[KTOExample], fraction: float, seed: int) -> tuple[list[KTOExample], list[KTOExample]]:
    """(train, held out): a seeded split by prompt, with both kinds held out and both left to train on.

    Whole prompts are held out, so the held-out replies answer prompts the model was not trained on.
    When that cannot keep both kinds on each side (few prompts), the split is by example, per kind.
    """
    if fraction <= 0 or not examples:
        return list(examples), []
    rng = random.Random(seed)
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.prompt, []).append(i)
    order = list(groups)
    rng.shuffle(order)
    target = max(2, int(round(len(examples) * fraction)))
    held: list[str] = []
    for kind in (True, False):  # first a prompt with a reply of each kind, then fill to the share asked
        first = next((p for p in order if p not in held and any(examples[i].label is kind for i in groups[p])), None)
        if first is not None and not any(examples[i].label is kind for p in held for i in groups[p]):
            held.append(first)
    for p in order:
        if sum(len(groups[h]) for h in held) >= target:
            break
        if p not in held:
            held.append(p)
    held_idx = sorted(i for p in held for i in groups[p])
    held_set = set(held_idx)
    train = [ex for i, ex in enumerate(examples) if i not in held_set]
    held_out = [examples[i] for i in held_idx]
    if {ex.label for ex in train} == {True, False} and {ex.label for ex in held_out} == {True, False}:
        return train, held_out
    train, held_out = [], []
    for kind in (True, False):
        same = [ex for ex in examples if ex.label is kind]
        rng.shuffle(same)
        n = min(len(same) - 1, max(1, int(round(len(same) * fraction))))
        held_out += same[:n]
        train += same[n:]
    if {ex.label for ex in held_out} != {True, False}:
        raise KTODataError(
            "too few examples to hold out both desirable and undesirable replies and still train on both kinds: add "
            "examples, or give a separate held-out file (eval_data), or set eval_fraction to 0"
        )
    rng.shuffle(train)
    rng.shuffle(held_out)
    return train, held_out


def read_kto_split(data: str, eval_data: str | None, fraction: float, seed: int) -> tuple[list[KTOExample], list[KTOExample]]:
    """The training and held-out examples of a run config (a separate held-out file, or a split).

    Prints what each file held and how it was split (the run's log shows it).
    """
    if not data:
        raise ValueError("the config needs 'data': a snapshot folder with KTO data, or a file of prompt/completion/label records")
    report = KTOReport()
    examples = read_kto_examples(Path(data), report=report)
    print(report.summary(data), flush=True)
    if eval_data:
        held = KTOReport()
        held_out = read_kto_examples(Path(eval_data), report=held)
        print(held.summary(eval_data), flush=True)
        return examples, held_out
    train, held_out = split_examples(examples, fraction, seed)
    if held_out:
        d = sum(ex.label for ex in held_out)
        print(f"held out {len(held_out)} examples ({d} desirable, {len(held_out) - d} undesirable); {len(train)} to train on", flush=True)
    return train, held_out
