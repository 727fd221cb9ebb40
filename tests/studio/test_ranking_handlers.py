"""The ranking screen's handlers, without a browser."""

from __future__ import annotations

import gradio as gr
import pytest

from studio import ranking
from studio.context import StudioContext
from tests.studio.conftest import as_user, fill

ANA = as_user("ana")


def _count(ctx: StudioContext, status: str) -> int:
    return ctx.store.query("SELECT count(*) FROM rankings WHERE status = ?", [status])[0][0]


def test_open_shows_the_prompt_and_neutralised_replies(ctx: StudioContext) -> None:
    fill(ctx)
    view = ranking.open_project(ctx, "p", ANA)
    assert view.mode == "ranking" and len(view.replies) == 3 and view.guidelines == "Be fair."
    assert "&lt;b&gt;bold&lt;/b&gt;" in view.replies[0] and "<b>" not in view.replies[0]
    assert "question 0" in view.conversation and view.progress.startswith("**0** ranked · **2** left")


def test_submit_then_next_and_double_click(ctx: StudioContext) -> None:
    fill(ctx)
    view = ranking.open_project(ctx, "p", ANA)
    nxt = ranking.submit(ctx, view.state, ["2", "1", "3"], "B is clearer", ANA)
    assert nxt.status == "Saved." and nxt.state["prompt_id"] != view.state["prompt_id"]
    again = ranking.submit(ctx, view.state, ["2", "1", "3"], "B is clearer", ANA)  # the same click twice
    assert again.status.startswith("Already saved") and _count(ctx, "submitted") == 1


def test_invalid_ranking_is_refused_and_changes_nothing(ctx: StudioContext) -> None:
    fill(ctx)
    view = ranking.open_project(ctx, "p", ANA)
    before = ctx.store.query("SELECT * FROM rankings ORDER BY id")
    with pytest.raises(gr.Error, match="rank every reply"):
        ranking.submit(ctx, view.state, ["1", None, "2"], "", ANA)
    with pytest.raises(gr.Error, match="There is no prompt"):
        ranking.submit(ctx, None, ["1"], "", ANA)
    assert ctx.store.query("SELECT * FROM rankings ORDER BY id") == before


def test_draft_comes_back_after_a_reload(ctx: StudioContext) -> None:
    fill(ctx)
    view = ranking.open_project(ctx, "p", ANA)
    assert ranking.keep_draft(ctx, view.state, ["3", None, None], "thinking", ANA) == "Draft saved."
    reloaded = ranking.open_project(ctx, "p", ANA)
    assert reloaded.state["prompt_id"] == view.state["prompt_id"]
    assert reloaded.ranks == [3, None, None] and reloaded.rationale == "thinking"


def test_skip_needs_a_reason(ctx: StudioContext) -> None:
    fill(ctx)
    view = ranking.open_project(ctx, "p", ANA)
    with pytest.raises(gr.Error, match="say why"):
        ranking.skip(ctx, view.state, "", ANA)
    after = ranking.skip(ctx, view.state, "off topic", ANA)
    assert after.status == "Skipped." and _count(ctx, "skipped") == 1


def test_pairwise_verdicts(ctx: StudioContext) -> None:
    fill(ctx, "duel", k=2, prompts=2)
    view = ranking.open_project(ctx, "duel", ANA)
    assert view.mode == "pairwise"
    view = ranking.pairwise(ctx, view.state, "B", "", ANA)
    done = ranking.pairwise(ctx, view.state, "both_bad", "both wrong", ANA)
    assert done.mode is None and "Nothing left" in done.status
    rows = ctx.store.query("SELECT ranks, both_bad FROM rankings WHERE status = 'submitted' ORDER BY id")
    first = {int(k): v for k, v in __import__("json").loads(rows[0][0]).items()}
    assert first[min(first)] == 2 and first[max(first)] == 1  # B (the second reply) ranked first
    assert rows[1][1] is True


def test_unknown_project_and_no_login(ctx: StudioContext) -> None:
    with pytest.raises(gr.Error, match="no project 'nope'"):
        ranking.open_project(ctx, "nope", ANA)
    with pytest.raises(gr.Error, match="Log in"):
        ranking.open_project(ctx, "p", None)
