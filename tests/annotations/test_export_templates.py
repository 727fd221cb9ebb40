"""Exports for training runs and the prompt lab's saved templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annotations.accounts import add_annotator
from annotations.export import export_best_replies, export_prompts, labelled_records
from annotations.queue import submit_ranking
from annotations.store import PromptRecord, ReplyRecord, Store, StoreError
from annotations.templates import load_template, save_template, template_names


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "s.duckdb") as s:
        yield s


def test_exports(store: Store, tmp_path: Path) -> None:
    pid = store.create_project("p", k=2)
    ids = store.add_prompts(pid, [PromptRecord("q1"), PromptRecord("q2"), PromptRecord("q3")])
    for prompt_id in ids[:2]:
        store.add_replies(prompt_id, [ReplyRecord(f"first {prompt_id}"), ReplyRecord(f"second {prompt_id}")])
    with pytest.raises(StoreError, match="no submitted rankings"):
        export_best_replies(store, "p", tmp_path / "sft.jsonl")
    ann = add_annotator(store, "ana", "ana-password")
    second = store.replies(ids[0])[1].id
    submit_ranking(store, ann, ids[0], {store.replies(ids[0])[0].id: 2, second: 1})
    assert export_prompts(store, "p", tmp_path / "prompts.jsonl") == 3
    assert [json.loads(x)["prompt"] for x in (tmp_path / "prompts.jsonl").read_text().splitlines()] == ["q1", "q2", "q3"]
    assert export_best_replies(store, "p", tmp_path / "sft.jsonl") == 1
    [row] = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert row == {"id": ids[0], "prompt": "q1", "response": f"second {ids[0]}"}
    records = labelled_records(store, "p")
    assert [r.get("output") for r in records] == [f"second {ids[0]}", f"first {ids[1]}", None]
    store.create_project("empty", k=2)
    with pytest.raises(StoreError, match="no prompts"):
        export_prompts(store, "empty", tmp_path / "none.jsonl")
    assert not (tmp_path / "none.jsonl").exists()


def test_templates_round_trip(store: Store) -> None:
    save_template(store, "qa", {"template": "Q: {input}", "k": 3})
    save_template(store, "qa", {"template": "Question: {input}", "k": 2})  # replaced, not duplicated
    save_template(store, "cot", {"cot": "zero_shot"})
    assert template_names(store) == ["cot", "qa"]
    assert load_template(store, "qa") == {"template": "Question: {input}", "k": 2}
    with pytest.raises(StoreError, match="no template called 'nope'"):
        load_template(store, "nope")
    with pytest.raises(StoreError, match="needs a name"):
        save_template(store, "  ", {})
