"""Snapshots: TRL formats, strategies, filters, manifest, immutability, one-call loading."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from annotations.accounts import add_annotator
from annotations.queue import next_prompt, submit_ranking
from annotations.snapshot import CONVERSATIONAL, MANIFEST, PLAIN, create_snapshot, list_snapshots, load_snapshot, verify_snapshot
from annotations.store import PromptRecord, Store, StoreError
from tests.annotations.conftest import fill_project


def _rank(store: Store, pid: int, who: int, order: list[int]) -> None:
    item = next_prompt(store, pid, who)
    submit_ranking(store, who, item.prompt.id, {r.id: order[n] for n, r in enumerate(item.replies)})


@pytest.fixture
def ranked(store: Store, people) -> int:
    """Project with 2 prompts x 3 replies, each ranked by ana and bob (bob ties the last two)."""
    pid = fill_project(store, "ranked", prompts=2, k=3, min_submitted=2)
    for _ in range(2):
        _rank(store, pid, people["ana"], [1, 2, 3])
        _rank(store, pid, people["bob"], [1, 2, 2])
    return pid


def test_trl_plain_and_conversational_files(store: Store, ranked: int, tmp_path: Path) -> None:
    info = create_snapshot(store, tmp_path / "snaps", project="ranked", strategy="all_pairs", margin=True)
    plain = pq.read_table(info.folder / PLAIN).to_pylist()
    conv = pq.read_table(info.folder / CONVERSATIONAL).to_pylist()
    assert len(plain) == len(conv) == info.counts["pairs"]
    row = plain[0]
    assert {"prompt", "chosen", "rejected", "margin", "agreement"} <= set(row)
    assert row["prompt"].startswith("question") and row["chosen"].startswith("answer")
    assert conv[0]["prompt"] == [{"role": "user", "content": row["prompt"]}]
    assert conv[0]["chosen"] == [{"role": "assistant", "content": row["chosen"]}]
    # majority over ana and bob: 1>2 and 1>3 both agree; 2>3 is ana's alone against bob's tie
    by_pair = {(r["chosen_id"], r["rejected_id"]): r for r in plain if r["prompt_id"] == plain[0]["prompt_id"]}
    assert len(by_pair) == 2 and all(r["agreement"] == 1.0 for r in by_pair.values())


def test_per_annotator_rows_and_ties(store: Store, ranked: int, tmp_path: Path) -> None:
    per = create_snapshot(store, tmp_path / "s", project="ranked", aggregate_by="per_annotator")
    rows = pq.read_table(per.folder / PLAIN).to_pylist()
    assert sorted({r["annotator"] for r in rows}) == ["ana", "bob"]
    assert per.counts["pairs"] == 2 * (3 + 2)  # ana: 3 pairs, bob: 2 (his tie makes none)
    ties = create_snapshot(store, tmp_path / "s", project="ranked", aggregate_by="per_annotator", include_ties=True, margin=True)
    assert ties.counts["tie_pairs"] == 2
    assert 0.0 in pq.read_table(ties.folder / PLAIN).column("margin").to_pylist()


@pytest.mark.parametrize("strategy, pairs_per_prompt", [("all_pairs", 3), ("best_vs_rest", 2), ("adjacent", 2)])
def test_strategies(store: Store, people, tmp_path: Path, strategy: str, pairs_per_prompt: int) -> None:
    pid = fill_project(store, "one", prompts=2, k=3, min_submitted=1)
    for _ in range(2):
        _rank(store, pid, people["ana"], [1, 2, 3])
    info = create_snapshot(store, tmp_path, project="one", strategy=strategy)
    assert info.counts["pairs"] == 2 * pairs_per_prompt and info.manifest["pair_strategy"] == strategy


def test_manifest_hash_and_reuse(store: Store, ranked: int, tmp_path: Path) -> None:
    first = create_snapshot(store, tmp_path, project="ranked")
    manifest = json.loads((first.folder / MANIFEST).read_text())
    assert manifest["id"] == first.id and manifest["content_hash"] == first.content_hash
    assert manifest["counts"] == {"rankings": 4, "prompts": 2, "annotators": 2, "pairs": 4, "tie_pairs": 0}
    assert manifest["filter"]["project"] == "ranked" and manifest["agreement"]["prompts_with_overlap"] == 2
    again = create_snapshot(store, tmp_path, project="ranked")
    assert again.reused and again.id == first.id
    other = create_snapshot(store, tmp_path, project="ranked", strategy="adjacent")
    assert not other.reused and other.content_hash != first.content_hash
    assert [s["id"] for s in list_snapshots(store)] == [other.id, first.id]


def test_snapshot_is_immutable_and_verified(store: Store, ranked: int, tmp_path: Path) -> None:
    info = create_snapshot(store, tmp_path, project="ranked")
    if os.geteuid() != 0:  # root ignores permission bits
        with pytest.raises(PermissionError):
            (info.folder / PLAIN).write_bytes(b"x")
    assert not os.access(info.folder / PLAIN, os.W_OK) or os.geteuid() == 0
    assert oct((info.folder / PLAIN).stat().st_mode & 0o777) == "0o444"
    (info.folder / PLAIN).chmod(0o644)
    with (info.folder / PLAIN).open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(StoreError, match="was changed after the snapshot"):
        verify_snapshot(info.folder)


def test_filters(store: Store, ranked: int, people, tmp_path: Path) -> None:
    only_ana = create_snapshot(store, tmp_path, project="ranked", annotators=["ana"])
    assert only_ana.counts["annotators"] == 1 and only_ana.counts["pairs"] == 6
    future = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(StoreError, match="no submitted rankings match"):
        create_snapshot(store, tmp_path, project="ranked", since=future)
    assert create_snapshot(store, tmp_path, project="ranked", until=future.isoformat()).counts["rankings"] == 4
    other = store.create_project("empty")
    store.add_prompts(other, [PromptRecord("x")])
    with pytest.raises(StoreError, match="no submitted rankings"):
        create_snapshot(store, tmp_path, project="empty")
    with pytest.raises(StoreError, match="unknown pair strategy"):
        create_snapshot(store, tmp_path, project="ranked", strategy="nope")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_all_ties_make_nothing_to_snapshot(store: Store, people, tmp_path: Path) -> None:
    pid = fill_project(store, "tied", prompts=1, k=2, min_submitted=1)
    _rank(store, pid, people["ana"], [1, 1])
    with pytest.raises(StoreError, match="no preference pairs"):
        create_snapshot(store, tmp_path, project="tied")
    assert list_snapshots(store) == []


def test_load_snapshot_in_one_call(store: Store, ranked: int, tmp_path: Path) -> None:
    info = create_snapshot(store, tmp_path, project="ranked", margin=True)
    ds = load_snapshot(info.folder)
    assert ds.num_rows == info.counts["pairs"] and {"prompt", "chosen", "rejected", "margin"} <= set(ds.column_names)
    conv = load_snapshot(info.folder, conversational=True)
    assert conv[0]["chosen"][0]["role"] == "assistant"


def test_imported_conversations_snapshot_as_messages(store: Store, tmp_path: Path) -> None:
    from annotations.importers import import_file

    pid = store.create_project("hh")
    data = tmp_path / "hh.jsonl"
    data.write_text(
        json.dumps(
            {
                "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: good",
                "rejected": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: bad",
            }
        )
        + "\n"
    )
    import_file(store, pid, data)
    add_annotator(store, "unused", "correct-horse")
    info = create_snapshot(store, tmp_path / "s", project="hh")
    conv = load_snapshot(info.folder, conversational=True)[0]
    assert [m["role"] for m in conv["prompt"]] == ["user", "assistant", "user"]
    assert conv["chosen"][0]["content"] == "good" and conv["rejected"][0]["content"] == "bad"


def test_without_kto_a_snapshot_is_as_before(store: Store, ranked: int, tmp_path: Path) -> None:
    """The KTO option left out: the same files, manifest keys, counts and content-hash formula as before KTO existed."""
    import hashlib

    info = create_snapshot(store, tmp_path, project="ranked", margin=True)
    assert sorted(p.name for p in info.folder.iterdir()) == sorted([PLAIN, CONVERSATIONAL, MANIFEST])
    manifest = json.loads((info.folder / MANIFEST).read_text())
    assert list(manifest) == [
        "id", "created", "content_hash", "filter", "pair_strategy", "aggregate", "include_ties", "margin",
        "counts", "agreement", "files", "formats",
    ]  # fmt: skip
    assert list(manifest["files"]) == [PLAIN, CONVERSATIONAL] and set(info.counts) == {
        "rankings", "prompts", "annotators", "pairs", "tie_pairs",
    }  # fmt: skip
    rows = pq.read_table(info.folder / PLAIN).to_pylist()
    keys = ["prompt", "chosen", "rejected", "prompt_id", "chosen_id", "rejected_id", "margin", "agreement", "n_annotators", "annotator"]
    settings = {"pair_strategy": "all_pairs", "aggregate": "majority", "include_ties": False, "margin": True}
    payload = {"settings": settings, "rows": [{k: r[k] for k in keys} for r in rows]}
    assert info.content_hash == hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
