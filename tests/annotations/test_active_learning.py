"""Active learning in the store: a project's queue order and its prompts' uncertainty figures.

With 'uncertain first' the queue serves an annotator's own draft, then the scored prompts with
the highest uncertainty, then the unscored ones in the default order; every other rule of the
queue stays. Only admins change the order or write figures, and a bad batch changes nothing.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import duckdb
import pytest

from annotations.accounts import add_annotator, set_active
from annotations.queue import (
    QUEUE_ORDERS,
    next_prompt,
    open_prompts,
    queue_settings,
    save_draft,
    set_queue_order,
    skip_prompt,
    submit_ranking,
    undo_last,
    write_uncertainties,
)
from annotations.schema import LATEST_VERSION, MIGRATIONS
from annotations.store import PromptRecord, ReplyRecord, Store, StoreError
from tests.annotations.conftest import fill_project


@pytest.fixture
def admin(store: Store) -> int:
    return add_annotator(store, "root", "correct-horse", role="admin")


def _ids(store: Store, pid: int) -> list[int]:
    return [p.id for p in store.prompts(pid)]


def _submit(store: Store, who: int, pid: int) -> int:
    """Take the next prompt and rank it; returns its id."""
    item = next_prompt(store, pid, who)
    submit_ranking(store, who, item.prompt.id, {r.id: n for n, r in enumerate(item.replies, 1)}, key=str(uuid.uuid4()), served_in=pid)
    return item.prompt.id


def _order_served(store: Store, pid: int, who: int) -> list[int]:
    served = []
    while next_prompt(store, pid, who, claim=False) is not None:
        served.append(_submit(store, who, pid))
    return served


def _figures(store: Store, pid: int) -> dict[int, float | None]:
    return dict(store.query("SELECT id, uncertainty FROM prompts WHERE project_id = ? ORDER BY id", [pid]))


def test_uncertain_first_serves_the_highest_figures_then_the_unscored_in_the_old_order(store: Store, people, admin: int) -> None:
    pid = fill_project(store, "al", prompts=6, k=2, min_submitted=1)
    p = _ids(store, pid)
    set_queue_order(store, pid, "uncertain first", by=admin)
    assert write_uncertainties(store, pid, {p[1]: 0.2, p[4]: 0.6, p[2]: 0.4}, model="rm", by=admin) == 3
    assert _order_served(store, pid, people["ana"]) == [p[4], p[2], p[1], p[0], p[3], p[5]]


def test_unscored_prompts_keep_nearest_completion_first(store: Store, people, admin: int) -> None:
    pid = fill_project(store, "al", prompts=4, k=2, min_submitted=2)
    p = _ids(store, pid)
    # bob ranks p[0]: one more ranking completes it, so it leads the unscored prompts (not p[0] by age alone)
    _submit(store, people["bob"], pid)
    set_queue_order(store, pid, "uncertain first", by=admin)
    write_uncertainties(store, pid, {p[3]: 0.5}, model="rm", by=admin)
    assert _order_served(store, pid, people["ana"])[:2] == [p[3], p[0]]


def test_the_default_order_ignores_the_figures(store: Store, people, admin: int) -> None:
    pid = fill_project(store, "al", prompts=4, k=2, min_submitted=1)
    p = _ids(store, pid)
    write_uncertainties(store, pid, {p[3]: 0.9, p[2]: 0.5}, model="rm", by=admin)
    assert queue_settings(store, pid).order == "default"
    assert next_prompt(store, pid, people["ana"], claim=False).prompt.id == p[0]
    set_queue_order(store, pid, "uncertain first", by=admin)
    assert next_prompt(store, pid, people["ana"], claim=False).prompt.id == p[3]
    set_queue_order(store, pid, "default", by=admin)  # off again: the old order, figures kept
    assert next_prompt(store, pid, people["ana"], claim=False).prompt.id == p[0]
    assert _figures(store, pid)[p[3]] == pytest.approx(0.9)
    assert _order_served(store, pid, people["ana"]) == p


def test_an_annotators_own_draft_still_comes_first(store: Store, people, admin: int) -> None:
    pid = fill_project(store, "al", prompts=3, k=2, min_submitted=1)
    p = _ids(store, pid)
    ana = people["ana"]
    item = next_prompt(store, pid, ana)
    assert item.prompt.id == p[0]
    save_draft(store, ana, p[0], {item.replies[0].id: 1}, served_in=pid)
    set_queue_order(store, pid, "uncertain first", by=admin)
    write_uncertainties(store, pid, {p[2]: 0.7}, model="rm", by=admin)
    assert next_prompt(store, pid, ana).prompt.id == p[0]
    assert _order_served(store, pid, ana) == [p[0], p[2], p[1]]


def test_claims_skips_and_undo_work_as_before(store: Store, people, admin: int) -> None:
    pid = fill_project(store, "al", prompts=3, k=2, min_submitted=1)
    p = _ids(store, pid)
    set_queue_order(store, pid, "uncertain first", by=admin)
    write_uncertainties(store, pid, {p[1]: 0.9, p[2]: 0.3}, model="rm", by=admin)
    ana, bob, cy = people["ana"], people["bob"], people["cy"]
    assert next_prompt(store, pid, ana).prompt.id == p[1]  # ana claims the most uncertain prompt
    assert next_prompt(store, pid, bob).prompt.id == p[2]  # so bob gets the next one, not the claimed slot
    assert next_prompt(store, pid, cy).prompt.id == p[0]
    skip_prompt(store, bob, p[2], "unclear", served_in=pid)
    assert next_prompt(store, pid, bob, claim=False) is None  # nothing left for bob: p[1], p[0] are claimed
    undone = undo_last(store, bob, pid)
    assert undone.was == "skipped" and next_prompt(store, pid, bob).prompt.id == p[2]  # the taken-back draft first


def test_prompts_without_k_replies_are_not_served_even_when_scored(store: Store, people, admin: int) -> None:
    pid = store.create_project("al", k=2)
    a, b = store.add_prompts(pid, [PromptRecord("a"), PromptRecord("b")])
    store.add_replies(a, [ReplyRecord("one")])
    store.add_replies(b, [ReplyRecord("x"), ReplyRecord("y")])
    set_queue_order(store, pid, "uncertain first", by=admin)
    write_uncertainties(store, pid, {a: 0.9, b: 0.1}, model="rm", by=admin)
    assert next_prompt(store, pid, people["ana"]).prompt.id == b


def test_open_prompts_are_the_ones_the_queue_still_serves(store: Store, people, admin: int) -> None:
    pid = fill_project(store, "al", prompts=3, k=2, min_submitted=1)
    p = _ids(store, pid)
    store.add_replies(p[1], [ReplyRecord("a third reply, not shown")])
    [extra] = store.add_prompts(pid, [PromptRecord("no replies yet")])
    done = _submit(store, people["ana"], pid)
    assert done == p[0]
    assert open_prompts(store, pid) == [
        (p[1], "question 1", [f"answer {p[1]}.0", f"answer {p[1]}.1"]),
        (p[2], "question 2", [f"answer {p[2]}.0", f"answer {p[2]}.1"]),
    ]
    assert extra not in [o[0] for o in open_prompts(store, pid)]
    write_uncertainties(store, pid, {p[1]: 0.5, p[0]: 0.1}, model="rm", by=admin)
    s = queue_settings(store, pid)
    assert (s.order, s.model, s.prompts, s.scored, s.open, s.open_scored) == ("default", "rm", 4, 2, 2, 1)
    assert s.last_scored is not None


def test_bad_orders_and_non_admins_are_refused(store: Store, people, admin: int) -> None:
    pid = fill_project(store, "al", prompts=2, k=2)
    assert QUEUE_ORDERS == ("default", "uncertain first")
    for bad in ("uncertain", "Uncertain First", "", "random; DROP TABLE prompts"):
        with pytest.raises(StoreError, match="queue order must be one of"):
            set_queue_order(store, pid, bad, by=admin)
    with pytest.raises(StoreError, match="only an active admin"):
        set_queue_order(store, pid, "uncertain first", by=people["ana"])
    with pytest.raises(StoreError, match="no project"):
        set_queue_order(store, 999, "uncertain first", by=admin)
    add_annotator(store, "old-admin", "correct-horse", role="admin")
    old = store.query("SELECT id FROM annotators WHERE name = 'old-admin'")[0][0]
    set_active(store, "old-admin", False)
    with pytest.raises(StoreError, match="only an active admin"):
        set_queue_order(store, pid, "uncertain first", by=old)
    assert queue_settings(store, pid).order == "default"


def test_a_bad_batch_changes_nothing(store: Store, people, admin: int) -> None:
    pid = fill_project(store, "al", prompts=3, k=2)
    other = fill_project(store, "other", prompts=2, k=2)
    p, q = _ids(store, pid), _ids(store, other)
    write_uncertainties(store, pid, {p[0]: 0.3}, model="rm", by=admin)
    before = (_figures(store, pid), _figures(store, other), queue_settings(store, pid))
    bad_batches = [
        ({p[1]: 0.5, q[0]: 0.9}, "rm", admin, "not prompts of the project 'al'"),
        ({p[1]: 0.5, 12345: 0.9}, "rm", admin, "not prompts of the project"),
        ({p[1]: 0.5}, "rm-new", people["ana"], "only an active admin"),
        ({p[1]: math.nan}, "rm", admin, "finite number"),
        ({p[1]: math.inf}, "rm", admin, "finite number"),
        ({p[1]: "0.5"}, "rm", admin, "finite number"),
        ({p[1]: True}, "rm", admin, "finite number"),
        ({"7": 0.5}, "rm", admin, "not a prompt id"),
        ({}, "rm", admin, "no uncertainty figures"),
        ({p[1]: 0.5}, "", admin, "needs a name"),
        ({p[1]: 0.5}, "<img src=x>", admin, "cannot contain"),
    ]
    for values, model, by, message in bad_batches:
        with pytest.raises(StoreError, match=message):
            write_uncertainties(store, pid, values, model=model, by=by)
        assert (_figures(store, pid), _figures(store, other), queue_settings(store, pid)) == before
    with pytest.raises(StoreError, match="no project"):
        write_uncertainties(store, 999, {p[1]: 0.5}, model="rm", by=admin)


def test_a_batch_from_another_model_replaces_the_old_figures(store: Store, admin: int) -> None:
    pid = fill_project(store, "al", prompts=3, k=2)
    p = _ids(store, pid)
    write_uncertainties(store, pid, {p[0]: 0.3, p[1]: 0.2}, model="rm-a", by=admin)
    write_uncertainties(store, pid, {p[2]: 0.1}, model="rm-a", by=admin)  # the same model adds to its figures
    assert _figures(store, pid) == {p[0]: 0.3, p[1]: 0.2, p[2]: 0.1}
    write_uncertainties(store, pid, {p[1]: 0.6}, model="rm-b", by=admin)
    assert _figures(store, pid) == {p[0]: None, p[1]: 0.6, p[2]: None}
    assert queue_settings(store, pid).model == "rm-b"


def test_a_version_5_file_is_upgraded_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v5.duckdb"
    previous = 5  # the version before active learning's migration (6)
    assert MIGRATIONS[previous - 1].version == previous == 5
    con = duckdb.connect(str(path))  # a file exactly as version 5 left it
    for migration in MIGRATIONS[:previous]:
        for statement in migration.statements:
            con.execute(statement)
    con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(previous)])
    con.execute("INSERT INTO projects (name, k, min_submitted) VALUES ('legacy', 2, 1)")
    con.execute("INSERT INTO prompts (project_id, text) VALUES (1, 'old one'), (1, 'old two')")
    con.execute("INSERT INTO replies (prompt_id, text) VALUES (1, 'a'), (1, 'b'), (2, 'c'), (2, 'd')")
    con.execute("INSERT INTO annotators (name, role) VALUES ('ana', 'annotator'), ('root', 'admin')")
    con.execute("INSERT INTO rankings (prompt_id, annotator_id, status, ranks) VALUES (1, 1, 'submitted', '{\"1\": 1, \"2\": 2}')")
    con.close()
    with Store(path) as store:
        assert store.schema_version() == LATEST_VERSION
        assert [p.text for p in store.prompts(1)] == ["old one", "old two"]
        assert store.query("SELECT status FROM rankings") == [("submitted",)]
        s = queue_settings(store, 1)
        assert (s.order, s.model, s.prompts, s.scored, s.open) == ("default", None, 2, 0, 1)
        assert next_prompt(store, 1, 1, claim=False).prompt.id == 2  # ana ranked prompt 1 before the upgrade
        [(root,)] = store.query("SELECT id FROM annotators WHERE name = 'root'")
        set_queue_order(store, 1, "uncertain first", by=root)
        write_uncertainties(store, 1, {2: 0.4}, model="rm", by=root)
        assert queue_settings(store, 1).order == "uncertain first"
    with Store(path) as store:  # the upgrade ran once; the new columns keep their values
        assert store.schema_version() == LATEST_VERSION and queue_settings(store, 1).open_scored == 1
