"""The ranking queue: order, claims, drafts, validation, idempotent submit, concurrency."""

from __future__ import annotations

import threading
import uuid

import pytest

from annotations.accounts import set_active
from annotations.queue import (
    UNDO_WINDOW,
    next_prompt,
    overview,
    progress,
    save_draft,
    served_prompt,
    skip_prompt,
    submit_ranking,
    undo_last,
    validate_ranks,
)
from annotations.store import PromptRecord, ReplyRecord, Store, StoreError
from tests.annotations.conftest import fill_project


def _rank_all(store: Store, pid: int, who: int, order=None) -> int:
    item = next_prompt(store, pid, who)
    ranks = {r.id: (order[n] if order else n + 1) for n, r in enumerate(item.replies)}
    submit_ranking(store, who, item.prompt.id, ranks, key=str(uuid.uuid4()))
    return item.prompt.id


def test_queue_needs_k_replies(store: Store, people) -> None:
    pid = store.create_project("p", k=2)
    [a, b] = store.add_prompts(pid, [PromptRecord("a"), PromptRecord("b")])
    store.add_replies(a, [ReplyRecord("only one")])
    assert next_prompt(store, pid, people["ana"]) is None
    store.add_replies(b, [ReplyRecord("x"), ReplyRecord("y"), ReplyRecord("z")])
    item = next_prompt(store, pid, people["ana"])
    assert item.prompt.id == b and len(item.replies) == 2  # the first k replies
    assert store.prompts_needing_replies(pid) == [(a, 1)]


def test_never_the_same_prompt_twice_and_nearest_completion_first(store: Store, project: int, people) -> None:
    ana, bob = people["ana"], people["bob"]
    seen = [_rank_all(store, project, ana) for _ in range(3)]
    assert len(set(seen)) == 3 and next_prompt(store, project, ana) is None
    # bob gets prompts ana has started (one more ranking completes them), oldest first
    first_for_bob = next_prompt(store, project, bob)
    assert first_for_bob.prompt.id == seen[0]


def test_claims_spread_annotators_over_open_slots(store: Store, people) -> None:
    pid = fill_project(store, "solo", prompts=2, min_submitted=1)
    a = next_prompt(store, pid, people["ana"])
    b = next_prompt(store, pid, people["bob"])
    assert a.prompt.id != b.prompt.id
    assert next_prompt(store, pid, people["cy"]) is None  # both open slots are claimed


def test_draft_survives_a_reload(store: Store, project: int, people) -> None:
    ana = people["ana"]
    item = next_prompt(store, project, ana)
    save_draft(store, ana, item.prompt.id, {item.replies[0].id: 2, item.replies[1].id: 1}, rationale="half done")
    again = next_prompt(store, project, ana)
    assert again.prompt.id == item.prompt.id
    assert again.draft_ranks == {item.replies[0].id: 2, item.replies[1].id: 1} and again.draft_rationale == "half done"


@pytest.mark.parametrize(
    "ranks, message",
    [
        ({0: 1, 1: 2}, "reply 3 has no rank"),
        ({0: 1, 1: 2, 2: 4}, "ranks are whole numbers from 1"),
        ({0: 1, 1: 2, 2: 0}, "ranks are whole numbers from 1"),
        ({0: 1, 1: 2, 2: 1.5}, "ranks are whole numbers"),
        ({0: 1, 1: 2, 2: "x"}, "invalid"),
        ({0: 1, 1: 2, 2: True}, "invalid"),
        ({0: 1, 1: 2, 2: 3, 999: 1}, "not one of this prompt's replies"),
    ],
)
def test_invalid_rankings_change_nothing(store: Store, project: int, people, ranks, message) -> None:
    ana = people["ana"]
    item = next_prompt(store, project, ana)
    ids = [r.id for r in item.replies] + [999999]
    mapped = {ids[k] if k != 999 else 999999: v for k, v in ranks.items()}
    before = store.query("SELECT * FROM rankings ORDER BY id")
    with pytest.raises(StoreError, match=message):
        submit_ranking(store, ana, item.prompt.id, mapped, key="k")
    assert store.query("SELECT * FROM rankings ORDER BY id") == before


def test_ties_are_kept_and_ranks_compacted(store: Store, project: int, people) -> None:
    item = next_prompt(store, project, people["ana"])
    a, b, c = (r.id for r in item.replies)
    assert validate_ranks({a: 1, b: 1, c: 3}, item.replies) == {a: 1, b: 1, c: 2}
    submit_ranking(store, people["ana"], item.prompt.id, {a: 2, b: 2, c: 3})
    [(ranks,)] = store.query("SELECT ranks FROM rankings WHERE status = 'submitted'")
    assert ranks == f'{{"{a}": 1, "{b}": 1, "{c}": 2}}'


def test_double_submit_stores_one_ranking(store: Store, project: int, people) -> None:
    ana = people["ana"]
    item = next_prompt(store, project, ana)
    ranks = {r.id: n for n, r in enumerate(item.replies, 1)}
    first = submit_ranking(store, ana, item.prompt.id, ranks, key="click-1")
    second = submit_ranking(store, ana, item.prompt.id, ranks, key="click-1")
    assert first.ranking_id == second.ranking_id and not first.duplicate and second.duplicate
    with pytest.raises(StoreError, match="already submitted"):
        submit_ranking(store, ana, item.prompt.id, ranks, key="click-2")
    with pytest.raises(StoreError, match="already used for another prompt"):
        submit_ranking(store, ana, item.prompt.id + 1, ranks, key="click-1")
    assert store.query("SELECT count(*) FROM rankings WHERE status = 'submitted'")[0][0] == 1


def test_skip_needs_a_reason_and_removes_the_prompt(store: Store, project: int, people) -> None:
    ana = people["ana"]
    item = next_prompt(store, project, ana)
    with pytest.raises(StoreError, match="say why"):
        skip_prompt(store, ana, item.prompt.id, "  ")
    skip_prompt(store, ana, item.prompt.id, "replies are unreadable")
    assert next_prompt(store, project, ana).prompt.id != item.prompt.id
    assert progress(store, project, ana).done == 1


def test_progress_counts(store: Store, project: int, people) -> None:
    ana, bob = people["ana"], people["bob"]
    assert progress(store, project, ana).left == 3
    for who in (ana, bob):
        _rank_all(store, project, who)
    p = progress(store, project, ana)
    assert (p.ranked, p.skipped, p.done, p.left, p.held, p.prompts, p.complete) == (1, 0, 1, 2, 0, 3, 1)


def test_deactivated_annotator_cannot_rank(store: Store, project: int, people) -> None:
    set_active(store, "ana", False)
    with pytest.raises(StoreError, match="deactivated"):
        next_prompt(store, project, people["ana"])


def test_eight_threads_two_hundred_submissions_each(store: Store) -> None:
    from annotations.accounts import add_annotator

    pid = fill_project(store, "load", prompts=200, k=2, min_submitted=8)
    workers = [add_annotator(store, f"w{i}", "correct-horse") for i in range(8)]
    acknowledged: list[list[int]] = [[] for _ in workers]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(200):
                item = next_prompt(store, pid, workers[n])
                ranks = {item.replies[0].id: 1, item.replies[1].id: 2}
                key = str(uuid.uuid4())
                sub = submit_ranking(store, workers[n], item.prompt.id, ranks, key=key)
                submit_ranking(store, workers[n], item.prompt.id, ranks, key=key)  # a double click
                acknowledged[n].append(sub.ranking_id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stored = store.query("SELECT annotator_id, prompt_id FROM rankings WHERE status = 'submitted'")
    assert len(stored) == sum(map(len, acknowledged)) == 1600  # nothing lost, nothing doubled
    assert len(set(stored)) == 1600  # one ranking per prompt and annotator


# -- honest progress, the home view -----------------------------------------------------------------
def test_progress_tells_skipped_from_ranked_and_counts_what_others_hold(store: Store, people) -> None:
    ana, bob, cy = people["ana"], people["bob"], people["cy"]
    pid = fill_project(store, "p", prompts=4, min_submitted=1)
    _rank_all(store, pid, ana)
    held = next_prompt(store, pid, bob)  # bob's live claim takes the second prompt's only open slot
    item = next_prompt(store, pid, ana)
    assert item.prompt.id != held.prompt.id
    skip_prompt(store, ana, item.prompt.id, "unclear")
    p = progress(store, pid, ana)
    assert (p.ranked, p.skipped, p.left, p.held, p.prompts, p.complete) == (1, 1, 1, 1, 4, 1)
    assert progress(store, pid, cy).held == 1 and (progress(store, pid, bob).held, progress(store, pid, bob).left) == (0, 3)
    assert next_prompt(store, pid, ana, claim=False) is not None and progress(store, pid, ana).left == 1


def test_progress_counts_my_draft_as_left_and_an_expired_claim_as_free(store: Store, people) -> None:
    ana, bob = people["ana"], people["bob"]
    pid = fill_project(store, "p", prompts=1, min_submitted=1)
    item = next_prompt(store, pid, ana)
    assert progress(store, pid, ana).left == 1 and progress(store, pid, bob).held == 1
    store.query("UPDATE rankings SET updated = updated - INTERVAL 2 HOUR WHERE prompt_id = ?", [item.prompt.id])
    assert (progress(store, pid, bob).left, progress(store, pid, bob).held) == (1, 0)


def test_overview_lists_every_project_with_work_first(store: Store, people) -> None:
    ana, bob = people["ana"], people["bob"]
    empty = store.create_project("aardvark-empty", k=2)  # no replies yet: nothing to rank
    store.add_prompts(empty, [PromptRecord("no replies yet")])
    done = fill_project(store, "b-done", prompts=1, min_submitted=1)
    _rank_all(store, done, ana)
    work = fill_project(store, "c-work", prompts=2, min_submitted=1)
    rows = overview(store, ana)
    assert [w.project.name for w in rows] == ["c-work", "aardvark-empty", "b-done"]
    assert [(w.has_work, w.progress.left, w.progress.ranked) for w in rows] == [(True, 2, 0), (False, 0, 0), (False, 0, 1)]
    assert rows[0].project.id == work and rows[1].progress.prompts == 1
    assert store.query("SELECT count(*) FROM rankings WHERE annotator_id = ?", [bob])[0][0] == 0
    overview(store, bob)  # reading the home view claims nothing
    assert store.query("SELECT count(*) FROM rankings WHERE annotator_id = ?", [bob])[0][0] == 0


# -- undo ---------------------------------------------------------------------------------------------
def test_undo_turns_the_last_submission_back_into_a_draft(store: Store, project: int, people) -> None:
    ana = people["ana"]
    first = _rank_all(store, project, ana, order=[2, 1, 3])
    item = next_prompt(store, project, ana)
    ranks = {r.id: n for n, r in enumerate(item.replies, 1)}
    submit_ranking(store, ana, item.prompt.id, ranks, rationale="A is best", key="k2", served_in=project)
    undone = undo_last(store, ana, project)
    assert undone.was == "submitted" and undone.item.prompt.id == item.prompt.id
    assert undone.item.draft_ranks == ranks and undone.item.draft_rationale == "A is best"
    assert progress(store, project, ana).ranked == 1
    assert next_prompt(store, project, ana).prompt.id == item.prompt.id  # it is served again, first
    again = undo_last(store, ana, project)  # a double click: the same draft, nothing else taken back
    assert again.was is None and again.item.prompt.id == item.prompt.id
    assert store.query("SELECT status FROM rankings WHERE prompt_id = ? AND annotator_id = ?", [first, ana])[0][0] == "submitted"
    # submitting it again works, with a fresh key, and then it can be undone again
    resubmitted = submit_ranking(store, ana, item.prompt.id, {**ranks, item.replies[2].id: 1}, key="k3", served_in=project)
    assert not resubmitted.duplicate and progress(store, project, ana).ranked == 2
    assert undo_last(store, ana, project).was == "submitted"


def test_undo_a_skip_keeps_the_draft_ranks(store: Store, project: int, people) -> None:
    ana = people["ana"]
    item = next_prompt(store, project, ana)
    save_draft(store, ana, item.prompt.id, {item.replies[0].id: 1}, "half")
    skip_prompt(store, ana, item.prompt.id, "unsure", served_in=project)
    undone = undo_last(store, ana, project)
    assert undone.was == "skipped" and undone.item.draft_ranks == {item.replies[0].id: 1} and undone.item.draft_rationale == "half"
    assert store.query("SELECT skip_reason FROM rankings WHERE prompt_id = ? AND annotator_id = ?", [item.prompt.id, ana]) == [("",)]
    assert progress(store, project, ana).skipped == 0


def test_undo_is_refused_after_the_window_and_with_nothing_to_undo(store: Store, project: int, people) -> None:
    ana = people["ana"]
    with pytest.raises(StoreError, match="nothing to undo"):
        undo_last(store, ana, project)
    _rank_all(store, project, ana)
    minutes = int(UNDO_WINDOW.total_seconds() // 60) + 1
    store.query(f"UPDATE rankings SET submitted = submitted - INTERVAL {minutes} MINUTE WHERE annotator_id = ?", [ana])
    before = store.query("SELECT * FROM rankings ORDER BY id")
    with pytest.raises(StoreError, match="only the last 5 minutes can be undone"):
        undo_last(store, ana, project)
    assert store.query("SELECT * FROM rankings ORDER BY id") == before


# -- one annotator's data is theirs alone ---------------------------------------------------------------
def test_another_annotator_cannot_read_change_or_undo_my_work(store: Store, people) -> None:
    ana, bob = people["ana"], people["bob"]
    pid = fill_project(store, "p", prompts=3, min_submitted=2)
    item = next_prompt(store, pid, ana)
    a, b, c = (r.id for r in item.replies)
    save_draft(store, ana, item.prompt.id, {a: 1}, "ana's secret thoughts", served_in=pid)
    ana_rows = lambda: store.query("SELECT * FROM rankings WHERE annotator_id = ? ORDER BY id", [ana])  # noqa: E731
    before = ana_rows()

    # bob is served the same prompt (a second slot) but never sees ana's draft
    bobs = next_prompt(store, pid, bob)
    assert bobs.prompt.id == item.prompt.id and bobs.draft_ranks == {} and bobs.draft_rationale == ""
    assert served_prompt(store, bob, pid, item.prompt.id).draft_rationale == ""
    save_draft(store, bob, item.prompt.id, {a: 3}, "bob's", served_in=pid)  # his own row, not ana's
    assert ana_rows() == before
    assert served_prompt(store, ana, pid, item.prompt.id).draft_rationale == "ana's secret thoughts"

    # a prompt bob was never served: no reading, drafting, submitting or skipping it
    other = next_prompt(store, pid, people["cy"])  # the first prompt's two slots are taken: cy gets the second
    assert other.prompt.id != item.prompt.id
    for call in (
        lambda: served_prompt(store, bob, pid, other.prompt.id),
        lambda: save_draft(store, bob, other.prompt.id, {}, "x", served_in=pid),
        lambda: submit_ranking(store, bob, other.prompt.id, {r.id: 1 for r in other.replies}, served_in=pid),
        lambda: skip_prompt(store, bob, other.prompt.id, "nope", served_in=pid),
    ):
        with pytest.raises(StoreError, match="not given to you"):
            call()
    # a prompt of another project, claimed under this one's id
    elsewhere = fill_project(store, "other", prompts=1, min_submitted=1)
    foreign = next_prompt(store, elsewhere, bob)
    with pytest.raises(StoreError, match="not given to you"):
        submit_ranking(store, bob, foreign.prompt.id, {r.id: 1 for r in foreign.replies}, served_in=pid)
    # reply ids of another prompt
    with pytest.raises(StoreError, match="not one of this prompt's replies"):
        submit_ranking(store, bob, item.prompt.id, {r.id: 1 for r in foreign.replies}, served_in=pid)

    submit_ranking(store, ana, item.prompt.id, {a: 1, b: 2, c: 3}, rationale="mine", key="ana-1", served_in=pid)
    before = ana_rows()
    with pytest.raises(StoreError, match="nothing to undo"):
        undo_last(store, bob, pid)
    with pytest.raises(StoreError, match="already used for another prompt"):
        submit_ranking(store, bob, item.prompt.id, {a: 1, b: 2, c: 3}, key="ana-1", served_in=pid)
    assert ana_rows() == before


def test_rationale_and_skip_reason_over_the_limit_store_nothing(store: Store, project: int, people, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_MAX_RATIONALE_CHARS", "20")
    ana = people["ana"]
    item = next_prompt(store, project, ana)
    ranks = {r.id: n for n, r in enumerate(item.replies, 1)}
    before = store.query("SELECT * FROM rankings ORDER BY id")
    with pytest.raises(StoreError, match="more than the limit of 20"):
        submit_ranking(store, ana, item.prompt.id, ranks, rationale="x" * 21, served_in=project)
    with pytest.raises(StoreError, match="more than the limit of 20"):
        save_draft(store, ana, item.prompt.id, ranks, rationale="x" * 21, served_in=project)
    with pytest.raises(StoreError, match="skip reason.*more than the limit of 20"):
        skip_prompt(store, ana, item.prompt.id, "y" * 21, served_in=project)
    assert store.query("SELECT * FROM rankings ORDER BY id") == before
    submit_ranking(store, ana, item.prompt.id, ranks, rationale="x" * 20, served_in=project)  # at the limit is fine
