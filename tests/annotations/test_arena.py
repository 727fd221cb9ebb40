"""The arena's storage: settings, votes stored once, refusals that store nothing, outcomes, pairs for training."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from annotations.accounts import import_annotator, set_active
from annotations.arena import (
    VOTES,
    ArenaSettings,
    ArenaSettingsError,
    Contender,
    battle_outcomes,
    battles,
    export_preference_pairs,
    load_settings,
    pair_counts,
    record_vote,
    save_settings,
    votes_of,
)
from annotations.limits import Limits
from annotations.schema import LATEST_VERSION, MIGRATIONS
from annotations.snapshot import CONVERSATIONAL, MANIFEST, PLAIN, list_snapshots, verify_snapshot
from annotations.store import Store, StoreError
from annotations.templates import save_template

TWO = (Contender("alpha", "smollm2-135m-instruct"), Contender("alpha terse", "smollm2-135m-instruct", template="terse"))


def conv(*turns: tuple[str, str], system: str = "") -> list[dict]:
    """A conversation of (user, assistant) turns, with an optional system message first."""
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return messages


def vote(store: Store, key: str, choice: str = "a", who: str = "ana", a: str = "alpha", b: str = "beta", **kwargs) -> tuple[int, bool]:
    """record_vote with a single-turn battle unless kwargs say otherwise."""
    args = {
        "key": key,
        "annotator": who,
        "contender_a": a,
        "contender_b": b,
        "conversation_a": conv(("What is 2+2?", "4")),
        "conversation_b": conv(("What is 2+2?", "Four, I think.")),
        "vote": choice,
        "prompt_source": "typed",
        "sampling": {"a": {"temperature": 0.7}, "b": {"temperature": 0.7}},
        "lineage": {"a": {"model": a}, "b": {"model": b}},
        "seconds": 12.5,
    }
    return record_vote(store, **{**args, **kwargs})


def rows(store: Store) -> int:
    return store.query("SELECT count(*) FROM arena_battles")[0][0]


# -- settings ------------------------------------------------------------------------------------------
def test_settings_default_and_round_trip(store: Store, project: int) -> None:
    assert load_settings(store) == ArenaSettings() and ArenaSettings().contenders == ()
    save_template(store, "terse", {"system": "Be terse.", "template": "{input}"})
    chosen = ArenaSettings(contenders=TWO, prompt_project="p", allow_typed=False, pair_sampling="uniform", temperature=0.0, max_turns=1)
    save_settings(store, chosen)
    assert load_settings(store) == chosen
    again = dataclasses.replace(chosen, prompt_project="", allow_typed=True, top_p=0.5, max_new_tokens=1024)
    save_settings(store, again)  # replaces the one row
    assert load_settings(store) == again and store.query("SELECT count(*) FROM arena_settings")[0][0] == 1


BAD_SETTINGS = (
    ({"contenders": TWO[:1]}, "at least 2 contenders"),
    ({"contenders": (TWO[0], Contender("alpha", "other"))}, "two contenders are labelled 'alpha'"),
    ({"contenders": (TWO[0], Contender("[x](http://evil)", "m"))}, "cannot contain"),
    ({"contenders": (TWO[0], Contender(" beta", "m"))}, "spaces at its ends"),
    ({"contenders": (TWO[0], Contender("beta", ""))}, "needs a name"),
    ({"contenders": (TWO[0], Contender("beta", "m\ud800"))}, "lone surrogate"),
    ({"contenders": [*TWO]}, "tuple of Contender"),
    ({"contenders": (TWO[0], Contender("beta", "m", template="missing"))}, "no saved template 'missing'"),
    ({"prompt_project": "nowhere"}, "no project 'nowhere'"),
    ({"allow_typed": False, "prompt_project": ""}, "needs a prompt project"),
    ({"allow_typed": "yes"}, "allow_typed must be true or false"),
    ({"pair_sampling": "random"}, "pair sampling must be one of uncertain, uniform"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 5000}, "max_new_tokens"),
    ({"max_new_tokens": 16.5}, "max_new_tokens"),
    ({"max_turns": 0}, "max_turns"),
    ({"max_turns": True}, "max_turns"),
)


def test_settings_refusals_change_nothing(store: Store, project: int) -> None:
    save_template(store, "terse", {"template": "{input}"})
    good = ArenaSettings(contenders=TWO, prompt_project="p")
    save_settings(store, good)
    for change, message in BAD_SETTINGS:  # one store for all: a store costs more than the checks
        with pytest.raises(ArenaSettingsError, match=message) as caught:
            save_settings(store, dataclasses.replace(good, **change))
        assert isinstance(caught.value, StoreError) and isinstance(caught.value, ValueError)
        assert load_settings(store) == good, change


# -- votes ------------------------------------------------------------------------------------------------
def test_a_vote_is_stored_once_under_a_double_submit(store: Store, people) -> None:
    first = vote(store, "k1", "b")
    assert first[1] is True and vote(store, "k1", "b") == (first[0], False)
    assert rows(store) == 1 and votes_of(store, "ana") == 1 and votes_of(store, "bob") == 0 and votes_of(store, "ghost") == 0
    [b] = battles(store)
    assert (b.id, b.key, b.annotator, b.contender_a, b.contender_b, b.vote) == (first[0], "k1", "ana", "alpha", "beta", "b")
    assert b.prompt == "What is 2+2?" and b.prompt_source == "typed" and b.seconds == 12.5 and b.turns == 1
    assert b.conversation_b == conv(("What is 2+2?", "Four, I think.")) and b.lineage == {"a": {"model": "alpha"}, "b": {"model": "beta"}}
    assert b.sampling["a"] == {"temperature": 0.7} and b.created.tzinfo is not None
    assert battles(store, since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(battles(store, since=datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1))) == 1


def test_the_same_key_from_two_threads_at_once_is_one_battle(store: Store, people) -> None:
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []
    for n in range(10):
        gate = threading.Barrier(2)

        def submit(key: str = f"race-{n}", gate: threading.Barrier = gate) -> None:
            try:
                gate.wait()
                results.append(vote(store, key, "tie"))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=submit) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert rows(store) == 10 and sorted(created for _, created in results) == [False] * 10 + [True] * 10
    assert len({battle_id for battle_id, _ in results}) == 10  # both threads got the same id per key


def test_a_different_second_vote_is_refused_and_leaves_the_first(store: Store, people) -> None:
    battle_id, _ = vote(store, "k1", "a")
    with pytest.raises(StoreError, match=r"this battle already has your vote \(A is better\)"):
        vote(store, "k1", "both_bad")
    with pytest.raises(StoreError, match="belongs to another account"):
        vote(store, "k1", "a", who="bob")
    with pytest.raises(StoreError, match="already used for another battle"):
        vote(store, "k1", "a", b="gamma")
    assert [(b.id, b.vote, b.annotator) for b in battles(store)] == [(battle_id, "a", "ana")]


def _bad_calls() -> list[tuple[dict, str]]:
    hello = conv(("hello", "hi"))
    return [
        ({"choice": "c"}, "the vote must be one of a, b, tie, both_bad"),
        ({"b": "alpha"}, "two different contenders"),
        ({"b": "<b>"}, "cannot contain"),
        ({"key": ""}, "battle key"),
        ({"key": "x" * 201}, "battle key"),
        ({"conversation_a": []}, "side A: the conversation must be a non-empty list"),
        ({"conversation_b": "hello"}, "side B: the conversation must be a non-empty list"),
        ({"conversation_a": [{"role": "user", "content": "hello"}]}, "ending with an assistant reply"),
        ({"conversation_a": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "hello"}]}, "expected a user message"),
        ({"conversation_a": [*hello, {"role": "assistant", "content": "again"}]}, "ending with an assistant reply"),
        ({"conversation_a": [{"role": "user", "content": ["parts"]}, {"role": "assistant", "content": "x"}]}, "message 1: a message is"),
        ({"conversation_a": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "x"}]}, "expected a user message"),
        ({"conversation_a": conv((" ", "x")), "conversation_b": conv((" ", "y"))}, "the user message is empty"),
        ({"conversation_a": hello}, "user messages differ"),
        ({"conversation_a": conv(("What is 2+2?", "4"), ("and 3+3?", "6"))}, "user messages differ"),
        ({"conversation_a": conv(("What is 2+2?", "4\ud800"))}, "lone surrogate"),
        ({"conversation_b": conv(("What is 2+2?", "x" * 101))}, "the reply has 101 characters"),
        ({"conversation_a": conv(("y" * 60, "4")), "conversation_b": conv(("y" * 60, "4"))}, "the prompt has 60 characters"),
        ({"prompt_source": "file:/etc/passwd"}, "prompt_source must be 'typed' or 'project:NAME'"),
        ({"prompt_source": "project:[x]"}, "cannot contain"),
        ({"sampling": {"a": {}}}, "sampling must be a dict with a dict for each side"),
        ({"lineage": {"a": {}, "b": {"step": math.inf}}}, "lineage cannot be stored as JSON"),
        ({"lineage": {"a": {}, "b": {"x": object()}}}, "lineage cannot be stored as JSON"),
        ({"seconds": -1.0}, "seconds"),
        ({"seconds": math.nan}, "seconds"),
        ({"who": "ghost"}, "no annotator 'ghost'"),
        ({"who": "import"}, "no annotator 'import'"),
        ({"who": "bob"}, "deactivated"),
    ]


def test_refusals_store_nothing(store: Store, people) -> None:
    store.limits = Limits(prompt=50, reply=100)
    import_annotator(store)
    set_active(store, "bob", False)
    for change, message in _bad_calls():  # one store for all: a store costs more than the checks
        with pytest.raises(StoreError, match=message):
            vote(store, **{"key": "k1", **change})
        assert rows(store) == 0, change


def test_extra_message_fields_are_dropped_and_system_messages_may_differ(store: Store, people) -> None:
    side_a = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi", "metadata": {"x": 1}},
        {"role": "assistant", "content": ""},
    ]
    vote(store, "k1", "b", conversation_a=side_a, conversation_b=conv(("Hi", "Hello there!")))
    [b] = battles(store)
    assert b.conversation_a == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": ""},
    ]
    assert b.prompt == "Hi" and b.turns == 1


def test_a_version_4_file_is_upgraded_to_hold_arena_battles(tmp_path: Path) -> None:
    path = tmp_path / "v4.duckdb"
    con = duckdb.connect(str(path))  # a file exactly as version 4 left it
    for migration in MIGRATIONS[:4]:
        for statement in migration.statements:
            con.execute(statement)
    con.execute("INSERT INTO meta VALUES ('schema_version', '4')")
    con.execute("INSERT INTO projects (name) VALUES ('legacy')")
    con.execute("INSERT INTO annotators (name, password_hash) VALUES ('ana', NULL)")
    con.close()
    with Store(path) as store:
        assert store.schema_version() == LATEST_VERSION >= 5
        assert load_settings(store) == ArenaSettings()
        save_settings(store, ArenaSettings(contenders=TWO[:1] + (Contender("beta", "m"),), prompt_project="legacy"))
        assert vote(store, "k1", prompt_source="project:legacy") == (1, True)
        assert battles(store)[0].prompt_source == "project:legacy"


def test_outcomes_pair_counts_and_votes_of(store: Store, people) -> None:
    vote(store, "1", "a", a="beta", b="alpha")
    vote(store, "2", "tie", a="alpha", b="beta")
    vote(store, "3", "both_bad", who="bob", a="gamma", b="alpha")
    vote(store, "4", "b", who="bob", a="beta", b="gamma")
    assert battle_outcomes(store) == [
        ("beta", "alpha", "a"),
        ("alpha", "beta", "tie"),
        ("gamma", "alpha", "both_bad"),
        ("beta", "gamma", "b"),
    ]
    assert pair_counts(store) == {("alpha", "beta"): 2, ("alpha", "gamma"): 1, ("beta", "gamma"): 1}
    assert (votes_of(store, "ana"), votes_of(store, "bob"), votes_of(store, "cy")) == (2, 2, 0)
    assert {v for _, _, v in battle_outcomes(store)} <= set(VOTES)


# -- votes feed training -------------------------------------------------------------------------------
@pytest.fixture
def voted(store: Store, people) -> Store:
    """Five battles: A wins (side A has a system message), B wins, a tie, both bad, and a two-turn A win."""
    vote(store, "1", "a", a="alpha", b="beta", conversation_a=conv(("p1", "a1"), system="Be terse."), conversation_b=conv(("p1", "b1")))
    vote(store, "2", "b", who="bob", a="beta", b="gamma", conversation_a=conv(("p2", "b2")), conversation_b=conv(("p2", "g2")))
    vote(store, "3", "tie", a="alpha", b="gamma", conversation_a=conv(("p3", "a3")), conversation_b=conv(("p3", "g3")))
    vote(store, "4", "both_bad", a="beta", b="alpha", conversation_a=conv(("p4", "b4")), conversation_b=conv(("p4", "a4")))
    vote(
        store,
        "5",
        "a",
        a="delta",
        b="alpha",
        conversation_a=conv(("p5", "d5"), ("more", "d5b")),
        conversation_b=conv(("p5", "a5"), ("more", "a5b")),
        lineage={"a": {"model": "delta"}, "b": {"model": "alpha"}},
    )
    return store


def test_export_makes_exact_pairs_and_a_true_manifest(voted: Store, tmp_path: Path) -> None:
    info = export_preference_pairs(voted, tmp_path / "snaps")
    plain = pq.read_table(info.folder / PLAIN).to_pylist()
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in plain] == [("p1", "a1", "b1"), ("p2", "g2", "b2")]
    assert [(r["chosen_contender"], r["rejected_contender"], r["vote"], r["annotator"]) for r in plain] == [
        ("alpha", "beta", "a", "ana"),
        ("gamma", "beta", "b", "bob"),
    ]
    assert "margin" not in plain[0]
    conversational = pq.read_table(info.folder / CONVERSATIONAL).to_pylist()[0]
    assert conversational["prompt"] == [{"role": "user", "content": "p1"}]  # side A's system message is not the pair's
    assert conversational["chosen"] == [{"role": "assistant", "content": "a1"}]
    assert conversational["rejected"] == [{"role": "assistant", "content": "b1"}]

    manifest = json.loads((info.folder / MANIFEST).read_text())
    assert manifest == verify_snapshot(info.folder) and manifest["id"] == info.id and manifest["source"] == "arena"
    assert manifest["content_hash"] == info.content_hash and manifest["counts"] == info.counts
    assert info.counts == {
        "battles": 5,
        "votes": {"a": 2, "b": 1, "tie": 1, "both_bad": 1},
        "annotators": 2,
        "pairs": 2,
        "tie_pairs": 0,
        "ties_left_out": 1,
        "both_bad_left_out": 1,
        "multi_turn_left_out": 1,
    }
    # only the models whose replies are in the pairs; delta's only battle had two turns
    assert manifest["lineage"] == {"alpha": [{"model": "alpha"}], "beta": [{"model": "beta"}], "gamma": [{"model": "gamma"}]}
    [listed] = list_snapshots(voted)
    assert (listed["id"], listed["pair_strategy"], listed["counts"]["pairs"]) == (info.id, "arena", 2)
    assert Path(listed["folder"]) == info.folder


def test_export_is_read_only_reused_and_readable_by_rlhf(voted: Store, tmp_path: Path) -> None:
    from rlhf.preference_data import read_pairs  # reads files only: no torch

    first = export_preference_pairs(voted, tmp_path)
    again = export_preference_pairs(voted, tmp_path)
    assert again.reused and again.id == first.id and len(list_snapshots(voted)) == 1
    for name in (PLAIN, CONVERSATIONAL, MANIFEST):
        assert oct((first.folder / name).stat().st_mode & 0o777) == "0o444"
    assert [(p.prompt, p.chosen, p.rejected) for p in read_pairs(first.folder)] == [("p1", "a1", "b1"), ("p2", "g2", "b2")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]

    ties = export_preference_pairs(voted, tmp_path, include_ties=True)
    assert not ties.reused and ties.counts["pairs"] == 3 and ties.counts["tie_pairs"] == 1 and ties.counts["ties_left_out"] == 0
    tie_row = pq.read_table(ties.folder / PLAIN).to_pylist()[2]
    assert (tie_row["chosen"], tie_row["rejected"], tie_row["margin"]) == ("a3", "g3", 0.0)
    assert [p.margin for p in read_pairs(ties.folder)] == [1.0, 1.0, 0.0]

    vote(voted, "6", "both_bad", a="alpha", b="beta")  # no new pair, but the counts change: a new snapshot
    newer = export_preference_pairs(voted, tmp_path)
    assert not newer.reused and newer.counts["both_bad_left_out"] == 2
    assert pq.read_table(newer.folder / PLAIN).column("chosen").to_pylist() == ["a1", "g2"]


def test_export_without_pairs_writes_nothing(store: Store, people, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no preference pairs"):
        export_preference_pairs(store, tmp_path / "snaps")
    vote(store, "1", "tie")
    vote(store, "2", "both_bad")
    with pytest.raises(StoreError, match="2 battles make no preference pairs"):
        export_preference_pairs(store, tmp_path / "snaps")
    assert list_snapshots(store) == [] and not (tmp_path / "snaps").exists()
