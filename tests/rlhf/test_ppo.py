"""PPO on tiny models: the maths, rising reward, an untouched reference, cancel and resume, reward sources."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from rlhf.config import ConfigError, config_from_dict
from rlhf.generation import Rollout
from rlhf.ppo import (
    KL_COEF_BOUNDS,
    AdaptiveKL,
    PPORunConfig,
    PPOTrainer,
    distinct_share,
    gae,
    is_runaway,
    masked_whiten,
    missing_eos_penalties,
    train_ppo,
    warnings_for,
)
from rlhf.registry import ModelRegistry
from rlhf.rewards import JudgeReward, RewardSpecError, SimilarityReward, build_reward, check_specs
from rlhf.runs import RunDir, run_guard

LIKES_E = [{"type": "function", "function": "tests.rlhf.reward_fns:likes_e"}]


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


def config(prompts_file: Path, **overrides) -> PPORunConfig:
    settings = dict(
        prompts=str(prompts_file),
        policy="tiny",
        rewards=LIKES_E,
        steps=20,
        batch_size=16,
        minibatch_size=8,
        max_new_tokens=16,
        learning_rate=3e-3,
        eval_every=0,
        save_every=5,
        check_prompts=0,  # the independent check has its own test
    )
    return PPORunConfig(**{**settings, **overrides})


def run_ppo(tmp_path: Path, cfg: PPORunConfig, registry: ModelRegistry, stop=None, run: RunDir | None = None, resume: bool = False):
    run = run or RunDir.create(tmp_path / "runs", "ppo", {})
    with run_guard(run, handle_sigterm=False) as default_stop:
        metrics = train_ppo(cfg, run, stop if stop is not None else default_stop, registry=registry, resume=resume)
    return run, metrics


# -- the maths ----------------------------------------------------------------------------------------
def test_gae_matches_a_hand_computation() -> None:
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0], [0.5, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.4, 0.5, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    gamma, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for row in range(2):
        n = int(mask[row].sum())
        r, v = rewards[row, :n].tolist(), values[row, :n].tolist() + [0.0]  # nothing after the reply ends
        expected, running = [0.0] * n, 0.0
        for t in reversed(range(n)):
            running = r[t] + gamma * v[t + 1] - v[t] + gamma * lam * running
            expected[t] = running
        assert adv[row, :n].tolist() == pytest.approx(expected, abs=1e-6)
        assert ret[row, :n].tolist() == pytest.approx([a + b for a, b in zip(expected, v[:n], strict=True)], abs=1e-6)
        assert adv[row, n:].abs().sum() == 0  # padding carries nothing


def test_whitening_and_the_kl_controller() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, mask)[:, :3]
    assert w.mean().item() == pytest.approx(0.0, abs=1e-5) and w.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)
    kl = AdaptiveKL(0.1, target=6.0, gain=0.3)
    kl.update(12.0)  # above target: the leash tightens
    assert kl.value > 0.1
    kl = AdaptiveKL(0.1, target=6.0, gain=0.3)
    kl.update(1.0)
    assert kl.value < 0.1
    fixed = AdaptiveKL(0.1, target=None, gain=0.3)
    fixed.update(50.0)
    assert fixed.value == 0.1


def test_the_kl_controller_reacts_within_a_few_steps() -> None:
    """Driven by a synthetic KL that the coefficient holds down: 3x the target at the starting 0.05, inversely with it.

    The run the issue measured: KL 16 nats against a target of 6, for a few hundred episodes, left
    the old controller (horizon 10,000 episodes) where it started. The new one moves per step.
    """
    target = 6.0
    kl = AdaptiveKL(0.05, target=target, gain=0.3)
    history = []
    for _ in range(30):
        measured = 3 * target * 0.05 / kl.value  # a tighter leash gives a smaller KL
        history.append(measured)
        kl.update(measured)
    assert history[0] == 3 * target
    assert next(i for i, m in enumerate(history) if m < 1.5 * target) <= 8  # within 1.5x of the target in 8 steps
    assert history[-1] == pytest.approx(target, rel=0.15)  # and settled near it
    stays = AdaptiveKL(0.05, target=target, gain=0.3)
    for _ in range(8):
        stays.update(3 * target)  # a KL that stays at 3x the target
    assert stays.value > 10 * 0.05  # 10x in 8 steps
    for _ in range(8):
        stays.update(target / 3)  # below the target: the leash is let out, more slowly
    assert 0.05 < stays.value < 10 * 0.05
    low, high = AdaptiveKL(1e-3, target=target, gain=2.0), AdaptiveKL(5.0, target=target, gain=2.0)
    for _ in range(50):
        low.update(0.0)  # a batch's estimate can be 0 or below while the policy sits on the reference
        high.update(math.inf)
    assert low.value == KL_COEF_BOUNDS[0] and high.value == KL_COEF_BOUNDS[1]  # it can neither vanish nor explode
    high.update(float("nan"))
    assert high.value == KL_COEF_BOUNDS[1]
    assert AdaptiveKL(0.0, target=target, gain=0.3).value == KL_COEF_BOUNDS[0]  # 0 could never move
    assert AdaptiveKL(0.0, target=None, gain=0.3).value == 0.0  # a fixed 0 stays 0 (no KL penalty)


def test_old_configs_with_kl_horizon_still_load(prompts_file: Path) -> None:
    with pytest.warns(FutureWarning, match="kl_horizon .* no longer used"):
        cfg = config_from_dict(PPORunConfig, {"prompts": str(prompts_file), "rewards": LIKES_E, "kl_horizon": 10000})
    assert cfg.kl_gain == 0.3 and cfg.kl_horizon == 10000
    with pytest.raises(ConfigError, match="kl_gain must be in"):
        config_from_dict(PPORunConfig, {"prompts": str(prompts_file), "rewards": LIKES_E, "kl_gain": -1})
    with pytest.raises(ConfigError, match="target_kl must be > 0"):
        config_from_dict(PPORunConfig, {"prompts": str(prompts_file), "rewards": LIKES_E, "target_kl": 0})


# -- training -------------------------------------------------------------------------------------------
def _reference_logits(trainer: PPOTrainer, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), trainer.reference():
        return trainer.policy(input_ids=ids).logits


@pytest.mark.parametrize("method", ["lora", "top_layers"])
def test_ppo_raises_the_reward_and_keeps_the_reference(tmp_path: Path, registry: ModelRegistry, prompts_file: Path, method: str) -> None:
    from rlhf.loading import load_causal_lm

    # The tiny random model never ends a reply within 16 tokens. Penalising every cut reply (the
    # old rule, runaway_threshold 1) shifts every score by -1, and this toy learns faster with the
    # value head starting at 0 below its scores (seeds 0-3: 3 of 4 rise within 20 steps, against 1 of
    # 4 without the shift); the test is about the PPO machinery, so it keeps the setting it was tuned with.
    # For the same reason it keeps the KL coefficient fixed, as the old controller (horizon 10,000
    # episodes) all but did: the per-step one tightens the leash once this toy's KL passes 6 nats
    # (from about step 8) and holds the reward back; tests/rlhf/test_reward_hacking.py tests it.
    lr = 3e-3 if method == "lora" else 1e-3
    cfg = config(prompts_file, method=method, top_layers=1, learning_rate=lr, runaway_threshold=1.0, adaptive_kl=False)
    trainer = PPOTrainer(cfg, registry)
    base, _ = load_causal_lm("tiny", registry, device="cpu", dtype=torch.float32)
    ids = torch.tensor([trainer.tokenizer("question 3 about the sea")["input_ids"]])
    with torch.no_grad():
        original = base(input_ids=ids).logits
    assert torch.allclose(_reference_logits(trainer, ids), original, atol=1e-5)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if p.requires_grad}

    reward_fn = build_reward(LIKES_E, registry)
    prompts = [f"question {i} about the sea" for i in range(16)]
    history = []
    for _ in range(cfg.steps):
        diag, samples = trainer.train_step(prompts, [None] * 16, reward_fn)
        history.append(diag)
        assert math.isfinite(diag["kl"]) and math.isfinite(diag["value_loss"])
    early = sum(d["reward_mean"] for d in history[:5]) / 5
    late = sum(d["reward_mean"] for d in history[-5:]) / 5
    assert late > early + 0.1, [round(d["reward_mean"], 2) for d in history]
    changed = [n for n, p in trainer.policy.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed, "no trained parameter moved"
    with torch.no_grad():
        tuned = trainer.policy(input_ids=ids).logits
    assert not torch.allclose(tuned, original, atol=1e-4)  # the policy moved ...
    assert torch.allclose(_reference_logits(trainer, ids), original, atol=1e-5)  # ... the reference did not
    if method == "top_layers":
        frozen = [n for n, p in trainer.policy.named_parameters() if not p.requires_grad]
        assert any("layers.0." in n for n in frozen) and all("layers.0." not in n for n in changed)
    assert {"reward_mean", "reward_std", "kl", "entropy", "reply_length", "eos_rate", "clipfrac", "value_loss", "approx_kl"} <= set(diag)
    assert len(samples) == 16 and {"prompt", "reply", "reward", "ended"} <= set(samples[0])


def test_a_run_registers_the_policy_and_resumes_after_a_stop(tmp_path: Path, registry: ModelRegistry, prompts_file: Path) -> None:
    class StopAfter:
        """A stop request that fires after the trainer has checked it n times (one check per step)."""

        def __init__(self, n: int) -> None:
            self.n = n

        def __bool__(self) -> bool:
            self.n -= 1
            return self.n < 0

    cfg = config(prompts_file, steps=6, save_every=0, eval_every=3, sample_every=2, register_as="tiny-ppo")
    run, metrics = run_ppo(tmp_path, cfg, registry, stop=StopAfter(3))
    assert metrics["stopped_early"] and metrics["steps"] < 6
    last = run.last_checkpoint()
    state = json.loads((last / "state.json").read_text()) if last is not None else {}
    assert state.get("step") == metrics["steps"] and {"kl_coef", "score_std", "length_fit", "keyword_pay"} <= set(state)
    assert "tiny-ppo" not in registry.names()  # a stopped run is not registered
    stopped_at = metrics["steps"]

    run, metrics = run_ppo(tmp_path, cfg, registry, run=run, resume=True)
    steps = [e["step"] for e in run.events() if "reward_mean" in e]
    assert steps == list(range(1, 7))  # no step trained twice, none skipped
    assert metrics["steps"] == 6 and not metrics["stopped_early"] and stopped_at < 6
    assert {"eval_reward_start", "eval_reward_end", "eval_kl_end", "eval_reward_gain"} <= set(metrics)
    assert any("samples" in e for e in run.events())
    assert all({"length_slope", "keyword", "keyword_corr", "kl_coef"} <= set(e) for e in run.events() if "reward_mean" in e)
    entry = registry.get("tiny-ppo")
    assert entry.kind == "causal-lm" and entry.lineage["policy"] == "tiny"
    from rlhf.generation import GenerationEngine, SamplingParams
    from rlhf.loading import load_causal_lm

    model, tok = load_causal_lm("tiny-ppo", registry, device="cpu")
    [reply] = GenerationEngine(model, tok).generate(["hello"], SamplingParams(temperature=0, max_new_tokens=5))
    assert reply.new_tokens > 0  # the registered checkpoint chats


def test_a_separate_value_model(tmp_path: Path, registry: ModelRegistry, prompts_file: Path) -> None:
    cfg = config(prompts_file, value_model="tiny", steps=2)
    trainer = PPOTrainer(cfg, registry)
    before = [p.detach().clone() for p in trainer.value_trunk.parameters()]
    diag, _ = trainer.train_step([f"q {i}" for i in range(16)], [None] * 16, build_reward(LIKES_E, registry))
    assert math.isfinite(diag["value_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.value_trunk.parameters(), strict=True))


# -- reward sources and config errors --------------------------------------------------------------
def test_judge_and_similarity_rewards(registry: ModelRegistry, tiny_encoder_dir: Path) -> None:
    registry.add(tiny_encoder_dir, name="tiny-enc")
    judge = JudgeReward("tiny", registry, device="cpu")
    scores = judge(["What is 2+2?", "Hi"], ["4", "Hello there, friend"], [None, None])
    assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
    assert scores == pytest.approx(judge(["What is 2+2?"], ["4"], [None]) + judge(["Hi"], ["Hello there, friend"], [None]), abs=1e-4)
    sim = SimilarityReward("tiny-enc", registry, device="cpu")
    same, other = sim(["q", "q"], ["the sea is wide", "capital of France"], ["the sea is wide", "the sea is wide"])
    assert same == pytest.approx(1.0, abs=1e-4) and other < same
    with pytest.raises(RewardSpecError, match="reference answer"):
        sim(["q"], ["a"], [None])
    combined = build_reward(LIKES_E + [{"type": "function", "function": "tests.rlhf.reward_fns:likes_e", "weight": -2.0}], registry)
    total, parts = combined(["p"], ["eeee"], [None])
    assert total == [pytest.approx(1.0 - 2.0)] and list(parts) == ["function:tests.rlhf.reward_fns:likes_e"]


@pytest.mark.parametrize(
    ("rewards", "message"),
    [
        ([], "at least one reward source"),
        ([{"type": "oracle"}], "type must be one of"),
        ([{"type": "model"}], "needs 'model'"),
        ([{"type": "function", "function": "no_colon"}], "module.path:function_name"),
        ([{"type": "judge", "model": "x", "template": "no placeholders"}], "{prompt} and {reply}"),
        ([{"type": "model", "model": "x", "colour": "red"}], "unknown key"),
    ],
)
def test_bad_reward_specs_are_named(rewards: list, message: str) -> None:
    with pytest.raises(RewardSpecError, match=re.escape(message)):
        check_specs(rewards)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict(PPORunConfig, {"prompts": "p.jsonl", "rewards": rewards})


def test_a_failing_reward_function_fails_the_run_with_its_message(tmp_path: Path, registry: ModelRegistry, prompts_file: Path) -> None:
    cfg = config(prompts_file, rewards=[{"type": "function", "function": "tests.rlhf.reward_fns:broken"}], steps=2)
    with pytest.raises(RuntimeError, match="always fails"):
        run_ppo(tmp_path, cfg, registry)
    [run_path] = (tmp_path / "runs").iterdir()
    status = json.loads((run_path / "status.json").read_text())
    assert status["state"] == "failed" and "always fails" in status["error"]


def test_warnings_for_reward_hacking() -> None:
    def calm_at(length: float) -> list[dict]:
        return [{"reward_mean": 0.1 * i, "kl": 1.0, "entropy": 2.0, "reply_length": length, "eos_rate": 0.9} for i in range(5)]

    calm = calm_at(20)
    assert warnings_for(calm, 6.0, 48) == []
    runaway = calm + [{"reward_mean": 1.0, "kl": 40.0, "entropy": 0.1, "reply_length": 48, "eos_rate": 0.0}] * 3
    text = " ".join(warnings_for(runaway, 6.0, 48))
    assert "KL is running away" in text and "never end" in text and "Entropy has collapsed" in text
    empty = calm + [{"reward_mean": 1.0, "kl": 1.0, "entropy": 2.0, "reply_length": 1, "eos_rate": 1.0}]
    assert "collapsed to (almost) nothing" in " ".join(warnings_for(empty, 6.0, 48))
    # (Replies already long before: a reward that rose as they grew would be flagged as paying for length.)
    long = calm_at(150) + [{"reward_mean": 1.0, "kl": 1.0, "entropy": 2.0, "reply_length": 150, "eos_rate": 0.5, "runaway_rate": 0.0}] * 3
    assert warnings_for(long, 6.0, 192) == []  # half the replies cut at the cap, none looping: nothing wrong
    unlucky = calm_at(190) + [{"reward_mean": 1.0, "kl": 1.0, "entropy": 2.0, "reply_length": 190, "eos_rate": 0.0, "runaway_rate": 0.0}]
    assert warnings_for(unlucky, 6.0, 192) == []  # one batch in which no reply ended is chance, not a trend
    loops = calm_at(190) + [{"reward_mean": 1.0, "kl": 1.0, "entropy": 2.0, "reply_length": 190, "eos_rate": 0.5, "runaway_rate": 0.5}] * 3
    assert "50% of the replies loop" in " ".join(warnings_for(loops, 6.0, 192))


# -- the missing-end penalty: runaway loops only -------------------------------------------------------
VARIED = [(7 * i + 3) % 251 for i in range(192)]  # 192 tokens, no 4-token run twice
LOOP = VARIED[:60] + [11, 12, 13, 14, 15, 16] * 22  # starts well, then repeats 6 tokens to the cap
# A long list: every item starts the same way ("- **", ":") and shares words, but says new things.
LIST = [t for i in range(16) for t in (5, 6, 7, 40 + i, 8, 100 + 3 * i, 101 + 3 * i, 102 + 3 * i, 9, 200 + i, 150 + i, 10)]


def test_a_loop_is_runaway_and_a_long_varied_reply_is_not() -> None:
    assert distinct_share(VARIED) == 1.0 and not is_runaway(VARIED, 0.5)
    assert distinct_share(LOOP) < 0.1 and is_runaway(LOOP, 0.5)
    assert len(LIST) == 192 and distinct_share(LIST) > 0.8 and not is_runaway(LIST, 0.5)
    assert is_runaway([42] * 30, 0.5)  # one token over and over
    assert not is_runaway([1, 2, 3, 1, 2], 0.5)  # too short to tell: never a loop
    assert not is_runaway(LOOP, 0.0) and is_runaway(VARIED, 1.0)  # 0 = never, 1 = every cut reply


def _rollout(response: list[int], finished: bool) -> Rollout:
    return Rollout(prompt_ids=[1, 2, 3], response_ids=response, text="x", finished=finished)


def test_the_missing_end_penalty_hits_only_runaway_cut_replies() -> None:
    rollouts = [_rollout(LOOP, False), _rollout(VARIED, False), _rollout(LIST, False), _rollout([*LOOP[:40], 0], True)]
    penalties, runaway = missing_eos_penalties(rollouts, -1.0, 0.5)
    assert penalties == [-1.0, 0.0, 0.0, 0.0]  # a loop cut at the cap; not a long varied or finished reply
    assert runaway == [True, False, False, False]
    assert missing_eos_penalties(rollouts, None, 0.5) == ([0.0] * 4, runaway)  # no penalty: still counted
    assert missing_eos_penalties(rollouts, -1.0, 1.0)[0] == [-1.0, -1.0, -1.0, 0.0]  # 1: every cut reply, as before
    with pytest.raises(ValueError, match="runaway_threshold"):
        PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, runaway_threshold=1.5)


@pytest.mark.parametrize(("response", "finished", "penalised"), [(LOOP, False, True), (VARIED, False, False), (LOOP[:50], True, False)])
def test_a_ppo_step_adds_the_penalty_to_a_runaway_reply_only(
    registry: ModelRegistry, prompts_file: Path, monkeypatch: pytest.MonkeyPatch, response: list[int], finished: bool, penalised: bool
) -> None:
    """Through a real step on the tiny model: the score the update uses is the reward plus the penalty."""
    cfg = config(prompts_file, batch_size=2, minibatch_size=2, ppo_epochs=1, max_new_tokens=len(response), reward_scaling=False)
    trainer = PPOTrainer(cfg, registry)
    tokens = len(trainer.tokenizer)
    rows = [[t % tokens for t in response], [t % tokens for t in VARIED[:20]] + [trainer.engine.stop_ids[0]]]
    monkeypatch.setattr(trainer, "rollout", lambda prompts, refs, seed=None: [_rollout(rows[0], finished), _rollout(rows[1], True)])
    diag, _ = trainer.train_step(["a question", "another"], [None, None], build_reward(LIKES_E, registry))
    assert diag["score_mean"] - diag["reward_mean"] == pytest.approx(-0.5 if penalised else 0.0)  # -1 on one reply of two
    assert diag["runaway_rate"] == (0.5 if penalised else 0.0)


def test_reply_log_probs_match_a_full_forward_pass(registry: ModelRegistry, prompts_file: Path) -> None:
    """The trainer scores only the reply's positions; the figures equal a plain full pass, row by row."""
    from rlhf.ppo import layout

    trainer = PPOTrainer(config(prompts_file), registry)
    rollouts = trainer.rollout(["hi", "tell me about the sea please"], [None, None], seed=3)
    batch = layout(rollouts, trainer.tokenizer.pad_token_id, trainer.device)
    with torch.no_grad():
        logp, values, entropy = trainer._forward(batch, slice(0, 2), with_values=True)
        for row, r in enumerate(rollouts):
            ids = torch.tensor([r.prompt_ids + r.response_ids])
            full = trainer.policy(input_ids=ids).logits[0].log_softmax(-1)
            n_prompt = len(r.prompt_ids)
            expected = [full[n_prompt - 1 + t, tok].item() for t, tok in enumerate(r.response_ids)]
            got = logp[row, : len(r.response_ids)].tolist()
            assert got == pytest.approx(expected, abs=1e-4)
    assert values.shape == logp.shape and entropy.shape == logp.shape


def test_ppo_takes_several_processes_with_accelerate() -> None:
    # Data parallelism (tests/rlhf/test_scale_out.py): several processes need the accelerate launcher.
    with pytest.raises(ValueError, match="needs launcher: accelerate"):
        PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, num_processes=2)
    assert PPORunConfig(prompts="p.jsonl", rewards=LIKES_E, launcher="accelerate", num_processes=2).num_processes == 2


def test_micro_batches_give_the_same_update(registry: ModelRegistry, prompts_file: Path) -> None:
    reward_fn = build_reward(LIKES_E, registry)
    prompts = [f"question {i} about the sea" for i in range(8)]
    trained = []
    for micro in (8, 3):
        trainer = PPOTrainer(config(prompts_file, batch_size=8, minibatch_size=8, micro_batch_size=micro, ppo_epochs=2), registry)
        torch.manual_seed(11)  # the same rollouts for both
        diag, _ = trainer.train_step(prompts, [None] * 8, reward_fn)
        trained.append(({n: p.detach().clone() for n, p in trainer.policy.named_parameters() if p.requires_grad}, diag))
    (a, da), (b, db) = trained
    assert all(torch.allclose(a[n], b[n], atol=1e-5) for n in a)
    assert da["policy_loss"] == pytest.approx(db["policy_loss"], abs=1e-5) and da["clipfrac"] == pytest.approx(db["clipfrac"], abs=1e-6)


def test_a_finished_run_is_judged_against_its_start_by_an_independent_judge(
    tmp_path: Path, registry: ModelRegistry, prompts_file: Path
) -> None:
    # Trained on "more e's" (reward_fns:likes_e); judged by a separate pairwise judge with the same
    # taste, asked in both orders: the trained policy should win on held-out prompts.
    # A fixed KL coefficient, as in the test above: this toy's KL passes the target within ten steps
    # and the per-step controller would hold the policy back (that is its job; the check's is here).
    cfg = config(prompts_file, check_judge="function:tests.rlhf.judge_fns:likes_e", check_prompts=8, eval_fraction=0.2, adaptive_kl=False)
    run, metrics = run_ppo(tmp_path, cfg, registry)
    assert metrics["judged_win_rate_vs_start"] > 0.5, metrics
    low, high = metrics["judged_win_rate_vs_start_low"], metrics["judged_win_rate_vs_start_high"]
    assert low <= metrics["judged_win_rate_vs_start"] <= high
    assert metrics["check_judge"] == "function tests.rlhf.judge_fns:likes_e" and metrics["check_warnings"] == 0
    results = json.loads((run.path / "check" / "results.json").read_text())
    assert results["contenders"][0]["contender"] == "trained" and results["baseline"] == "start"
    assert len((run.path / "check" / "prompts.jsonl").read_text().splitlines()) == 8
    assert run.metrics()["judged_win_rate_vs_start"] == metrics["judged_win_rate_vs_start"]


def test_judging_with_the_training_reward_says_so_and_a_broken_check_keeps_the_model(
    tmp_path: Path, registry: ModelRegistry, prompts_file: Path
) -> None:
    cfg = config(prompts_file, steps=2, check_judge="function:tests.rlhf.reward_fns:likes_e", check_prompts=4, register_as="tiny-ppo")
    _, metrics = run_ppo(tmp_path, cfg, registry)
    assert metrics["check_warnings"] == 1  # the judge is the training reward: the figure measures the proxy
    cfg = config(prompts_file, steps=2, check_judge="function:tests.rlhf.reward_fns:broken", check_prompts=4, register_as="tiny-ppo-2")
    _, metrics = run_ppo(tmp_path, cfg, registry)
    assert "always fails" in metrics["check_error"] and registry.get("tiny-ppo-2").kind == "causal-lm"


def test_bad_check_judges_are_refused_in_the_config(prompts_file: Path) -> None:
    with pytest.raises(ValueError, match="reward_model:NAME"):
        config(prompts_file, check_judge="oracle")
