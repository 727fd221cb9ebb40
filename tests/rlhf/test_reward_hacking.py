"""A reward-hacking test bench: rigged rewards against the studio's PPO defaults, on tiny models.

A reward that pays for length, for brevity or for one word must set off :func:`rlhf.ppo.warnings_for`
within the first few steps; ``length_debias`` must take the payment for length away; the KL
controller must tighten the leash within a few batches. The rigged rewards are in
``tests/rlhf/reward_fns.py``.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from rlhf.ppo import KeywordPay, LengthFit, PPORunConfig, PPOTrainer, warnings_for
from rlhf.registry import ModelRegistry
from rlhf.rewards import build_reward

PROMPTS = [f"question {i} about the sea" for i in range(16)]
STOP_RATE = 0.05  # the chance per token that the ending model ends its reply: replies of 1 to 24 tokens, ~11 on average


def rigged(name: str) -> list[dict]:
    return [{"type": "function", "function": f"tests.rlhf.reward_fns:{name}"}]


def make_ending_lm(source: Path, folder: Path, stop_rate: float = STOP_RATE) -> Path:
    """The tiny random model, changed so that it ends a reply now and then (the original never does).

    A length reward needs replies whose length can move. The output row of the end-of-turn token
    (untied from the embeddings) is fitted by least squares on the model's own last hidden states
    so that its logit sits near ``logit(stop_rate)`` above the other tokens' log-sum-exp.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.generation import GenerationEngine, SamplingParams

    model = AutoModelForCausalLM.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    engine = GenerationEngine(model, tokenizer, batch_size=len(PROMPTS))
    [stop] = [t for t in engine.stop_ids if t == tokenizer.convert_tokens_to_ids("<|im_end|>")]
    rollouts = engine.rollout(PROMPTS * 2, SamplingParams(temperature=1.0, max_new_tokens=32, seed=0))
    with torch.no_grad():
        hidden = torch.cat(
            [
                model(input_ids=torch.tensor([r.prompt_ids + r.response_ids]), output_hidden_states=True).hidden_states[-1][
                    0, len(r.prompt_ids) - 1 :
                ]
                for r in rollouts
            ]
        )
        weight = model.lm_head.weight.detach().clone()
        logits = hidden @ weight.T
        others = torch.cat([logits[:, :stop], logits[:, stop + 1 :]], dim=1).logsumexp(-1)
        target = others + math.log(stop_rate / (1 - stop_rate))
        weight[stop] = torch.linalg.lstsq(hidden, target[:, None]).solution[:, 0]
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(weight)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/rlhf/conftest.py


@pytest.fixture(scope="module")
def ending_lm_dir(tmp_path_factory: pytest.TempPathFactory, tiny_lm_dir: Path) -> Path:
    return make_ending_lm(tiny_lm_dir, tmp_path_factory.mktemp("models") / "tiny-ending")


@pytest.fixture
def registry(studio_home: Path, tiny_lm_dir: Path, ending_lm_dir: Path) -> ModelRegistry:
    reg = ModelRegistry()
    reg.add(tiny_lm_dir, name="tiny")
    reg.add(ending_lm_dir, name="tiny-ending")
    return reg


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS))
    return path


def config(prompts_file: Path, **overrides) -> PPORunConfig:
    """The studio's defaults, but for the tiny model's size: small batches and short replies."""
    settings = dict(
        prompts=str(prompts_file),
        policy="tiny",
        rewards=rigged("pays_for_length"),
        steps=6,
        batch_size=16,
        minibatch_size=8,
        max_new_tokens=16,
        learning_rate=3e-3,
        eval_every=0,
        check_prompts=0,
    )
    return PPORunConfig(**{**settings, **overrides})


def train(trainer: PPOTrainer, steps: int) -> list[dict]:
    """``steps`` PPO steps on the same prompts; the step events, as the run would log them."""
    reward_fn = build_reward(trainer.cfg.rewards, trainer.registry)
    events = []
    for step in range(1, steps + 1):
        diag, _ = trainer.train_step(PROMPTS, [None] * len(PROMPTS), reward_fn)
        events.append({"step": step, **diag})
    return events


def trained(trainer: PPOTrainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if p.requires_grad}


def moved(before: dict[str, torch.Tensor], trainer: PPOTrainer) -> bool:
    return any(not torch.equal(p, before[n]) for n, p in trainer.policy.named_parameters() if p.requires_grad)


def first_warning(events: list[dict], cfg: PPORunConfig, text: str) -> int | None:
    """The first step after which a warning containing ``text`` is shown, or None."""
    for n in range(1, len(events) + 1):
        if any(text in w for w in warnings_for(events[:n], cfg.target_kl, cfg.max_new_tokens)):
            return n
    return None


# -- the estimators on their own -------------------------------------------------------------------
def test_the_length_fit_removes_a_linear_payment_for_length_and_little_else() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(400)]
    paid = [0.1 * x + rng.gauss(0, 1) for x in lengths]
    fit = LengthFit()
    for i in range(0, 400, 16):  # batch by batch, as the trainer feeds it
        fit.update(lengths[i : i + 16], paid[i : i + 16])
    assert fit.slope == pytest.approx(0.1, abs=0.01)
    debiased = fit.debias(lengths, paid)
    assert abs(_corr(lengths, debiased)) < 0.05 < 0.8 < _corr(lengths, paid)
    assert sum(debiased) / 400 == pytest.approx(0.0, abs=1e-9)  # centred: a level alone would pay for brevity (LengthFit)

    fair = [rng.gauss(0, 1) for _ in lengths]  # scores that do not depend on length
    fit = LengthFit()
    fit.update(lengths, fair)
    assert abs(fit.slope) < 0.01
    mean = sum(fair) / len(fair)
    assert max(abs(a - (b - mean)) for a, b in zip(fit.debias(lengths, fair), fair, strict=True)) < 0.3  # only centred

    resumed = LengthFit()
    resumed.load(json.loads(json.dumps(fit.state())))
    assert resumed.slope == fit.slope and resumed.debias([5], [1.0]) == fit.debias([5], [1.0])
    same = LengthFit()
    same.update([16] * 10, [float(i) for i in range(10)])
    assert same.slope == 0.0 and same.debias([16], [3.0]) == [3.0 - 4.5]  # no spread of length: only the mean goes


def test_keyword_pay_names_the_word_a_reward_pays_for() -> None:
    rng = random.Random(1)
    replies, scores = [], []
    for _ in range(96):
        words = rng.sample(range(10, 60), 8)
        has_keyword = rng.random() < 0.3
        replies.append(words + ([7] if has_keyword else []))
        scores.append(rng.gauss(0, 0.3) + (1.0 if has_keyword else 0.0))
    pay = KeywordPay()
    pay.update(replies, scores)
    token, r, gap = pay.top()
    assert token == 7 and r > 0.8 and gap > 1.5  # the keyword explains most of the score
    fair = KeywordPay()
    fair.update(replies, [rng.gauss(0, 1) for _ in replies])
    assert fair.top()[1] < 0.6  # no word is paid: the best-correlated one is noise
    resumed = KeywordPay()
    resumed.load(json.loads(json.dumps(pay.state())))
    assert resumed.top() == pay.top()
    assert KeywordPay().top() == (None, 0.0, 0.0)


def test_the_trend_warnings_on_made_up_runs() -> None:
    def run(rewards, lengths, **extra):
        step = {"kl": 1.0, "entropy": 2.0, "eos_rate": 0.9, **extra}
        return [{"reward_mean": r, "reply_length": x, **step} for r, x in zip(rewards, lengths, strict=True)]

    longer = run([0.1, 0.3, 0.5, 0.8], [20, 24, 28, 34])
    assert any("may pay for length" in w for w in warnings_for(longer, 6.0, 192))
    shorter = run([0.1, 0.3, 0.5, 0.8], [46, 38, 30, 19])
    assert any("may pay for brevity" in w for w in warnings_for(shorter, 6.0, 192))
    assert warnings_for(longer[:3], 6.0, 192) == []  # three steps are too few for a trend
    assert warnings_for(run([0.8, 0.5, 0.3, 0.1], [20, 24, 28, 34]), 6.0, 192) == []  # reward falling: no hack
    assert warnings_for(run([0.1, 0.3, 0.5, 0.8], [20, 21, 20, 22]), 6.0, 192) == []  # length steady
    assert warnings_for(run([0.1, 0.8, 0.2, 0.9], [20, 34, 33, 21]), 6.0, 192) == []  # length and reward unrelated

    keyword = run([0.1, 0.1, 0.1], [20] * 3, keyword=" and", keyword_corr=0.7, keyword_pay=2.5, keyword_share=0.2)
    [said] = warnings_for(keyword, 6.0, 192)  # from the third step, whether or not the reward has risen yet
    assert "' and'" in said and "explains 49%" in said and "2.5 spreads" in said
    switching = keyword[:2] + run([0.1], [20], keyword=" the", keyword_corr=0.7)
    assert warnings_for(switching, 6.0, 192) == []  # a different word each step is noise
    assert warnings_for(run([0.1] * 4, [20] * 4, keyword=" and", keyword_corr=0.4), 6.0, 192) == []  # paid a little


def _corr(xs, ys) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return sxy / math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))


# -- rigged rewards against tiny PPO runs ---------------------------------------------------------
@pytest.mark.parametrize(("reward", "said"), [("pays_for_length", "may pay for length"), ("pays_for_brevity", "may pay for brevity")])
def test_a_reward_for_length_or_brevity_is_flagged_within_six_steps(
    registry: ModelRegistry, prompts_file: Path, reward: str, said: str
) -> None:
    cfg = config(prompts_file, policy="tiny-ending", max_new_tokens=24, rewards=rigged(reward))
    trainer = PPOTrainer(cfg, registry)
    before = trained(trainer)
    events = train(trainer, 6)
    step = first_warning(events, cfg, said)
    assert step is not None and step <= 6, [(round(e["reward_mean"], 2), round(e["reply_length"], 1)) for e in events]
    assert moved(before, trainer)
    assert all(e["length_slope"] > 0.1 if reward == "pays_for_length" else e["length_slope"] < -0.1 for e in events)
    assert first_warning(events, cfg, "one word") is None  # a longer reply has more words; none of them is paid for


def test_a_reward_for_a_keyword_is_flagged_within_six_steps(registry: ModelRegistry, prompts_file: Path) -> None:
    cfg = config(prompts_file, rewards=rigged("pays_for_keyword"))
    trainer = PPOTrainer(cfg, registry)
    before = trained(trainer)
    events = train(trainer, 6)
    step = first_warning(events, cfg, "The reward pays for one word")
    assert step is not None and step <= 6, [(e["keyword"], round(e["keyword_corr"], 2)) for e in events]
    assert events[-1]["keyword"] == "at" and events[-1]["keyword_corr"] >= 0.6
    assert moved(before, trainer)


def test_length_debias_takes_the_payment_for_length_away(registry: ModelRegistry, prompts_file: Path) -> None:
    """The same length-rigged run, with and without length_debias: only the plain one grows its replies."""
    runs = {}
    for debias in (False, True):
        cfg = config(prompts_file, policy="tiny-ending", max_new_tokens=24, length_debias=debias)
        trainer = PPOTrainer(cfg, registry)
        before = trained(trainer)
        runs[debias] = train(trainer, 10)
        assert moved(before, trainer)
    plain, debiased = runs[False], runs[True]

    def late(events, key):
        return sum(e[key] for e in events[-4:]) / 4

    assert late(plain, "reply_length") > 1.3 * plain[0]["reply_length"]  # paid for length, the policy writes more
    assert late(plain, "reward_mean") > plain[0]["reward_mean"] + 0.4
    assert late(debiased, "reply_length") < late(plain, "reply_length") - 1.5, [e["reply_length"] for e in debiased]
    assert abs(late(debiased, "reward_debiased_mean")) < 0.25  # the score the policy is paid does not rise
    assert "reward_debiased_mean" not in plain[0] and debiased[0]["length_slope"] == pytest.approx(plain[0]["length_slope"])
    assert first_warning(debiased, config(prompts_file, length_debias=True), "may pay for length") is None


def test_the_kl_leash_tightens_within_a_few_steps(registry: ModelRegistry, prompts_file: Path) -> None:
    """A target far below what the run reaches: the coefficient climbs from the first steps over it."""
    cfg = config(prompts_file, rewards=rigged("likes_e"), target_kl=1.0, steps=10)
    trainer = PPOTrainer(cfg, registry)
    before = trained(trainer)
    events = train(trainer, 10)
    assert moved(before, trainer)
    coefs = [e["kl_coef"] for e in events] + [trainer.kl.value]  # each event has the coefficient its step used
    over = [i for i, e in enumerate(events) if e["kl"] > 2 * cfg.target_kl]
    assert over and over[0] <= 3, [e["kl"] for e in events]
    assert all(coefs[i + 1] > coefs[i] for i in over)  # every step over the target tightens the leash
    assert coefs[-1] >= 5 * cfg.kl_coef, coefs  # 5x within ten steps (the old controller: +2% over the run)


def test_the_diagnostics_survive_a_checkpoint(registry: ModelRegistry, prompts_file: Path, tmp_path: Path) -> None:
    cfg = config(prompts_file, policy="tiny-ending", max_new_tokens=24)
    trainer = PPOTrainer(cfg, registry)
    train(trainer, 2)
    trainer.save_state(tmp_path / "checkpoint-2", {})
    resumed = PPOTrainer(cfg, registry)
    resumed.load_state(tmp_path / "checkpoint-2")
    assert resumed.length_fit.state() == trainer.length_fit.state() and resumed.length_fit.count == 32
    assert resumed.keyword_pay.top() == trainer.keyword_pay.top()
    assert resumed.kl.value == trainer.kl.value
