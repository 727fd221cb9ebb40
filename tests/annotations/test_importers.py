"""Imports: every source and shape, and bad input that names line and field and writes nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from annotations.importers import ImportFailed, import_file
from annotations.queue import next_prompt
from annotations.store import Store

HH = {
    "chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, yeast.\n\nHuman: Then?\n\nAssistant: Knead and bake it.",
    "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water, yeast.\n\nHuman: Then?\n\nAssistant: No idea.",
}
SHAPES = {
    "prompt": [{"prompt": "What is DuckDB?", "category": "qa"}, {"messages": [{"role": "user", "content": "Hi"}]}],
    "dolly": [{"instruction": "Summarise", "context": "A long text.", "response": "Short.", "category": "summarization"}],
    "alpaca": [{"instruction": "Add", "input": "2 and 3", "output": "5"}, {"instruction": "Say hi", "input": "", "output": "hi"}],
    "preference": [{"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green."}],
    "preference-conversational": [
        {
            "prompt": [{"role": "user", "content": "Sky colour?"}],
            "chosen": [{"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "assistant", "content": "Green."}],
        }
    ],
    "hh-rlhf": [HH],
}


def _counts(store: Store) -> tuple[int, ...]:
    return tuple(store.query(f"SELECT count(*) FROM {t}")[0][0] for t in ("prompts", "replies", "rankings", "annotators"))


def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".parquet":
        keys = list(dict.fromkeys(k for r in rows for k in r))  # from_pylist reads keys off row 1 only
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_shape_from_every_source(store: Store, tmp_path: Path, shape: str, suffix: str) -> None:
    pid = store.create_project("p")
    report = import_file(store, pid, _write(tmp_path / f"data{suffix}", SHAPES[shape]))
    assert report.prompts == len(SHAPES[shape]) and not report.skipped
    kind = shape.replace("-conversational", "")
    assert report.shapes == {kind: len(SHAPES[shape])}
    if kind in ("preference", "hh-rlhf"):
        assert report.rankings == 1 and report.replies == 2
        (ranks,) = store.query("SELECT ranks FROM rankings")[0]
        chosen = store.query("SELECT text FROM replies WHERE id = ?", [int(min(json.loads(ranks), key=json.loads(ranks).get))])[0][0]
        assert chosen in ("Blue.", "Knead and bake it.")


def test_csv_and_datasets_folder(store: Store, tmp_path: Path) -> None:
    from datasets import Dataset

    pid = store.create_project("p")
    assert import_file(store, pid, _write(tmp_path / "d.csv", SHAPES["dolly"])).replies == 1
    folder = tmp_path / "saved"
    Dataset.from_list(SHAPES["alpaca"]).save_to_disk(str(folder))
    report = import_file(store, pid, folder)
    assert report.shapes == {"alpaca": 2} and report.replies == 2


def test_hh_prompt_keeps_the_conversation(store: Store, tmp_path: Path) -> None:
    pid = store.create_project("p")
    import_file(store, pid, _write(tmp_path / "hh.jsonl", [HH]))
    [prompt] = store.prompts(pid)
    assert [m["role"] for m in prompt.messages] == ["user", "assistant", "user"]
    assert prompt.messages[-1]["content"] == "Then?"
    assert [r.text for r in store.replies(prompt.id)] == ["Knead and bake it.", "No idea."]


def test_imported_preferences_are_rankings_of_the_import_annotator(store: Store, tmp_path: Path) -> None:
    from annotations.accounts import add_annotator, annotators

    pid = store.create_project("p", k=2, min_submitted=2)
    import_file(store, pid, _write(tmp_path / "p.jsonl", SHAPES["preference"]), import_as="hh-import")
    everyone = annotators(store, include_import=True)
    assert [(a.name, a.role) for a in everyone] == [("hh-import", "import")]
    assert annotators(store) == []
    # The pair still needs a second, human ranking.
    ana = add_annotator(store, "ana", "correct-horse")
    assert next_prompt(store, pid, ana) is not None


BAD = [
    ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": \n', r"bad\.jsonl line 2: not valid JSON"),
    ("bad.jsonl", '{"prompt": "ok"}\n{"title": "x"}\n', r"line 2: no 'prompt', 'text' or 'messages' field \(found: title\)"),
    ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": 7}\n', r"line 2: field 'prompt' must be text, got int"),
    ("bad.jsonl", '{"instruction": "", "output": "x"}\n', r"line 1: field 'instruction' is missing or empty"),
    ("bad.jsonl", '{"prompt": "q", "chosen": "a", "rejected": ""}\n', r"line 1: field 'rejected' is missing or empty"),
    ("bad.jsonl", '{"messages": [{"role": "bot", "content": "x"}]}\n', r"line 1: field 'messages' message 1 has role 'bot'"),
    ("bad.jsonl", '{"chosen": "no turns here", "rejected": "nor here"}\n', r"line 1: field 'chosen' is not an HH-RLHF transcript"),
    (
        "bad.jsonl",
        json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: DIFFERENT\n\nAssistant: c"}) + "\n",
        r"line 1: 'chosen' and 'rejected' differ before their last reply",
    ),
    ("bad.csv", "instruction,input,output\nAdd,1,2\n,3,4\n", r"bad\.csv line 3: field 'instruction' is missing or empty"),
    ("bad.json", '{"prompt": "not a list"}', r"expected a JSON list"),
    ("bad.parquet", "this is not parquet", r"not a readable parquet file"),
    ("bad.xlsx", "x", r"unsupported file type"),
    ("empty.jsonl", "\n\n", r"holds no records"),
]


@pytest.mark.parametrize("name, content, message", BAD)
def test_bad_files_name_the_place_and_write_nothing(store: Store, tmp_path: Path, name: str, content: str, message: str) -> None:
    pid = store.create_project("p")
    before = _counts(store)
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ImportFailed, match=message):
        import_file(store, pid, path)
    assert _counts(store) == before


def test_a_late_bad_record_leaves_nothing_behind(store: Store, tmp_path: Path) -> None:
    pid = store.create_project("p")
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}] * 50 + [{"prompt": "q", "chosen": "a"}]
    with pytest.raises(ImportFailed, match="line 51"):
        import_file(store, pid, _write(tmp_path / "p.jsonl", rows))
    assert _counts(store) == (0, 0, 0, 0)


def test_skip_invalid_imports_the_rest_and_says_what_was_left_out(store: Store, tmp_path: Path) -> None:
    pid = store.create_project("p")
    rows = [{"prompt": "fine"}, {"prompt": ""}, {"prompt": "also fine"}]
    report = import_file(store, pid, _write(tmp_path / "p.jsonl", rows), skip_invalid=True)
    assert report.prompts == 2 and len(report.skipped) == 1 and "line 2" in report.skipped[0]


def test_unknown_project_and_missing_file(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="not found"):
        import_file(store, 1, tmp_path / "nope.jsonl")
    from annotations.store import StoreError

    with pytest.raises(StoreError, match="no project"):
        import_file(store, 42, _write(tmp_path / "p.jsonl", [{"prompt": "x"}]))


# -- bulk writes: a short hold of the write lock, one transaction -------------------------------------
def _statements_in_transactions(store: Store) -> list[int]:
    """Counts of statements run inside each transaction of ``store`` from now on."""
    from contextlib import contextmanager

    counts: list[int] = []
    real = store.transaction

    @contextmanager
    def counting():
        with real() as cur:
            counts.append(0)

            class Counting:
                def __getattr__(self, name):
                    return getattr(cur, name)

                def execute(self, *args):
                    counts[-1] += 1
                    return cur.execute(*args)

            yield Counting()

    store.transaction = counting
    return counts


@pytest.mark.parametrize("shape", ["prompt", "preference"])
def test_an_import_writes_with_a_fixed_number_of_statements(store: Store, tmp_path: Path, shape: str) -> None:
    pid = store.create_project("p")
    counts = _statements_in_transactions(store)
    for n in (5, 2000, 3):
        rows = [{"prompt": f"q{n}-{i}", "chosen": "a", "rejected": "b"} for i in range(n)]
        if shape == "prompt":
            rows = [{"prompt": r["prompt"]} for r in rows]
        report = import_file(store, pid, _write(tmp_path / f"{n}.jsonl", rows))
        assert report.prompts == n
    # One transaction per import, the same few statements whatever the size (the first import
    # of preferences also creates the import account).
    assert len(counts) == 3 and counts[1] == counts[2] <= 8 and counts[0] <= counts[1] + 1


def test_reading_and_checking_happen_outside_the_write_lock(store: Store, tmp_path: Path, monkeypatch) -> None:
    from annotations import importers

    pid = store.create_project("p")
    held: list[bool] = []
    for name in ("parse_file", "_dedupe"):
        real = getattr(importers, name)

        def spy(*args, _real=real, **kwargs):
            held.append(store._lock._is_owned())
            return _real(*args, **kwargs)

        monkeypatch.setattr(importers, name, spy)
    import_file(store, pid, _write(tmp_path / "p.jsonl", SHAPES["preference"]))
    assert held == [False, False]


def test_ids_and_rankings_of_a_bulk_import_fit_together(store: Store, tmp_path: Path) -> None:
    pid = store.create_project("p")
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(50)]
    import_file(store, pid, _write(tmp_path / "p.jsonl", rows))
    for prompt_id, ranks in store.query("SELECT prompt_id, ranks FROM rankings"):
        replies = {r.id: r.text for r in store.replies(prompt_id)}
        order = sorted(json.loads(ranks).items(), key=lambda kv: kv[1])
        n = store.prompt(prompt_id).text[1:]
        assert [replies[int(rid)] for rid, _ in order] == [f"good {n}", f"bad {n}"]
    # Later writes take ids after the imported ones.
    from annotations.store import PromptRecord

    [later] = store.add_prompts(pid, [PromptRecord("later")])
    assert later > max(p.id for p in store.prompts(pid) if p.text != "later")


def test_a_failed_write_leaves_nothing_behind_not_even_the_import_account(store: Store, tmp_path: Path, monkeypatch) -> None:
    from annotations import importers

    pid = store.create_project("p")
    real = importers.bulk_insert

    def failing(cur, table, *args, **kwargs):
        if table == "rankings":
            raise RuntimeError("disk full")
        return real(cur, table, *args, **kwargs)

    monkeypatch.setattr(importers, "bulk_insert", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        import_file(store, pid, _write(tmp_path / "p.jsonl", SHAPES["preference"]))
    assert _counts(store) == (0, 0, 0, 0)


def test_prompts_that_land_during_an_import_count_as_duplicates(store: Store, tmp_path: Path) -> None:
    from annotations.store import PromptRecord

    pid = store.create_project("p")
    real = store.transaction

    def another_import_first():
        store.transaction = real
        store.add_prompts(pid, [PromptRecord("a")])  # commits after the import's duplicate check
        return real()

    store.transaction = another_import_first
    report = import_file(store, pid, _write(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": "b"}]))
    assert report.prompts == 1 and [d.reason for d in report.duplicates] == ["the same prompt is already in the project"]
    assert sorted(p.text for p in store.prompts(pid)) == ["a", "b"]


def test_import_as_a_real_annotator_is_refused_and_writes_nothing(store: Store, tmp_path: Path) -> None:
    from annotations.accounts import add_annotator
    from annotations.store import StoreError

    pid = store.create_project("p")
    add_annotator(store, "ana", "correct-horse")
    with pytest.raises(StoreError, match="'ana' is a real annotator"):
        import_file(store, pid, _write(tmp_path / "p.jsonl", SHAPES["preference"]), import_as="ana")
    assert store.count_prompts(pid) == 0
