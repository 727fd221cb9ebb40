"""The GRPO / RLOO screen: reward-source pickers, a preview that is a valid config, refusals, a run from a project."""

from __future__ import annotations

import importlib.util
import inspect

import gradio as gr
import pytest
import torch
import yaml

from annotations.store import PromptRecord
from rlhf.config import config_from_dict
from rlhf.online_rl import GRPORunConfig, RLOORunConfig
from studio import online_tab
from studio.context import StudioContext
from studio.reward_sources import judge_specs
from studio.run_monitor import run_detail
from studio.training_screen import launch, preview, run_samples_and_warnings
from tests.studio.conftest import as_user
from tests.studio.test_ppo_tab import rewards
from tests.studio.test_reward_tab import data_folder, wait_for
from tests.studio.test_training_permissions import _call, _handlers

BOSS, ANA, NOBODY = as_user("boss"), as_user("ana"), as_user(None)
SETTINGS = {"steps": 2, "num_generations": 2, "batch_size": 4, "max_new_tokens": 8, "check_prompts": 0, "eval_every": 0}


def _settings(**extra) -> dict:
    return {**SETTINGS, "rewards": rewards(), **extra}


def test_every_handler_refuses_an_annotator(ctx: StudioContext) -> None:
    handlers = _handlers(online_tab.build(ctx))
    loads = 0
    for handler in handlers:
        assert "request" in inspect.signature(handler.fn).parameters, f"{handler.name} does not see who calls it"
        if any(event == "load" for _, event in handler.targets):
            out = _call(handler.fn, ANA)
            assert all(item == gr.skip() for item in out), f"{handler.name} gave an annotator {out!r}"
            loads += 1
            continue
        for who, message in ((ANA, "Not allowed: only admins may"), (NOBODY, "Log in first")):
            with pytest.raises(gr.Error, match=message):
                _call(handler.fn, who)
    assert loads == 2  # one per inner tab
    with pytest.raises(gr.Error, match="admin"):
        launch(ctx, online_tab.GRPO_SPEC, "project:x", "tiny", _settings(), ANA)
    assert not ctx.launcher.root.exists()


def test_both_tabs_offer_reward_pickers_and_their_own_settings(ctx: StudioContext) -> None:
    screen = online_tab.build(ctx)
    ids = {getattr(block, "elem_id", None) for block in screen.blocks.values()}
    for kind in ("grpo", "rloo"):
        assert {f"{kind}-rm", f"{kind}-judge", f"{kind}-fn", f"{kind}-sim", f"{kind}-heldout-rm", f"{kind}-samples"} <= ids
    assert {"cfg-GRPORunConfig-loss_type", "cfg-GRPORunConfig-scale_rewards", "cfg-RLOORunConfig-normalize_advantages"} <= ids
    assert "cfg-GRPORunConfig-rewards" not in ids and "cfg-RLOORunConfig-heldout_judge" not in ids  # picked, not typed


@pytest.mark.parametrize(("spec", "cls"), [(online_tab.GRPO_SPEC, GRPORunConfig), (online_tab.RLOO_SPEC, RLOORunConfig)])
def test_the_preview_is_a_valid_config(ctx: StudioContext, spec, cls) -> None:
    path = data_folder(ctx) / "prompts.txt"
    path.write_text("tell me about the sea\nand the sky\n")
    judge = judge_specs(None, "tiny", None)
    yaml_text, command = preview(ctx, spec, str(path), "tiny", _settings(heldout_judge=judge, beta=0.1))
    assert f"rlhf-studio train {spec.kind} --config run.yaml" in command
    cfg = config_from_dict(cls, yaml.safe_load(yaml_text))
    assert cfg.prompts == str(path) and cfg.policy == "tiny" and cfg.rewards == rewards() and cfg.heldout_judge == judge
    assert cfg.beta == 0.1 and cfg.num_generations == 2


def test_bad_launches_are_refused_and_make_nothing(ctx: StudioContext) -> None:
    path = data_folder(ctx) / "prompts.txt"
    path.write_text("hello\n")
    spec = online_tab.GRPO_SPEC
    cases = [
        (_settings(rewards=[]), "at least one reward source"),
        (_settings(rewards=rewards(reward_model="ghost")), "unknown model 'ghost'"),
        (_settings(heldout_judge=judge_specs("ghost-rm", None, None)), "unknown model 'ghost-rm'"),
        (_settings(batch_size=3), "multiple of num_generations"),
    ]
    if not (importlib.util.find_spec("vllm") and torch.cuda.is_available()):
        cases.append((_settings(use_vllm="on"), "use_vllm is on but"))
    for settings, message in cases:
        with pytest.raises(gr.Error, match=message):
            launch(ctx, spec, str(path), "tiny", settings, BOSS)
        assert preview(ctx, spec, str(path), "tiny", settings)[0].startswith("# not ready")
    with pytest.raises(gr.Error, match="does not exist"):
        launch(ctx, spec, str(data_folder(ctx) / "missing.jsonl"), "tiny", _settings(), BOSS)
    assert ctx.launcher.runs() == [] and not ctx.launcher.root.exists()


def test_rloo_from_a_project_runs_and_registers(ctx: StudioContext) -> None:
    pid = ctx.store.create_project("sea", k=2, min_submitted=1)
    ctx.store.add_prompts(pid, [PromptRecord(f"tell me about the sea, part {i}") for i in range(10)])
    [(label, value)] = online_tab.prompt_choices(ctx)
    assert value == "project:sea" and "10 prompts" in label
    run_id = launch(ctx, online_tab.RLOO_SPEC, value, "tiny", _settings(register_as="studio-rloo"), BOSS)
    run = ctx.launcher.get(run_id)
    wait_for(lambda: not ctx.launcher.state(run).alive, what="the RLOO run to end")
    assert ctx.launcher.state(run).state == "finished", run.tail_log()
    assert [e["step"] for e in run.events() if "reward_mean" in e] == [1, 2]
    summary, _, plots, _, _ = run_detail(ctx.launcher, run_id, online_tab.CHARTS)
    assert "finished" in summary and plots.count("<svg") == 5  # no held-out judge: no judge chart
    table, _ = run_samples_and_warnings(ctx, run_id, online_tab.RLOO_SPEC.warnings)
    assert len(table) > 0 and list(table.columns) == ["step", "prompt", "reply", "reward", "ended"]
    assert ctx.registry.get("studio-rloo").lineage["method"] == "rloo"
