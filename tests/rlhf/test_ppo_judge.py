"""PPO watched by a held-out judge it is not trained on: eval_judge at every held-out evaluation, early
stopping that saves the policy of the judge's best evaluation (and survives a resume), the
over-optimisation warning (Gao et al. 2022) and the judge's lineage warning, on the tiny model.

The rigged pair: the training reward pays for the word "at" (``tests.rlhf.reward_fns:pays_for_keyword``,
which the tiny model learns to say within a few steps) and the judge below punishes it, so the judge
falls exactly as the training reward rises; a judge that pays for "at" twice as much rises with it.
The judges are referenced from configs as ``tests.rlhf.test_ppo_judge:NAME``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from rlhf.config import ConfigError, config_from_dict
from rlhf.ppo import PPORunConfig, PPOTrainer, heldout_judge_warnings, train_ppo, warnings_for
from rlhf.registry import ModelRegistry
from rlhf.runs import RunDir, run_guard
from tests.rlhf.reward_fns import pays_for_keyword

PAYS_FOR_AT = [{"type": "function", "function": "tests.rlhf.reward_fns:pays_for_keyword"}]
SHUNS_AT = [{"type": "function", "function": "tests.rlhf.test_ppo_judge:shuns_at"}]
LIKES_AT_TWICE = [{"type": "function", "function": "tests.rlhf.test_ppo_judge:likes_at_twice"}]


def shuns_at(prompt: str, reply: str) -> float:
    """A judge that punishes what the training reward pays for."""
    return -pays_for_keyword(prompt, reply)


def likes_at_twice(prompt: str, reply: str) -> float:
    """A judge that rises with the training reward, but is another source."""
    return 2 * pays_for_keyword(prompt, reply)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/rlhf/conftest.py


@pytest.fixture
def registry(studio_home: Path, tiny_lm_dir: Path) -> ModelRegistry:
    reg = ModelRegistry()
    reg.add(tiny_lm_dir, name="tiny")
    return reg


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": f"question {i} about the sea"}) for i in range(40)))
    return path


def config(prompts_file: Path, **overrides) -> PPORunConfig:
    # Small and quick; a fixed KL coefficient and the old penalty on every cut reply, as in
    # tests/rlhf/test_ppo.py, so the toy's reward moves within a few steps.
    settings = dict(
        prompts=str(prompts_file),
        policy="tiny",
        rewards=PAYS_FOR_AT,
        steps=4,
        batch_size=16,
        minibatch_size=8,
        micro_batch_size=8,
        ppo_epochs=2,
        max_new_tokens=8,
        learning_rate=1e-2,
        adaptive_kl=False,
        runaway_threshold=1.0,
        eval_fraction=0.2,
        eval_every=1,
        save_every=0,
        sample_every=0,
        check_prompts=0,
    )
    return PPORunConfig(**{**settings, **overrides})


def run_ppo(tmp_path: Path, cfg: PPORunConfig, registry: ModelRegistry, stop=None, run: RunDir | None = None, resume: bool = False):
    run = run or RunDir.create(tmp_path / "runs", "ppo", {})
    with run_guard(run, handle_sigterm=False) as default_stop:
        metrics = train_ppo(cfg, run, stop if stop is not None else default_stop, registry=registry, resume=resume)
    return run, metrics


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).state_dict()


def moved_from(base: Path, weights: dict[str, torch.Tensor]) -> bool:
    start = saved_weights(base)
    return any(not torch.allclose(weights[k], start[k]) for k in start)


def merged(cfg: PPORunConfig, registry: ModelRegistry, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The plain model a trainer with these trainable weights saves."""
    trainer = PPOTrainer(cfg, registry)
    named = dict(trainer.policy.named_parameters())
    with torch.no_grad():
        for name, tensor in state.items():
            named[name].copy_(tensor)
    return {k: v.detach().clone() for k, v in trainer.final_model().state_dict().items()}


def evaluations(run: RunDir) -> list[dict]:
    return [e for e in run.events() if "eval_reward" in e and not e.get("final")]


# -- (a) the judge at every held-out evaluation -------------------------------------------------------
def test_the_judge_scores_the_same_heldout_replies_at_every_evaluation(
    tmp_path: Path, registry: ModelRegistry, prompts_file: Path, tiny_lm_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = config(prompts_file, heldout_judge=SHUNS_AT, steps=4, eval_every=2)
    run, metrics = run_ppo(tmp_path, cfg, registry)
    evals = evaluations(run)
    assert [e["step"] for e in evals] == [0, 2, 4]  # the start, every eval_every steps, the end
    for e in evals:
        assert e["eval_judge"] == pytest.approx(-e["eval_reward"])  # the judge read the very replies the reward scored
        assert 0 < e["eval_length"] <= cfg.max_new_tokens and e["eval_prompts"] == 8
        assert {"eval_kl", "eval_reward_std", "eval_judge_std"} <= set(e)
    judged = [e["eval_judge"] for e in evals]
    assert metrics["eval_judge_start"] == judged[0] and metrics["eval_judge_end"] == judged[-1]
    assert metrics["eval_judge_best"] == max(judged) and metrics["best_judge_step"] == evals[judged.index(max(judged))]["step"]
    assert metrics["eval_length_start"] == evals[0]["eval_length"] and metrics["eval_length_end"] == evals[-1]["eval_length"]
    assert not metrics["stopped_early"] and metrics["steps"] == 4 and metrics["checkpoint_step"] == 4  # no patience: the last step
    assert "held-out at step 2:" in capsys.readouterr().out
    assert moved_from(tiny_lm_dir, saved_weights(run.checkpoint_dir))  # it trained
    assert run.metrics()["eval_judge_best"] == metrics["eval_judge_best"]


# -- (b) early stopping at the judge's best, across a resume ------------------------------------------
class StopAfter:
    """A stop request that fires after the trainer has checked it n times (twice per step with save_every 0)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __bool__(self) -> bool:
        self.n -= 1
        return self.n < 0


# The judge's score by step: best at 2; 1.05 at step 5 beats it by less than min_delta 0.1, so
# evaluations 3, 4 and 5 are three in a row without an improvement: patience 3 stops at step 5.
# A resumed run that forgot the count would take step 4 as its best and stop at step 7.
SCRIPT = {0: 0.0, 1: 0.5, 2: 1.0, 3: 0.9, 4: 0.95, 5: 1.05, 6: 0.7, 7: 0.7, 8: 0.7, 9: 0.7, 10: 0.7}


def test_early_stopping_saves_the_best_policy_and_survives_a_resume(
    tmp_path: Path, registry: ModelRegistry, prompts_file: Path, tiny_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = PPOTrainer.evaluate
    at_eval: dict[int, dict[str, torch.Tensor]] = {}

    def scripted(self: PPOTrainer, *args, **kwargs) -> dict:
        out = real(self, *args, **kwargs)
        assert "eval_judge" in out  # the real judge ran; its score is replaced by the script
        at_eval[self.step] = {n: t.clone() for n, t in self.trainable_state().items()}
        return {**out, "eval_judge": SCRIPT[self.step]}

    monkeypatch.setattr(PPOTrainer, "evaluate", scripted)
    cfg = config(prompts_file, heldout_judge=SHUNS_AT, steps=10, early_stop_patience=3, early_stop_min_delta=0.1, register_as="tiny-judged")
    run, metrics = run_ppo(tmp_path, cfg, registry, stop=StopAfter(5))  # cancelled after step 3
    assert metrics["steps"] == 3 and metrics["stopped_early"] and "tiny-judged" not in registry.names()
    state = json.loads((run.last_checkpoint() / "state.json").read_text())
    assert state["judge_watch"] == {"best": 1.0, "best_step": 2, "since_best": 1}
    assert (run.last_checkpoint() / "best_policy.safetensors").is_file()

    run, metrics = run_ppo(tmp_path, cfg, registry, run=run, resume=True)
    assert metrics["steps"] == 5 < cfg.steps and metrics["stopped_early"] and metrics["stopped_by_judge"]
    assert metrics["best_judge_step"] == 2 and metrics["checkpoint_step"] == 2
    assert (metrics["eval_judge_start"], metrics["eval_judge_best"], metrics["eval_judge_end"]) == (0.0, 1.0, 1.05)
    assert run.metrics()["stopped_early"] is True and registry.get("tiny-judged").kind == "causal-lm"  # ended on purpose: registered
    assert [e["step"] for e in run.events() if "reward_mean" in e] == [1, 2, 3, 4, 5]

    # The checkpoint is the policy of step 2 (kept in the first process's checkpoint), not step 5's.
    saved = saved_weights(run.checkpoint_dir)
    best, last = merged(cfg, registry, at_eval[2]), merged(cfg, registry, at_eval[5])
    assert all(torch.allclose(saved[k], best[k], atol=1e-6) for k in best)
    assert any(not torch.allclose(saved[k], last[k], atol=1e-6) for k in last)
    assert moved_from(tiny_lm_dir, saved)  # and step 2's policy had trained


def test_early_stopping_needs_a_judge_and_evaluations(prompts_file: Path) -> None:
    with pytest.raises(ValueError, match="early_stop_patience needs a heldout_judge"):
        config(prompts_file, early_stop_patience=2)
    with pytest.raises(ValueError, match="set eval_every >= 1"):
        config(prompts_file, heldout_judge=SHUNS_AT, early_stop_patience=2, eval_every=0)
    with pytest.raises(ValueError, match="early_stop_min_delta must be >= 0"):
        config(prompts_file, heldout_judge=SHUNS_AT, early_stop_patience=2, early_stop_min_delta=-1.0)
    defaults = PPORunConfig(prompts="p.jsonl", rewards=PAYS_FOR_AT)
    assert defaults.heldout_judge == [] and defaults.early_stop_patience == 0 and defaults.early_stop_min_delta == 0.0


# -- (c) the over-optimisation warning ----------------------------------------------------------------
def test_a_rising_reward_with_a_falling_judge_is_called_over_optimisation(
    tmp_path: Path, registry: ModelRegistry, prompts_file: Path, tiny_lm_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    said = {}
    for name, judge in (("punishes at", SHUNS_AT), ("pays for at too", LIKES_AT_TWICE)):
        cfg = config(prompts_file, heldout_judge=judge, steps=6)
        run, metrics = run_ppo(tmp_path / name.replace(" ", "-"), cfg, registry)
        assert moved_from(tiny_lm_dir, saved_weights(run.checkpoint_dir))
        evals = evaluations(run)
        assert len(evals) == 7 and evals[-1]["eval_reward"] > evals[0]["eval_reward"], [e["eval_reward"] for e in evals]
        found = [w for w in warnings_for(run.events(), cfg.target_kl, cfg.max_new_tokens) if "over-optimised" in w]
        said[name] = (found, metrics, capsys.readouterr().out)
    found, metrics, log = said["punishes at"]
    assert len(found) == 1  # one sentence, however many evaluations show it
    assert "Gao et al. 2022" in found[0] and f"best at step {metrics['best_judge_step']} " in found[0]
    assert all(word in found[0] for word in ("early_stop_patience", "learning_rate", "target_kl"))
    assert log.count("over-optimised") == 1  # said once in the run's log too
    found, _, log = said["pays for at too"]
    assert found == [] and "over-optimised" not in log


def test_the_warning_needs_the_reward_up_and_the_judge_down_over_three_evaluations() -> None:
    def evals(rewards: list[float], judged: list[float], spread: float = 0.1) -> list[dict]:
        start = {"step": 0, "eval_reward_std": spread, "eval_judge_std": spread}
        return [
            {**(start if i == 0 else {"step": i}), "eval_reward": r, "eval_judge": j}
            for i, (r, j) in enumerate(zip(rewards, judged, strict=True))
        ]

    def warned(events: list[dict]) -> bool:
        return any("over-optimised" in w for w in warnings_for(events))

    assert warned(evals([0.0, 0.2, 0.4, 0.6], [0.0, 0.3, 0.2, 0.1]))
    assert not warned(evals([0.0, 0.2], [0.0, -0.2]))  # two evaluations are no trend
    assert not warned(evals([0.0, 0.2, 0.4, 0.6], [0.0, 0.1, 0.2, 0.3]))  # both rise: the reward generalises
    assert not warned(evals([0.0, 0.01, 0.0, 0.01], [0.0, -0.1, -0.2, -0.3]))  # the reward is flat: the policy is just worse
    assert not warned(evals([0.0, 0.01, 0.02, 0.03], [0.0, -0.01, -0.02, -0.03]))  # within a quarter of the spread: noise
    stays = evals([0.0, 0.2, 0.4, 0.6, 0.6], [0.0, 0.3, 0.2, 0.1, 0.35])
    [text] = [w for w in warnings_for(stays) if "over-optimised" in w]  # a judge that recovers later does not erase it
    assert "best at step 1 " in text
    assert not warned([{**e, "final": True} for e in evals([0.0, 0.2, 0.4], [0.0, -0.1, -0.2])])  # the end-of-run summary is no evaluation


# -- (d) a bad judge is refused before anything is written ----------------------------------------------
@pytest.mark.parametrize(
    ("judge", "message"),
    [
        ([{"type": "oracle"}], "heldout_judge[0]: type must be one of"),
        ([{"type": "model"}], "heldout_judge[0]: a model source needs 'model'"),
        ([{"type": "function", "function": "no_colon"}], "heldout_judge[0]: function must look like"),
        ([{"type": "judge", "model": "x", "colour": "red"}], "heldout_judge[0]: unknown key"),
        (["model:x"], "heldout_judge: expected a mapping"),
    ],
)
def test_a_bad_judge_is_refused_before_a_run_folder_exists(
    tmp_path: Path, studio_home: Path, prompts_file: Path, judge: list, message: str, capsys: pytest.CaptureFixture
) -> None:
    from rlhf.cli import main

    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(PPORunConfig, {"prompts": str(prompts_file), "rewards": PAYS_FOR_AT, "heldout_judge": judge})
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({"prompts": str(prompts_file), "policy": "tiny", "rewards": PAYS_FOR_AT, "heldout_judge": judge}))
    runs = tmp_path / "runs"
    assert main(["train", "ppo", "--config", str(path), "--runs-dir", str(runs)]) == 2
    assert message in capsys.readouterr().err
    assert not runs.exists()


def test_a_judge_needs_heldout_prompts(prompts_file: Path) -> None:
    with pytest.raises(ValueError, match="hold some prompts out"):
        config(prompts_file, heldout_judge=SHUNS_AT, eval_fraction=0.0)


# -- (e) a judge that is the training reward ------------------------------------------------------------
def test_a_judge_that_is_a_training_reward_is_warned_about(
    tmp_path: Path, registry: ModelRegistry, prompts_file: Path, tiny_lm_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = config(prompts_file, heldout_judge=[{**PAYS_FOR_AT[0], "weight": 2.0}], steps=2, eval_every=0)
    run, _ = run_ppo(tmp_path, cfg, registry)
    assert moved_from(tiny_lm_dir, saved_weights(run.checkpoint_dir))
    expected = "heldout_judge[0] (function:tests.rlhf.reward_fns:pays_for_keyword) is also a training reward"
    assert f"warning: {expected}" in capsys.readouterr().out
    shown = warnings_for(run.events(), cfg.target_kl, cfg.max_new_tokens)
    assert sum(expected in w for w in shown) == 1
    assert heldout_judge_warnings(PAYS_FOR_AT, SHUNS_AT) == []


def test_a_judge_trained_on_the_training_reward_models_data_is_warned_about() -> None:
    class Registry:
        lineages = {"rm-a": {"data": "snapshots/one"}, "rm-b": {"data": "snapshots/one"}, "rm-c": {"data": "snapshots/two"}}

        def get(self, name: str):
            return type("Entry", (), {"lineage": self.lineages[name]})

    rewards = [{"type": "model", "model": "rm-a"}]
    [text] = heldout_judge_warnings(rewards, [{"type": "model", "model": "rm-b"}], Registry())
    assert "same data (snapshots/one)" in text
    assert heldout_judge_warnings(rewards, [{"type": "model", "model": "rm-c"}], Registry()) == []
    assert heldout_judge_warnings(rewards, [{"type": "model", "model": "unregistered"}], Registry()) == []
    [same] = heldout_judge_warnings(rewards, [{"type": "model", "model": "rm-a"}], Registry())
    assert "is also a training reward" in same  # the same model: that, not the data, is the problem
