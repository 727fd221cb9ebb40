"""The Instruction tuning and DPO screens launching real runs (the prompt lab: test_prompt_lab.py)."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest

from annotations.accounts import get_annotator
from annotations.queue import next_prompt, submit_ranking
from annotations.store import PromptRecord, ReplyRecord
from studio import dpo_tab, sft_tab
from studio.context import StudioContext
from studio.training_screen import launch, preview
from tests.studio.conftest import as_user
from tests.studio.test_reward_tab import data_folder, wait_for

BOSS, ANA = as_user("boss"), as_user("ana")


def ranked_project(ctx: StudioContext, name: str = "qa", n: int = 12) -> int:
    pid = ctx.store.create_project(name, k=2, min_submitted=1)
    for i, prompt_id in enumerate(ctx.store.add_prompts(pid, [PromptRecord(f"Where is the sea number {i}?") for i in range(n)])):
        ctx.store.add_replies(prompt_id, [ReplyRecord("The sea is wide."), ReplyRecord(f"def add(a, b) {i}")])
    ana = get_annotator(ctx.store, "ana").id
    while (item := next_prompt(ctx.store, pid, ana)) is not None:
        submit_ranking(ctx.store, ana, item.prompt.id, {r.id: (1 if r.text.startswith("The sea") else 2) for r in item.replies})
    return pid


def test_sft_from_a_project_and_dpo_from_a_snapshot(ctx: StudioContext) -> None:
    from studio import admin

    ranked_project(ctx)
    settings = {"method": "lora", "learning_rate": 5e-3, "epochs": 2.0, "batch_size": 4, "max_length": 64, "register_as": "studio-sft"}
    yaml_text, command = preview(ctx, sft_tab.SPEC, "project:qa", "tiny", settings)
    assert "rlhf-studio train sft --config run.yaml" in command and "method: lora" in yaml_text
    sft_id = launch(ctx, sft_tab.SPEC, "project:qa", "tiny", settings, BOSS)

    snap = admin.make_snapshot(ctx, "qa", "all_pairs", "majority", False, False, BOSS)
    dpo_settings = {
        "learning_rate": 5e-3,
        "epochs": 2.0,
        "batch_size": 4,
        "max_length": 64,
        "register_as": "studio-dpo",
        "check_prompts": 0,
    }
    assert [v for _, v in dpo_tab.SPEC.data_choices(ctx)] == [snap["folder"]]
    dpo_id = launch(ctx, dpo_tab.SPEC, snap["folder"], "tiny", dpo_settings, BOSS)
    for run_id in (sft_id, dpo_id):
        run = ctx.launcher.get(run_id)
        wait_for(lambda run=run: not ctx.launcher.state(run).alive, what=f"{run_id} to end")
        assert ctx.launcher.state(run).state == "finished", run.tail_log()
    sft_metrics = ctx.launcher.get(sft_id).metrics()
    assert sft_metrics["eval_loss"] < sft_metrics["eval_loss_before"] and sft_metrics["registered_as"] == "studio-sft"
    exported = Path(ctx.launcher.get(sft_id).config()["data"])
    assert [json.loads(x)["response"] for x in exported.read_text().splitlines()][0] == "The sea is wide."
    dpo_metrics = ctx.launcher.get(dpo_id).metrics()
    assert dpo_metrics["eval_margins"] > dpo_metrics["eval_margins_before"] and dpo_metrics["registered_as"] == "studio-dpo"
    names = ctx.registry.names("causal-lm")
    assert {"studio-sft", "studio-dpo"} <= set(names)  # both chat, generate candidates and can start PPO


def test_bad_tuning_launches(ctx: StudioContext) -> None:
    settings = {"epochs": 1.0}
    data = data_folder(ctx)
    with pytest.raises(gr.Error, match="Choose the data"):
        launch(ctx, sft_tab.SPEC, None, "tiny", settings, BOSS)
    with pytest.raises(gr.Error, match="does not exist"):
        launch(ctx, sft_tab.SPEC, str(data / "none.jsonl"), "tiny", settings, BOSS)
    ctx.store.create_project("unranked", k=2)
    with pytest.raises(gr.Error, match="no submitted rankings"):
        launch(ctx, sft_tab.SPEC, "project:unranked", "tiny", settings, BOSS)
    with pytest.raises(gr.Error, match="cannot read a project"):
        launch(ctx, dpo_tab.SPEC, "project:unranked", "tiny", settings, BOSS)
    (data / "d.jsonl").write_text('{"instruction": "a", "response": "b"}\n')
    with pytest.raises(gr.Error, match="method must be one of"):
        launch(ctx, sft_tab.SPEC, str(data / "d.jsonl"), "tiny", {"method": "magic"}, BOSS)
    with pytest.raises(gr.Error, match="admin"):
        launch(ctx, sft_tab.SPEC, str(data / "d.jsonl"), "tiny", settings, ANA)
    # The data's first records are read before a run folder exists; so is register_as.
    (data / "alpaca-ish.jsonl").write_text('{"instruction": "a"}\n')
    with pytest.raises(gr.Error, match="needs 'response' \\(dolly\\) or 'output' \\(alpaca\\)"):
        launch(ctx, sft_tab.SPEC, str(data / "alpaca-ish.jsonl"), "tiny", settings, BOSS)
    with pytest.raises(gr.Error, match="register_as: model name 'no way' is not allowed"):
        launch(ctx, sft_tab.SPEC, str(data / "d.jsonl"), "tiny", {**settings, "register_as": "No Way"}, BOSS)
    with pytest.raises(gr.Error, match="not a snapshot folder"):
        launch(ctx, dpo_tab.SPEC, str(data), "tiny", settings, BOSS)
    assert ctx.launcher.runs() == []
