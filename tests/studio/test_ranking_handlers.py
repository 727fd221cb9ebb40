"""The ranking screen's handlers, without a browser: the plain handlers and the wired events."""

from __future__ import annotations

import inspect
import json
import warnings

import gradio as gr
import pytest

from annotations.accounts import add_annotator
from annotations.queue import UNDO_WINDOW
from studio import ranking
from studio.context import StudioContext
from tests.studio.conftest import as_user, fill

ANA = as_user("ana")
BOB = as_user("bob")
BOSS = as_user("boss")


def _count(ctx: StudioContext, status: str) -> int:
    return ctx.store.query("SELECT count(*) FROM rankings WHERE status = ?", [status])[0][0]


def _rows(ctx: StudioContext) -> list[tuple]:
    return ctx.store.query("SELECT * FROM rankings ORDER BY id")


def _warned(call, match: str):
    """Run ``call``: it must warn (a toast) with ``match`` and return None (the screen unchanged)."""
    with pytest.warns(UserWarning, match=match):
        result = call()
    assert result is None
    return result


# -- the wired screen ----------------------------------------------------------------------------------
def _events(ctx: StudioContext) -> list:
    """The screen's events that run Python (the focus steps run only JavaScript)."""
    return [f for f in ranking.build(ctx).fns.values() if f.fn is not None]


def _key(component) -> str:
    return "state" if isinstance(component, gr.State) else component.elem_id or ""


def _call(event, values: dict, request=ANA):
    """Call an event's function as Gradio would: its inputs (a dict for a set of inputs) and the request."""
    given = {c: values.get(_key(c), c.value) for c in event.inputs}
    args = [given] if event.inputs_as_dict else list(given.values())
    kwargs = {"request": request} if "request" in inspect.signature(event.fn).parameters else {}
    return event.fn(*args, **kwargs)


def _out(event, result, elem_id: str):
    return result[[_key(c) for c in event.outputs].index(elem_id)]


def _named(events: list, name: str):
    return next(e for e in events if e.fn.__name__ == name)


def test_every_event_returns_one_value_per_output(ctx: StudioContext) -> None:
    fill(ctx)
    fill(ctx, "duel", k=2)
    events = _events(ctx)
    assert len(events) > 15
    state = ranking.open_project(ctx, "p", ANA).state
    filled = {"state": state, "rank-project": "p", "rank-home-list": "p", "rank-0": "1", "rank-1": "2", "rank-2": "3", "skip-reason": "x"}
    for values in ({"state": state, "rank-project": "p", "rank-home-list": "p"}, filled, {}):  # refusals, success, no state
        for event in events:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = _call(event, values)
            if len(event.outputs) > 1 and not isinstance(result, dict):
                assert isinstance(result, list | tuple), event.fn.__name__
                assert len(result) == len(event.outputs), f"{event.fn.__name__}: {len(result)} values for {len(event.outputs)} outputs"


def test_every_event_asks_for_a_login_first(ctx: StudioContext) -> None:
    fill(ctx)
    state = ranking.open_project(ctx, "p", ANA).state
    for event in _events(ctx):
        for who in (None, as_user("ghost")):
            with pytest.raises(gr.Error, match="Log in|no longer exists"):
                _call(event, {"state": state, "rank-project": "p", "rank-0": "1"}, request=who)


def test_an_incomplete_ranking_warns_and_leaves_the_screen_as_it_is(ctx: StudioContext) -> None:
    fill(ctx)
    events = _events(ctx)
    state = ranking.open_project(ctx, "p", ANA).state
    before = _rows(ctx)
    on_submit = _named(events, "on_submit")
    with pytest.warns(UserWarning, match="rank every reply before submitting: reply 2 has no rank"):
        result = _call(on_submit, {"state": state, "rank-0": "1", "rank-2": "2"})
    # Every output skipped: no "Error" painted over the replies, nothing blocked.
    assert len(result) == len(on_submit.outputs) and all(u == {"__type__": "update"} for u in result)
    assert _rows(ctx) == before
    result = _call(on_submit, {"state": state, "rank-0": "1", "rank-1": "3", "rank-2": "2"})  # fixed: it goes through
    assert _count(ctx, "submitted") == 1 and _out(on_submit, result, "rank-status") == "Saved."


def test_a_stale_draft_note_does_not_follow_to_the_next_prompt(ctx: StudioContext) -> None:
    fill(ctx)
    events = _events(ctx)
    state = ranking.open_project(ctx, "p", ANA).state
    assert _call(_named(events, "on_draft"), {"state": state, "rank-0": "2"}) == "Draft saved."
    result = _call(_named(events, "on_submit"), {"state": state, "rank-0": "2", "rank-1": "1", "rank-2": "3"})
    assert _out(_named(events, "on_submit"), result, "state")["prompt_id"] != state["prompt_id"]
    for event in events:  # every event that shows a prompt clears the note
        if "rank-draft" in [_key(c) for c in event.outputs] and len(event.outputs) > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                shown = _call(event, {"state": _out(_named(events, "on_submit"), result, "state"), "rank-project": "p"})
            assert _out(event, shown, "rank-draft") in ("", {"__type__": "update"}), event.fn.__name__


def test_open_shows_the_prompt_and_rendered_replies(ctx: StudioContext) -> None:
    fill(ctx)
    view = ranking.open_project(ctx, "p", ANA)
    assert view.mode == "ranking" and len(view.replies) == 3 and "<p>Be fair.</p>" in view.guidelines
    assert "&lt;b&gt;bold&lt;/b&gt;" in view.replies[0] and "<b>" not in view.replies[0] and "Reply A" in view.replies[0]
    assert "question 0" in view.conversation and view.project == "p"
    assert view.progress.startswith("**0** ranked · **0** skipped · **2** left for you · **0** held by others")


def test_submit_then_next_and_double_click(ctx: StudioContext) -> None:
    fill(ctx)
    view = ranking.open_project(ctx, "p", ANA)
    nxt = ranking.submit(ctx, view.state, ["2", "1", "3"], "B is clearer", ANA)
    assert nxt.status == "Saved." and nxt.state["prompt_id"] != view.state["prompt_id"]
    again = ranking.submit(ctx, view.state, ["2", "1", "3"], "B is clearer", ANA)  # the same click twice
    assert again.status.startswith("Already saved") and _count(ctx, "submitted") == 1


def test_invalid_input_warns_and_changes_nothing(ctx: StudioContext) -> None:
    fill(ctx)
    view = ranking.open_project(ctx, "p", ANA)
    before = _rows(ctx)
    _warned(lambda: ranking.submit(ctx, view.state, ["1", None, "2"], "", ANA), "rank every reply")
    _warned(lambda: ranking.submit(ctx, view.state, ["1", "9", "2"], "", ANA), "ranks are whole numbers from 1")
    _warned(lambda: ranking.submit(ctx, view.state, ["1", "x", "2"], "", ANA), "invalid")
    _warned(lambda: ranking.submit(ctx, None, ["1"], "", ANA), "There is no prompt")
    _warned(lambda: ranking.submit(ctx, {"project_id": "one", "prompt_id": []}, ["1"], "", ANA), "out of date")
    _warned(lambda: ranking.pairwise(ctx, view.state, "A", "", ANA), "This project ranks its replies")
    assert _rows(ctx) == before


def test_draft_comes_back_after_a_reload(ctx: StudioContext) -> None:
    fill(ctx)
    view = ranking.open_project(ctx, "p", ANA)
    assert ranking.keep_draft(ctx, view.state, ["3", None, None], "thinking", ANA) == "Draft saved."
    reloaded = ranking.open_project(ctx, "p", ANA)
    assert reloaded.state["prompt_id"] == view.state["prompt_id"]
    assert reloaded.ranks == [3, None, None] and reloaded.rationale == "thinking"
    ranking.submit(ctx, view.state, ["3", "1", "2"], "thinking", ANA)
    # the rationale's blur can reach the server after the submit: no "Draft not saved" on the next prompt
    assert ranking.keep_draft(ctx, view.state, ["3", "1", "2"], "thinking", ANA) == ""


def test_skip_needs_a_reason_and_counts_as_skipped_not_ranked(ctx: StudioContext) -> None:
    fill(ctx)
    view = ranking.open_project(ctx, "p", ANA)
    _warned(lambda: ranking.skip(ctx, view.state, "", ANA), "say why")
    after = ranking.skip(ctx, view.state, "off topic", ANA)
    assert after.status == "Skipped." and _count(ctx, "skipped") == 1
    assert after.progress.startswith("**0** ranked · **1** skipped · **1** left for you")


def test_progress_counts_what_other_annotators_hold(ctx: StudioContext) -> None:
    fill(ctx, prompts=2, min_submitted=1)
    add_annotator(ctx.store, "bob", "bob-password")
    ranking.open_project(ctx, "p", BOB)  # bob's claim holds the first prompt
    view = ranking.open_project(ctx, "p", ANA)
    assert "**1** left for you · **1** held by others · project 0/2 prompts complete" in view.progress


def test_pairwise_verdicts(ctx: StudioContext) -> None:
    fill(ctx, "duel", k=2, prompts=2)
    view = ranking.open_project(ctx, "duel", ANA)
    assert view.mode == "pairwise"
    view = ranking.pairwise(ctx, view.state, "B", "", ANA)
    done = ranking.pairwise(ctx, view.state, "both_bad", "both wrong", ANA)
    assert done.mode is None and "Nothing left" in done.status and done.state["project_id"] and done.home
    rows = ctx.store.query("SELECT ranks, both_bad FROM rankings WHERE status = 'submitted' ORDER BY id")
    first = {int(k): v for k, v in json.loads(rows[0][0]).items()}
    assert first[min(first)] == 2 and first[max(first)] == 1  # B (the second reply) ranked first
    assert rows[1][1] is True


def test_unknown_project_and_no_login(ctx: StudioContext) -> None:
    _warned(lambda: ranking.open_project(ctx, "nope", ANA), "no project 'nope'")
    with pytest.raises(gr.Error, match="Log in"):
        ranking.open_project(ctx, "p", None)


# -- the home view -------------------------------------------------------------------------------------
def test_annotators_land_on_the_first_project_with_work_not_the_empty_demo(ctx: StudioContext) -> None:
    from annotations.demo import seed_demo

    seed_demo(ctx.store)  # prompts without replies: nothing to rank
    fill(ctx, "zebra", prompts=1)
    view = ranking.landing(ctx, ANA)
    assert view.project == "zebra" and view.mode == "ranking"
    home = ranking.home(ctx, ANA)
    assert home.mode is None and home.project is None and home.state is None
    assert [name for _, name in home.home] == ["zebra", "demo"]  # work first
    assert home.home[0][0].startswith("zebra — 1 left for you · you: 0 ranked, 0 skipped")
    assert home.home[1][0].startswith("demo — nothing left for you")
    assert "Work for you in **1** of 2 projects" in home.progress


def test_home_when_nothing_is_left_and_admins_claim_nothing_on_load(ctx: StudioContext) -> None:
    fill(ctx, "p", prompts=1)
    admin_view = ranking.landing(ctx, BOSS)
    assert admin_view.mode is None and admin_view.project is None and _count(ctx, "draft") == 0
    view = ranking.landing(ctx, ANA)
    ranking.submit(ctx, view.state, ["1", "2", "3"], "", ANA)
    again = ranking.landing(ctx, ANA)
    assert again.project is None and "Nothing to rank for you right now" in again.status
    assert again.home == [("p — nothing left for you · you: 1 ranked, 0 skipped · 1/1 complete", "p")]


def test_the_project_list_is_names_only(ctx: StudioContext) -> None:
    fill(ctx, "p")
    fill(ctx, "q")
    assert ranking.project_names(ctx, ANA) == ["p", "q"]
    with pytest.raises(gr.Error, match="Log in"):
        ranking.project_names(ctx, None)


# -- undo ------------------------------------------------------------------------------------------------
def test_undo_brings_the_last_submission_back_as_a_draft(ctx: StudioContext) -> None:
    fill(ctx, prompts=3)
    first = ranking.open_project(ctx, "p", ANA)
    second = ranking.submit(ctx, first.state, ["2", "1", "3"], "B reads best", ANA)
    back = ranking.undo(ctx, second.state, ANA)
    assert back.state["prompt_id"] == first.state["prompt_id"] and back.ranks == [2, 1, 3] and back.rationale == "B reads best"
    assert back.status.startswith("Took back your last ranking") and _count(ctx, "submitted") == 0
    twice = ranking.undo(ctx, second.state, ANA)  # a double click: the same draft, nothing more undone
    assert twice.state["prompt_id"] == first.state["prompt_id"] and _count(ctx, "submitted") == 0
    fixed = ranking.submit(ctx, back.state, ["1", "2", "3"], "A after all", ANA)
    assert fixed.status == "Saved." and _count(ctx, "submitted") == 1
    skipped = ranking.skip(ctx, fixed.state, "unclear", ANA)
    assert ranking.undo(ctx, skipped.state, ANA).status.startswith("Took back your last skip")


def test_undo_is_refused_after_the_window_and_for_what_is_not_yours(ctx: StudioContext) -> None:
    fill(ctx, prompts=3, min_submitted=2)
    add_annotator(ctx.store, "bob", "bob-password")
    view = ranking.open_project(ctx, "p", ANA)
    ranking.submit(ctx, view.state, ["2", "1", "3"], "", ANA)
    bobs = ranking.open_project(ctx, "p", BOB)
    before = _rows(ctx)
    _warned(lambda: ranking.undo(ctx, bobs.state, BOB), "nothing to undo")
    _warned(lambda: ranking.undo(ctx, None, ANA), "Open a project first")
    minutes = int(UNDO_WINDOW.total_seconds() // 60) + 1
    ctx.store.query(f"UPDATE rankings SET submitted = submitted - INTERVAL {minutes} MINUTE")
    before = _rows(ctx)
    _warned(lambda: ranking.undo(ctx, view.state, ANA), "only the last 5 minutes can be undone")
    assert _rows(ctx) == before


# -- the annotator's boundary: the page state is the client's -----------------------------------------------
def test_a_forged_state_reads_and_changes_nothing(ctx: StudioContext) -> None:
    fill(ctx, prompts=3, min_submitted=1)
    other = fill(ctx, "other", prompts=1)
    add_annotator(ctx.store, "bob", "bob-password")
    anas = ranking.open_project(ctx, "p", ANA)
    assert ranking.keep_draft(ctx, anas.state, ["1", None, None], "ana's private note", ANA) == "Draft saved."
    bobs = ranking.open_project(ctx, "p", BOB)
    assert bobs.state["prompt_id"] != anas.state["prompt_id"] and bobs.rationale == ""
    before = _rows(ctx)
    stolen = dict(anas.state)  # bob replays ana's page state (her prompt, her submission key)
    for call in (
        lambda: ranking.submit(ctx, stolen, ["1", "2", "3"], "", BOB),
        lambda: ranking.skip(ctx, stolen, "mine now", BOB),
        lambda: ranking.pairwise(ctx, stolen, "A", "", BOB),
    ):
        _warned(call, "not given to you")
    with pytest.warns(UserWarning, match="not given to you"):
        assert ranking.keep_draft(ctx, stolen, ["3", "3", "3"], "overwritten", BOB) == "Draft not saved."
    # his own prompt claimed under another project's id, or a prompt id he was never served
    _warned(lambda: ranking.submit(ctx, {**bobs.state, "project_id": other}, ["1", "2", "3"], "", BOB), "not given to you")
    _warned(lambda: ranking.submit(ctx, {**bobs.state, "prompt_id": 3}, ["1", "2", "3"], "", BOB), "not given to you")
    # reply ids sent by the page are ignored: the server maps ranks onto the prompt's own replies
    forged = {**bobs.state, "reply_ids": anas.state.get("reply_ids", [1, 2, 3])}
    assert ranking.submit(ctx, forged, ["1", "2", "3"], "", BOB).status == "Saved."
    [(ranks, prompt_id, who)] = ctx.store.query(
        "SELECT r.ranks, r.prompt_id, a.name FROM rankings r JOIN annotators a ON a.id = r.annotator_id WHERE r.status = 'submitted'"
    )
    assert (prompt_id, who) == (bobs.state["prompt_id"], "bob")
    assert {int(k) for k in json.loads(ranks)} == {r.id for r in ctx.store.replies(prompt_id)}
    ana_id = ctx.store.query("SELECT id FROM annotators WHERE name = 'ana'")[0][0]
    assert [r for r in _rows(ctx) if r[2] == ana_id] == [r for r in before if r[2] == ana_id]
    assert ranking.open_project(ctx, "p", ANA).rationale == "ana's private note"


def test_rationale_and_skip_reason_over_the_limit_warn_and_store_nothing(ctx: StudioContext, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_MAX_RATIONALE_CHARS", "50")
    fill(ctx)
    view = ranking.open_project(ctx, "p", ANA)
    before = _rows(ctx)
    _warned(lambda: ranking.submit(ctx, view.state, ["1", "2", "3"], "x" * 51, ANA), "more than the limit of 50")
    _warned(lambda: ranking.skip(ctx, view.state, "y" * 51, ANA), "more than the limit of 50")
    with pytest.warns(UserWarning, match="Draft not saved: .*more than the limit of 50"):
        assert ranking.keep_draft(ctx, view.state, ["1", None, None], "z" * 51, ANA) == "Draft not saved."
    assert _rows(ctx) == before


def test_a_project_with_members_is_hidden_from_and_refused_to_others(ctx: StudioContext) -> None:
    from annotations.membership import set_members

    fill(ctx, "open", k=2, prompts=1)
    closed = fill(ctx, "closed", k=2, prompts=1)
    add_annotator(ctx.store, "ben", "ben-password")
    set_members(ctx.store, closed, ["ben"])
    assert ranking.project_names(ctx, ANA) == ["open"]
    assert [name for _, name in ranking.home(ctx, ANA).home] == ["open"]
    view = _warned(lambda: ranking.open_project(ctx, "closed", ANA), "not open to you")
    assert view is None and _count(ctx, "draft") == 0  # nothing served, nothing claimed
    assert ranking.open_project(ctx, "closed", as_user("ben")).state["prompt_id"]
    assert "closed" in ranking.project_names(ctx, BOSS)
