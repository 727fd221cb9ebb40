"""GRPO and RLOO on a tiny model: a reward that favours one token rises, KL stays finite, the result registers."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from rlhf.online_rl import GRPORunConfig, RLOORunConfig, studio_metrics, train_grpo, train_rloo
from rlhf.ppo import warnings_for
from rlhf.registry import ModelRegistry
from rlhf.rewards import source_name
from rlhf.runs import RunDir, run_guard

LIKES_E = [{"type": "function", "function": "tests.rlhf.reward_fns:likes_e"}]
# measured on the tiny model: 40 steps of 8 replies (2 prompts x 4) take the mean batch reward from ~0.2 to above 1
FAST = dict(
    policy="tiny", rewards=LIKES_E, steps=40, batch_size=8, num_generations=4, max_new_tokens=16, learning_rate=2e-2,
    eval_every=20, sample_every=10, save_steps=1000, check_judge="", lora_r=16, lora_alpha=32, eval_fraction=0.1,
)  # fmt: skip


@pytest.fixture
def registry(studio_home: Path, tiny_lm_dir: Path) -> ModelRegistry:
    reg = ModelRegistry()
    reg.add(tiny_lm_dir, name="tiny")
    return reg


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"question {i} about the sea", "reference": "the sea is wide"}) for i in range(40)))
    return path


@pytest.mark.parametrize(("cfg_cls", "train", "kind"), [(GRPORunConfig, train_grpo, "grpo"), (RLOORunConfig, train_rloo, "rloo")])
def test_the_reward_rises_with_finite_kl_and_the_policy_registers(
    tmp_path: Path, registry: ModelRegistry, prompts_file: Path, one_thread, cfg_cls, train, kind: str
) -> None:
    from rlhf.loading import load_causal_lm

    cfg = cfg_cls(prompts=str(prompts_file), register_as=f"tiny-{kind}", **FAST)
    run = RunDir.create(tmp_path / "runs", kind, {})
    with run_guard(run, handle_sigterm=False) as stop:
        metrics = train(cfg, run, stop, registry=registry)
    events = run.events()
    steps = [e for e in events if "reward_mean" in e]
    assert [e["step"] for e in steps] == list(range(1, 41))
    early = sum(e["reward_mean"] for e in steps[:8]) / 8
    late = sum(e["reward_mean"] for e in steps[-8:]) / 8
    assert late > early + 0.2, [round(e["reward_mean"], 2) for e in steps]
    assert all(math.isfinite(e["kl"]) for e in steps) and steps[-1]["kl"] > 0  # the policy left the reference, measurably
    # PPO's names, so PPO's charts and warnings read them
    name = source_name(LIKES_E[0])
    assert {"reward_std", "kl_per_token", "entropy", "reply_length", "eos_rate", "runaway_rate", "keyword", f"reward/{name}"} <= set(
        steps[-1]
    )
    assert abs(steps[-1]["kl"] - steps[-1]["kl_per_token"] * steps[-1]["reply_length"]) < 1e-6
    assert any(e.get("samples") for e in steps) and {"prompt", "reply", "reward", "ended"} <= set(steps[0]["samples"][0])
    assert isinstance(warnings_for(events, None, cfg.max_new_tokens), list)
    # held-out evaluations at the start, at step 20 and at the end, one reply per held-out prompt
    evals = {e["step"]: e for e in events if "eval_reward" in e}
    assert sorted(evals) == [0, 20, 40] and evals[0]["eval_kl"] == 0.0 and evals[40]["eval_kl"] > 0
    assert metrics["eval_reward_gain"] == pytest.approx(metrics["eval_reward_end"] - metrics["eval_reward_start"])
    assert run.status()["state"] != "failed" and (run.checkpoint_dir / "README.md").is_file()
    entry = registry.get(f"tiny-{kind}")
    assert entry.kind == "causal-lm" and entry.lineage["method"] == kind
    assert entry.lineage["prompts"] == str(prompts_file) and entry.lineage["rewards"] == LIKES_E and entry.lineage["policy"] == "tiny"
    tuned, _ = load_causal_lm(f"tiny-{kind}", registry, device="cpu", dtype=torch.float32)
    base, _ = load_causal_lm("tiny", registry, device="cpu", dtype=torch.float32)
    changed = [n for (n, a), b in zip(tuned.named_parameters(), base.parameters(), strict=True) if not torch.equal(a, b)]
    assert any("self_attn" in n for n in changed)  # the LoRA updates merged into the attention weights


def test_two_sources_log_a_reward_each_through_the_command_line(
    tmp_path: Path, registry: ModelRegistry, prompts_file: Path, one_thread, capsys: pytest.CaptureFixture
) -> None:
    from rlhf.cli import main

    rewards = [*LIKES_E, {"type": "function", "function": "tests.rlhf.reward_fns:pays_for_brevity", "weight": 0.5}]
    config = tmp_path / "run.yaml"
    settings = {**FAST, "prompts": str(prompts_file), "rewards": rewards, "steps": 2, "eval_every": 0, "register_as": "tiny-cli"}
    config.write_text(yaml.safe_dump(settings))
    assert main(["train", "grpo", "--config", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0, capsys.readouterr().err
    [folder] = (tmp_path / "runs").iterdir()
    run = RunDir(folder)
    assert run.status()["state"] == "finished"
    [first, *_] = [e for e in run.events() if "reward_mean" in e]
    like, short = (first[f"reward/{source_name(s)}"] for s in rewards)
    assert first["reward_mean"] == pytest.approx(like + 0.5 * short, abs=1e-5)  # trl's reward_weights are the sources' weights
    assert registry.get("tiny-cli").lineage["method"] == "grpo"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None and torch.cuda.is_available(), reason="vLLM can run here")
def test_vllm_on_without_vllm_is_refused_and_auto_falls_back(prompts_file: Path) -> None:
    with pytest.raises(ValueError, match="use_vllm is on but .*set use_vllm: auto or off"):
        GRPORunConfig(prompts=str(prompts_file), rewards=LIKES_E, use_vllm="on")
    assert not RLOORunConfig(prompts=str(prompts_file), rewards=LIKES_E, use_vllm="auto").vllm
    assert not GRPORunConfig(prompts=str(prompts_file), rewards=LIKES_E, use_vllm="off").vllm


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"num_generations": 1}, "num_generations must be >= 2"),
        ({"batch_size": 6, "num_generations": 4}, "multiple of num_generations"),
        ({"rewards": []}, "at least one reward source"),
        ({"heldout_judge": [{"type": "nope"}]}, r"heldout_judge\[0\]"),
        ({"loss_type": "ppo"}, "loss_type must be one of"),
        ({"scale_rewards": "some"}, "scale_rewards must be one of"),
        ({"use_vllm": "yes"}, "use_vllm must be auto, on or off"),
    ],
)
def test_bad_settings_are_named(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GRPORunConfig(**{"prompts": "p.jsonl", "rewards": LIKES_E, **settings})


def test_trl_metrics_become_ppo_names() -> None:
    logs = {"reward": 1.0, "reward_std": 0.5, "rewards/a/mean": 1.0, "kl": 0.1, "completions/mean_length": 10.0}
    logs |= {"completions/clipped_ratio": 0.25, "entropy": 2.0, "loss": 0.3}
    out = studio_metrics(logs, ["a"])
    assert out["reward_mean"] == 1.0 and out["reward/a"] == 1.0 and out["kl"] == pytest.approx(1.0) and out["kl_per_token"] == 0.1
    assert out["eos_rate"] == 0.75 and out["reply_length"] == 10.0 and out["entropy"] == 2.0
    # a step that reuses the last replies (num_iterations > 1) has KL but no reward: the last length converts it
    assert studio_metrics({"kl": 0.2, "entropy": 1.0}, ["a"], reply_length=5.0) == {"kl_per_token": 0.2, "kl": 1.0, "entropy": 1.0}
