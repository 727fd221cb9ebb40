"""The ranking queue: order, claims, drafts, validation, idempotent submit, concurrency."""

from __future__ import annotations

import threading
import uuid

import pytest

from annotations.accounts import set_active
from annotations.queue import next_prompt, progress, save_draft, skip_prompt, submit_ranking, validate_ranks
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
    assert (p.done, p.left, p.prompts, p.complete) == (1, 2, 3, 1)


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
