"""The admin console's handlers: refused for annotators, clear for admins."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from annotations.queue import next_prompt, submit_ranking
from studio import admin
from studio.context import StudioContext
from studio.render import bar_chart, markdown_html
from tests.studio.conftest import as_user, fill

BOSS, ANA = as_user("boss"), as_user("ana")


def test_annotators_are_refused_everywhere(ctx: StudioContext, tmp_path: Path) -> None:
    calls = [
        lambda: admin.create_project(ctx, "x", 2, 1, "", ANA),
        lambda: admin.import_upload(ctx, "x", str(tmp_path / "f.jsonl"), "auto", False, ANA),
        lambda: admin.start_generation(ctx, "x", ["tiny"], 0.8, 0.9, 16, ANA),
        lambda: admin.add_person(ctx, "eve", "password-123", "admin", ANA),
        lambda: admin.set_active(ctx, "boss", False, ANA),
        lambda: admin.reset_password(ctx, "boss", "password-123", ANA),
        lambda: admin.dashboard(ctx, None, ANA),
        lambda: admin.make_snapshot(ctx, None, "all_pairs", "majority", False, False, ANA),
        lambda: admin.set_project_members(ctx, "x", "ana", ANA),
    ]
    for call in calls:
        with pytest.raises(gr.Error, match="Not allowed"):
            call()
    assert [p.name for p in ctx.store.projects()] == []


def test_create_project_and_errors(ctx: StudioContext) -> None:
    assert "Created project **triage** (ranking, k=4" in admin.create_project(ctx, "triage", 4, 2, "# Rules", BOSS)
    with pytest.raises(gr.Error, match="already exists"):
        admin.create_project(ctx, "triage", 2, 1, "", BOSS)
    frame = admin.projects_frame(ctx)
    assert frame.iloc[0]["project"] == "triage" and frame.iloc[0]["k"] == 4


def test_import_reports_errors_on_the_page(ctx: StudioContext, tmp_path: Path) -> None:
    ctx.store.create_project("p")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": ""}\n')
    text = admin.import_upload(ctx, "p", str(bad), "auto", False, BOSS)
    assert "Import failed; nothing was written" in text and "bad.jsonl line 2" in text
    assert ctx.store.count_prompts(ctx.store.project("p").id) == 0
    text = admin.import_upload(ctx, "p", str(bad), "auto", True, BOSS)
    assert "Imported **1** prompts" in text and "Left out" in text
    with pytest.raises(gr.Error, match="Upload a file"):
        admin.import_upload(ctx, "p", None, "auto", False, BOSS)


def test_people(ctx: StudioContext) -> None:
    assert "Added annotator **cy**" in admin.add_person(ctx, "cy", "cy-password-1", "annotator", BOSS)
    with pytest.raises(gr.Error, match="at least 8"):
        admin.add_person(ctx, "dee", "short", "annotator", BOSS)
    with pytest.raises(gr.Error, match="cannot deactivate yourself"):
        admin.set_active(ctx, "boss", False, BOSS)
    assert "deactivated" in admin.set_active(ctx, "cy", False, BOSS)
    assert "New password" in admin.reset_password(ctx, "cy", "new-password-1", BOSS)
    people = admin.annotators_frame(ctx)
    assert list(people["name"]) == ["boss", "ana", "cy"] and not people.set_index("name").loc["cy", "active"]


def test_dashboard_and_snapshot(ctx: StudioContext) -> None:
    pid = fill(ctx, "p", k=2, prompts=2)
    ana = ctx.store.query("SELECT id FROM annotators WHERE name = 'ana'")[0][0]
    for _ in range(2):
        item = next_prompt(ctx.store, pid, ana)
        submit_ranking(ctx.store, ana, item.prompt.id, {item.replies[0].id: 1, item.replies[1].id: 2})
    completion, projects, per_person, agreement, reliability, activity = admin.dashboard(ctx, None, BOSS)
    assert "Completion per project" in completion and "2/2 prompts (100.0%)" in completion
    assert "2 submitted, 0 skipped" in per_person and "Krippendorff" in agreement
    assert len(activity) == 2 and set(activity["annotator"]) == {"ana"}
    manifest = admin.make_snapshot(ctx, "p", "all_pairs", "majority", False, True, BOSS)
    assert manifest["counts"]["pairs"] == 2 and Path(manifest["folder"]).parent == ctx.snapshot_root
    assert admin.make_snapshot(ctx, "p", "all_pairs", "majority", False, True, BOSS)["reused"] is True
    assert list(admin.snapshots_frame(ctx)["id"]) == [manifest["id"]]
    assert json.loads((Path(manifest["folder"]) / "manifest.json").read_text())["margin"] is True


def test_render_helpers() -> None:
    # Raw HTML shows as text, code keeps its text (the hostile corpus is in test_render.py).
    assert markdown_html("<img src=x onerror=alert(1)> and `<b>code</b>`") == (
        '<div class="md-text" dir="auto"><p>&lt;img src=x onerror=alert(1)&gt; and <code>&lt;b&gt;code&lt;/b&gt;</code></p>\n</div>'
    )
    assert "<pre><code>&lt;div&gt;\n</code></pre>" in markdown_html("```\n<div>\n```")
    chart = bar_chart("T", [("<x>", 5, "five"), ("y", 10, "ten"), ("z", None, "n/a")])
    assert "&lt;x&gt;" in chart and "width:50.0%" in chart and "width:100.0%" in chart and "width:0.0%" in chart
    assert "nothing yet" in bar_chart("T", [])


def test_project_members_decide_who_may_rank(ctx: StudioContext) -> None:
    from annotations.accounts import add_annotator, get_annotator
    from annotations.membership import may_rank

    fill(ctx, "team-a", k=2, prompts=1)
    add_annotator(ctx.store, "ben", "ben-password")
    note = admin.set_project_members(ctx, "team-a", "ana", BOSS)
    assert "ranked by ana (and admins)" in note
    pid = ctx.store.project("team-a").id
    assert may_rank(ctx.store, pid, get_annotator(ctx.store, "ana").id)
    assert not may_rank(ctx.store, pid, get_annotator(ctx.store, "ben").id)
    assert admin.projects_frame(ctx).iloc[0]["ranked by"] == "ana"
    with pytest.raises(gr.Error, match="no annotator 'nobody'"):
        admin.set_project_members(ctx, "team-a", "ana, nobody", BOSS)
    assert "every annotator" in admin.set_project_members(ctx, "team-a", "", BOSS)
