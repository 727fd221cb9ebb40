"""Thumbs up/down: one verdict per account and reply, changeable, clearable, kept across restarts; KTO rows."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from annotations.accounts import add_annotator, set_active
from annotations.feedback import (
    KTO_RULES,
    ShownReply,
    clear_feedback,
    feedback_counts,
    finish_reply,
    kto_ranking_rows,
    kto_thumb_rows,
    my_verdicts,
    new_key,
    prompt_text,
    record_feedback,
)
from annotations.queue import next_prompt, submit_ranking
from annotations.schema import LATEST_VERSION, MIGRATIONS
from annotations.snapshot import KTO, MANIFEST, PLAIN, create_snapshot, load_kto, verify_snapshot
from annotations.store import PromptRecord, ReplyRecord, Store, StoreError


def _shown(text: str = "Paris.", model: str = "tiny", surface: str = "chat", key: str | None = None) -> ShownReply:
    return ShownReply(
        key=key or new_key(surface),
        surface=surface,
        prompt="What is the capital of France?",
        reply=text,
        model=model,
        settings={"temperature": 0.0, "top_p": 0.95},
    )


def _updated(store: Store, key: str) -> object:
    return store.query("SELECT updated FROM feedback WHERE reply_key = ?", [key])[0][0]


def test_one_verdict_per_user_and_reply_changeable_and_clearable(store: Store, people) -> None:
    shown = _shown()
    assert record_feedback(store, "ana", shown, 1) == "stored"
    first = _updated(store, shown.key)
    assert record_feedback(store, "ana", shown, 1) == "unchanged"
    assert _updated(store, shown.key) == first  # a click on the same verdict writes nothing
    assert record_feedback(store, "ana", shown, -1) == "changed"
    assert _updated(store, shown.key) > first
    assert store.query("SELECT count(*), min(verdict) FROM feedback") == [(1, -1)]
    assert my_verdicts(store, "ana") == {shown.key: -1}
    assert clear_feedback(store, "ana", shown.key) and not clear_feedback(store, "ana", shown.key)
    assert my_verdicts(store, "ana") == {}
    assert record_feedback(store, "ana", shown, 1) == "stored"  # after clearing, a new verdict


def test_a_thumb_given_mid_stream_gets_the_whole_reply_when_it_ends(store: Store, people) -> None:
    partial = _shown("The capi")
    record_feedback(store, "ana", partial, 1)
    other = _shown("Lyon.")
    record_feedback(store, "bob", other, -1)
    assert finish_reply(store, partial.key, "The capital of France is Paris.") == 1
    assert store.query("SELECT reply, verdict FROM feedback WHERE reply_key = ?", [partial.key]) == [("The capital of France is Paris.", 1)]
    assert store.query("SELECT reply FROM feedback WHERE reply_key = ?", [other.key]) == [("Lyon.",)]  # another reply untouched
    assert finish_reply(store, partial.key, "The capital of France is Paris.") == 0  # nothing to change: nothing written
    assert finish_reply(store, new_key("chat"), "never thumbed") == 0


def test_a_second_user_has_a_separate_verdict(store: Store, people) -> None:
    shown = _shown()
    record_feedback(store, "ana", shown, 1)
    record_feedback(store, "bob", shown, -1)
    assert my_verdicts(store, "ana") == {shown.key: 1} and my_verdicts(store, "bob") == {shown.key: -1}
    assert my_verdicts(store, "cy") == {}
    clear_feedback(store, "bob", shown.key)
    assert my_verdicts(store, "ana") == {shown.key: 1}
    other = _shown("Lyon.", model="other", surface="arena")
    record_feedback(store, "bob", other, 1)
    counts = {(c.model, c.surface): (c.up, c.down) for c in feedback_counts(store)}
    assert counts == {("tiny", "chat"): (1, 0), ("other", "arena"): (1, 0)}
    assert my_verdicts(store, "ana", keys=[other.key]) == {}


def test_verdicts_survive_closing_and_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    shown = _shown()
    with Store(path) as store:
        add_annotator(store, "ana", "correct-horse")
        record_feedback(store, "ana", shown, 1)
        record_feedback(store, "ana", shown, -1)
    with Store(path) as store:
        assert my_verdicts(store, "ana") == {shown.key: -1}
        assert record_feedback(store, "ana", shown, -1) == "unchanged"
        [(prompt, reply, model, settings)] = store.query("SELECT prompt, reply, model, settings FROM feedback")
        assert (prompt, reply, model, json.loads(settings)) == (shown.prompt, "Paris.", "tiny", shown.settings)


def test_bad_input_is_refused_and_stores_nothing(store: Store, people) -> None:
    with pytest.raises(StoreError, match=r"\+1 \(thumb up\) or -1"):
        record_feedback(store, "ana", _shown(), 2)
    with pytest.raises(StoreError, match=r"\+1"):
        record_feedback(store, "ana", _shown(), True)
    with pytest.raises(StoreError, match="surface must be one of"):
        record_feedback(store, "ana", _shown(surface="mail"), 1)
    with pytest.raises(StoreError, match="empty"):
        record_feedback(store, "ana", _shown(text="  "), 1)
    with pytest.raises(StoreError, match="no annotator 'ghost'"):
        record_feedback(store, "ghost", _shown(), 1)
    with pytest.raises(StoreError, match="lone surrogate"):
        record_feedback(store, "ana", _shown(text="bad \ud800"), 1)
    set_active(store, "cy", False)
    with pytest.raises(StoreError, match="deactivated"):
        record_feedback(store, "cy", _shown(), 1)
    assert store.query("SELECT count(*) FROM feedback") == [(0,)]


def test_prompt_text_follows_the_snapshot_convention() -> None:
    assert prompt_text([{"role": "user", "content": "Hi"}]) == "Hi"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "More"}]
    assert prompt_text(turns) == "User: Hi\n\nAssistant: Hello\n\nUser: More"


def test_migration_from_version_6_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "v6.duckdb"
    previous = LATEST_VERSION - 1
    assert MIGRATIONS[previous - 1].version == previous == 6
    con = duckdb.connect(str(path))  # a file exactly as version 6 left it
    for migration in MIGRATIONS[:previous]:
        for statement in migration.statements:
            con.execute(statement)
    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(previous)])
    con.execute("INSERT INTO projects (name) VALUES ('legacy')")
    con.execute("INSERT INTO prompts (project_id, text) VALUES (1, 'old prompt')")
    con.execute("INSERT INTO annotators (name, role) VALUES ('ana', 'annotator')")
    con.close()
    with Store(path) as store:
        assert store.schema_version() == LATEST_VERSION
        assert [p.text for p in store.prompts(1)] == ["old prompt"]
        shown = _shown()
        assert record_feedback(store, "ana", shown, 1) == "stored"
    with Store(path) as store:
        assert store.schema_version() == LATEST_VERSION and my_verdicts(store, "ana") == {shown.key: 1}


# -- rankings to KTO rows --------------------------------------------------------------------------
def _hand_made(store: Store, people) -> tuple[int, list[int], list[int]]:
    """Prompt 1 with 5 replies ranked by ana [1, 1, 2, 3, 3] and bob [1, 2, 2, 2, 3]; prompt 2 all tied by ana."""
    pid = store.create_project("kto", k=5, min_submitted=2)
    p1, p2 = store.add_prompts(pid, [PromptRecord("first question"), PromptRecord("second question")])
    r1 = store.add_replies(p1, [ReplyRecord(f"reply {i}", model=f"m{i % 2}") for i in range(5)])
    r2 = store.add_replies(p2, [ReplyRecord(f"other {i}") for i in range(5)])
    submit_ranking(store, people["ana"], p1, dict(zip(r1, [1, 1, 2, 3, 3], strict=True)))
    submit_ranking(store, people["bob"], p1, dict(zip(r1, [1, 2, 2, 2, 3], strict=True)))
    submit_ranking(store, people["ana"], p2, dict.fromkeys(r2, 1))
    return pid, r1, r2


def test_rankings_convert_exactly_per_annotator(store: Store, people) -> None:
    _, r1, r2 = _hand_made(store, people)
    rankings = [(1, "ana", dict(zip(r1, [1, 1, 2, 3, 3], strict=True))), (1, "bob", dict(zip(r1, [1, 2, 2, 2, 3], strict=True)))]
    rankings.append((2, "ana", dict.fromkeys(r2, 1)))
    prompts = {1: "first question", 2: "second question"}
    replies = {r: (f"text {r}", "m") for r in [*r1, *r2]}
    rows = kto_ranking_rows(rankings, "per_annotator", prompts, replies)
    got = [(r["annotator"], r["reply_id"], r["label"]) for r in rows]
    # ana: top ties r1[0], r1[1] desirable; bottom ties r1[3], r1[4] undesirable; r1[2] (middle) out.
    # bob: r1[0] desirable, r1[4] undesirable, the three in the middle out. ana's all-tie ranking: nothing.
    assert got == [
        ("ana", r1[0], True), ("ana", r1[1], True), ("ana", r1[3], False), ("ana", r1[4], False),
        ("bob", r1[0], True), ("bob", r1[4], False),
    ]  # fmt: skip
    assert {r["source"] for r in rows} == {"ranking"} and rows[0]["prompt"] == "first question"
    assert rows[0]["completion"] == f"text {r1[0]}" and rows[0]["model"] == "m"


def test_rankings_convert_exactly_by_majority(store: Store, people) -> None:
    _, r1, _ = _hand_made(store, people)
    rankings = [(1, "ana", dict(zip(r1, [1, 1, 2, 3, 3], strict=True))), (1, "bob", dict(zip(r1, [1, 2, 2, 2, 3], strict=True)))]
    rankings.append((1, "cy", dict(zip(r1, [2, 1, 2, 2, 2], strict=True))))
    rows = kto_ranking_rows(rankings, "majority", {1: "q"}, {r: (str(r), "") for r in r1})
    # r1[0]: top for ana and bob (2 of 3) -> desirable; r1[1]: top for ana and cy -> desirable;
    # r1[4]: bottom for all three -> undesirable; r1[3]: bottom for ana and cy -> undesirable; r1[2]: bottom for cy only -> out.
    assert [(r["reply_id"], r["label"], r["n_annotators"], round(r["agreement"], 3)) for r in rows] == [
        (r1[0], True, 3, 0.667), (r1[1], True, 3, 0.667), (r1[3], False, 3, 0.667), (r1[4], False, 3, 1.0),
    ]  # fmt: skip
    assert all(r["annotator"] is None and r["model"] is None for r in rows)
    assert kto_ranking_rows([(1, "ana", {r1[0]: 1, r1[1]: 1})], "majority", {1: "q"}, {r: ("x", "") for r in r1}) == []


def _rank_all(store: Store, project: int, who: int, order: list[int]) -> None:
    item = next_prompt(store, project, who)
    submit_ranking(store, who, item.prompt.id, {r.id: order[n] for n, r in enumerate(item.replies)})


def test_snapshot_with_kto_states_the_rule_and_counts(store: Store, people, tmp_path: Path) -> None:
    pid, r1, _ = _hand_made(store, people)
    up, down = _shown("good", model="m0"), _shown("bad", model="m1", surface="arena")
    record_feedback(store, "ana", up, 1)
    record_feedback(store, "bob", down, -1)
    plain = create_snapshot(store, tmp_path, project="kto", aggregate_by="per_annotator")
    assert KTO not in plain.manifest["files"] and "kto" not in plain.manifest and not (plain.folder / KTO).exists()
    info = create_snapshot(store, tmp_path, project="kto", aggregate_by="per_annotator", kto=True)
    assert not info.reused and info.content_hash != plain.content_hash
    manifest = verify_snapshot(info.folder)
    assert manifest == json.loads((info.folder / MANIFEST).read_text())
    section = manifest["kto"]
    assert section["rule"] == KTO_RULES["per_annotator"] and "best rank" in section["rule"] and "left out" in section["rule"]
    assert section["thumbs"]["selection"] == {"models": None, "surfaces": None}
    assert section["counts"] == {"rows": 8, "desirable": 4, "undesirable": 4, "from_thumbs": 2, "from_rankings": 6}
    table = pq.read_table(info.folder / KTO)
    assert table.column_names[:4] == ["prompt", "completion", "label", "source"]
    rows = table.to_pylist()
    thumbs = [r for r in rows if r["source"] == "thumbs"]
    assert [(r["annotator"], r["completion"], r["label"], r["model"], r["surface"]) for r in thumbs] == [
        ("ana", "good", True, "m0", "chat"), ("bob", "bad", False, "m1", "arena"),
    ]  # fmt: skip
    assert thumbs[0]["prompt"] == up.prompt
    # The rankings' prompt is preference.parquet's prompt for the same prompt id.
    pref = {r["prompt_id"]: r["prompt"] for r in pq.read_table(info.folder / PLAIN).to_pylist()}
    assert all(r["prompt"] == pref[r["prompt_id"]] for r in rows if r["source"] == "ranking")
    assert load_kto(info.folder).num_rows == 8
    # Identical inputs reuse the snapshot; a thumbs filter is another content.
    assert create_snapshot(store, tmp_path, project="kto", aggregate_by="per_annotator", kto=True).reused
    only_m0 = create_snapshot(store, tmp_path, project="kto", aggregate_by="per_annotator", kto=True, kto_models=["m0"])
    assert not only_m0.reused and only_m0.manifest["kto"]["thumbs"]["selection"] == {"models": ["m0"], "surfaces": None}
    assert only_m0.manifest["kto"]["counts"]["from_thumbs"] == 1
    # A changed verdict changes the content.
    record_feedback(store, "bob", down, 1)
    assert not create_snapshot(store, tmp_path, project="kto", aggregate_by="per_annotator", kto=True).reused
    with pytest.raises(StoreError, match="holds no KTO data"):
        load_kto(plain.folder)


def test_snapshot_of_thumbs_only(store: Store, people, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no thumbs match the KTO selection"):
        create_snapshot(store, tmp_path, kto=True)
    record_feedback(store, "ana", _shown("good"), 1)
    record_feedback(store, "bob", _shown("bad"), -1)
    with pytest.raises(StoreError, match="no submitted rankings match this filter; nothing"):
        create_snapshot(store, tmp_path)  # without KTO, as before
    with pytest.raises(StoreError, match="no thumbs match the KTO selection"):
        create_snapshot(store, tmp_path, kto=True, kto_surfaces=["lab"])
    with pytest.raises(StoreError, match="unknown surface"):
        create_snapshot(store, tmp_path, kto=True, kto_surfaces=["mail"])
    info = create_snapshot(store, tmp_path, kto=True)
    assert info.counts["pairs"] == 0 and info.manifest["kto"]["counts"]["from_thumbs"] == 2
    empty = pq.read_table(info.folder / PLAIN)
    assert empty.num_rows == 0 and str(empty.schema.field("prompt").type) == "string"
    assert [r["label"] for r in kto_thumb_rows(store)] == [True, False]


def test_one_level_ranking_alone_gives_no_kto_data(store: Store, people, tmp_path: Path) -> None:
    pid = store.create_project("flat", k=2, min_submitted=1)
    [p] = store.add_prompts(pid, [PromptRecord("q")])
    store.add_replies(p, [ReplyRecord("a"), ReplyRecord("b")])
    _rank_all(store, pid, people["ana"], [1, 1])
    with pytest.raises(StoreError, match="nothing converts to KTO data"):
        create_snapshot(store, tmp_path, project="flat", include_ties=True, kto=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
