"""Prompt lab handlers: variants, evaluation, templates, sending to the queue, and who may do what."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from annotations.templates import load_template, save_template, template_names
from studio import prompt_lab
from studio.context import StudioContext
from tests.studio.conftest import as_user
from tests.studio.test_lab_and_tuning import ranked_project

BOSS, ANA = as_user("boss"), as_user("ana")


def test_prompt_lab_variants_evaluation_templates_and_queue(ctx: StudioContext) -> None:
    pid = ranked_project(ctx)
    pool = prompt_lab.load_records(ctx, "project:qa", BOSS)
    assert len(pool) == 12 and pool[0]["output"] == "The sea is wide."
    editor = prompt_lab.editor_template("few", "Be brief.", "Q: {input}", "random", 2, "", 3, "none", "")
    results = prompt_lab.run_variants(
        ctx, editor, pool, "Where is the sea?", [(prompt_lab.EDITOR, "tiny"), (None, None), (prompt_lab.EDITOR, "tiny")], 6
    )
    assert len(results) == 2
    label, model, messages, output = results[0]
    assert (
        model == "tiny" and messages[0] == {"role": "system", "content": "Be brief."} and len(messages) == 6
    )  # system + 2 demos + question
    assert results[0][3] == results[1][3]  # greedy: the same variant gives the same output

    save_template(ctx.store, editor.name, editor.as_dict())
    assert "few" in template_names(ctx.store) and load_template(ctx.store, "few")["demos"] == "random"
    [(_, _, again, _)] = prompt_lab.run_variants(ctx, editor, pool, "Where is the sea?", [("few", "tiny")], 6)
    assert again == messages

    # A labelled file inside the data folder ($STUDIO_HOME/data); a relative name is taken there.
    data = ctx.data_roots[0] / "labelled.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("\n".join(json.dumps({"input": f"q{i}", "output": "x"}) for i in range(3)))
    dataset = prompt_lab.load_records(ctx, "labelled.jsonl", BOSS)
    summary, frame = prompt_lab.evaluate_template(ctx, editor, pool, dataset, "tiny", "contains", None, 4)
    assert "on 3 examples" in summary and list(frame.columns) == ["input", "expected", "output", "score"] and len(frame) == 3

    before = ctx.store.count_prompts(pid)
    state = [{"template": label, "model": model, "output": output or "something"}]
    note = prompt_lab.send_outputs(ctx, "qa", "Where is the sea?", state, BOSS)
    assert "Sent to **qa** with 1 candidate" in note and ctx.store.count_prompts(pid) == before + 1
    with pytest.raises(gr.Error, match="Run the variants first"):
        prompt_lab.send_outputs(ctx, "qa", "x", [], BOSS)
    with pytest.raises(gr.Error, match="hand-picked demonstrations are pool numbers"):
        prompt_lab.editor_template("x", "", "{input}", "hand", 1, "one, two", 0, "none", "")
    with pytest.raises(gr.Error, match="must contain"):
        prompt_lab.editor_template("x", "", "no slot", "none", 1, "", 0, "none", "")


def test_annotators_read_no_files_and_no_results_and_write_nothing(ctx: StudioContext, tmp_path) -> None:
    """The hostile annotator of the issue: server files, other annotators' results, forged replies."""
    pid = ranked_project(ctx)
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"input": "password", "output": "hunter2"}) + "\n")
    for source in ("project:qa", str(secret), "labelled.jsonl"):
        with pytest.raises(gr.Error, match="Not allowed"):
            prompt_lab.load_records(ctx, source, ANA)
    before = ctx.store.count_prompts(pid)
    with pytest.raises(gr.Error, match="Not allowed"):
        prompt_lab.send_outputs(ctx, "qa", "forged", [{"template": "t", "model": "tiny", "output": "I am the model"}], ANA)
    assert ctx.store.count_prompts(pid) == before


def test_admin_paths_stay_inside_the_data_folders(ctx: StudioContext, tmp_path) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"input": "password", "output": "hunter2"}) + "\n")
    outside = [str(secret), "../../../../etc/passwd", "/etc/passwd", "~/.bashrc"]
    link = ctx.data_roots[0] / "link.jsonl"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)  # a link inside the folder that points out of it
    for path in [*outside, "link.jsonl"]:
        with pytest.raises(gr.Error, match="outside the data folders") as err:
            prompt_lab.load_records(ctx, path, BOSS)
        assert str(ctx.data_roots[0]) in str(err.value)
