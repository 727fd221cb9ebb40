"""PPO for language models: our own trainer (trl 1.13+ ships none).

    rlhf-studio train ppo --config run.yaml        # or: python -m rlhf train ppo ...

One PPO step:
1. Rollout: a batch of prompts, one sampled reply each, through the batched generation engine.
2. Score the replies as text (``rlhf.rewards``: reward model, Python function, AI judge, or a
   weighted mix); with ``length_debias``, the score's linear dependence on reply length (fitted
   over every rollout so far: :class:`LengthFit`) is removed; a penalty for runaway replies (cut
   at ``max_new_tokens`` while repeating themselves: :func:`is_runaway`; a reply that is only
   long is truncated, not penalised); scaling by the running spread and clipping.
3. One no-grad pass of the policy gives per-token log-probs and values (value head on the
   policy's last hidden state, or a separate small value model); one pass of the reference gives
   its log-probs. The reference is the policy with its LoRA adapters switched off (with
   ``method: top_layers``, the original weights of the trained layers swapped back in), never a
   second copy of the model.
4. Per-token reward = -kl_coef * (log p - log p_ref), plus the score on the reply's last token;
   GAE (gamma, lambda) gives advantages and returns; advantages are whitened.
5. ``ppo_epochs`` passes over shuffled minibatches: clipped policy loss, clipped value loss,
   gradient clipping. The KL coefficient adapts toward ``target_kl`` once per step
   (:class:`AdaptiveKL`, in log space, so it reacts within a few batches) or stays fixed.

Every step appends its diagnostics to events.jsonl (reward mean and spread, KL, entropy, reply
length, end-of-turn rate, runaway rate, the reward's slope on length, the word the reward pays
most for, clip fraction, value loss, approximate KL; sample replies every N steps);
:func:`warnings_for` reads them for signs of reward hacking: a runaway KL, collapsed or looping
replies, a rising reward that pays for length or brevity, a reward that pays for one word.

Held-out evaluations (at the start, every ``eval_every`` steps and at the end) sample replies to
the held-out prompts with a fixed seed and log the training reward, KL, and reply length. With a
``heldout_judge`` (a reward source the policy is not trained on, e.g. a reward model trained on
other pairs) the same replies are also scored by it (``eval_judge``): when the training reward
keeps rising while the judge falls, the training reward is being over-optimised (Gao et al. 2022,
"Scaling laws for reward model overoptimization") and :func:`warnings_for` says so. With
``early_stop_patience`` the run stops once the judge has not improved for that many evaluations
and saves the policy of the judge's best evaluation (:class:`JudgeWatch`; the best weights and the
count are in every trainer checkpoint, so a resumed run keeps them).

Data parallelism: under ``accelerate launch`` with N processes (``launcher: accelerate``,
``num_processes: N``, ``accelerate_config: ddp``; gloo on a CPU, nccl on GPUs) every process holds
the whole policy and rolls out its own contiguous share of each step's batch (``batch_size`` stays
the whole batch). The per-reply figures that batch statistics need (scores, lengths, words) are
gathered, so reward scaling, the length fit and the keyword watch see the whole batch in the same
order as one process would; advantage whitening, the KL the controller reads and the logged means
are summed across processes. Each minibatch is the same set of replies as in one process; every
process backpropagates its own rows of it with the loss divided by the minibatch's token count over
all processes, and the gradients are summed before the optimizer step, so every process takes the
same step (the one a single process would take on the same replies) and keeps identical weights.
Replies are sampled per prompt (``seed_per_prompt``), so they do not depend on how the batch is
split. Rank 0 alone evaluates, saves and writes the run folder; a stop request (SIGTERM) is agreed
at every step boundary, so all processes stop after the same step.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf.launch import (
    CheckFields,
    LaunchFields,
    all_sum,
    any_process,
    broadcast,
    broadcast_tensor,
    gather,
    init_distributed,
    is_main_process,
    world_size,
)
from rlhf.rewards import RewardSpecError, check_specs, source_name

RUNAWAY_NGRAM = 4  # the runaway test counts distinct runs of this many tokens
RUNAWAY_THRESHOLD = 0.5  # a cut reply whose second half has at most this share of them distinct loops
KL_COEF_BOUNDS = (1e-4, 10.0)  # the adaptive coefficient stays inside: it can neither vanish nor swamp the reward
KL_RELEASE = 3.0  # the adaptive coefficient falls this many times slower than it rises (see AdaptiveKL)
KEYWORD_MIN_REPLIES = 5  # a token is weighed as a keyword once at least this many replies so far have it, and as many lack it
KEYWORD_CORRELATION = 0.6  # warn when one token's presence correlates this much with the score (r² = 36%), three steps running


def _default_rewards() -> list[dict]:
    return [{"type": "judge", "model": "smollm2-135m-instruct", "weight": 1.0}]


@dataclass
class PPORunConfig(CheckFields, LaunchFields):
    prompts: str = field(
        default="", metadata={"help": "prompts file (.jsonl/.json/.csv/.parquet with prompt/messages/instruction, or .txt)"}
    )
    policy: str = field(default="smollm2-135m-instruct", metadata={"help": "registered causal LM (or SFT checkpoint) to tune"})
    rewards: list[dict] = field(
        default_factory=_default_rewards, metadata={"help": "reward sources: type model/function/similarity/judge + weight"}
    )
    system: str | None = field(default=None, metadata={"help": "system prompt for every rollout"})
    method: str = field(
        default="lora", metadata={"help": "lora (adapters; reference = adapters off) or top_layers (train the top N layers)"}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling"})
    top_layers: int = field(default=2, metadata={"help": "layers trained with method top_layers"})
    value_model: str | None = field(
        default=None, metadata={"help": "separate value model (same tokenizer); empty = value head on the policy"}
    )
    steps: int = field(default=20, metadata={"help": "PPO steps (one rollout batch each)"})
    batch_size: int = field(default=16, metadata={"help": "prompts per rollout batch"})
    minibatch_size: int = field(default=8, metadata={"help": "replies per gradient step"})
    micro_batch_size: int = field(default=4, metadata={"help": "replies per forward/backward pass (bounds memory; same update)"})
    ppo_epochs: int = field(default=4, metadata={"help": "passes over each rollout batch"})
    max_new_tokens: int = field(
        default=192,
        metadata={
            "help": "longest reply in tokens; a reply cut here is scored as it stands (unless it loops), "
            "and a step's time grows in proportion (192: 4x the cost of 48; the length eval compare uses)"
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the rollouts"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass of the rollouts"})
    seed_per_prompt: bool = field(
        default=False,
        metadata={
            "help": "sample each reply from its own random stream (from seed, step and its place in the batch), so the replies "
            "do not depend on how the batch is batched or split across processes; always on with num_processes > 1"
        },
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate"})
    kl_coef: float = field(
        default=0.05, metadata={"help": "initial KL penalty coefficient (the adaptive controller keeps it within [0.0001, 10])"}
    )
    adaptive_kl: bool = field(default=True, metadata={"help": "adapt kl_coef toward target_kl after every step (else fixed)"})
    target_kl: float = field(default=6.0, metadata={"help": "target KL per reply (nats) for the adaptive controller"})
    kl_gain: float = field(
        default=0.3,
        metadata={
            "help": "speed of the adaptive controller, per PPO step: kl_coef *= exp(kl_gain * clip(ln(KL / target_kl), -1, 1)); "
            "0.3: a KL 2.7x the target multiplies kl_coef by 1.35 each step (10x in 8 steps); below the target it falls 3x slower "
            "(a KL under target/2.7 divides it by 1.1 a step)"
        },
    )
    kl_horizon: int | None = field(
        default=None,
        metadata={
            "help": "no longer used, kept so older configs load: the old controller's horizon in episodes "
            "(10000 barely moved kl_coef within a run); kl_gain sets the controller's speed now"
        },
    )
    length_debias: bool = field(
        default=False,
        metadata={
            "help": "remove the reward's linear preference for reply length: each score less the least-squares line of score "
            "on reply length in tokens, fitted over every rollout so far (mean score + slope * (length - mean length)), so longer "
            "or shorter replies earn nothing for their length alone; the slope is logged as length_slope either way"
        },
    )
    gamma: float = field(default=1.0, metadata={"help": "discount"})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda"})
    cliprange: float = field(default=0.2, metadata={"help": "policy ratio clip"})
    cliprange_value: float = field(default=0.2, metadata={"help": "value clip"})
    vf_coef: float = field(default=0.1, metadata={"help": "value loss weight"})
    whiten_advantages: bool = field(default=True, metadata={"help": "normalise advantages per batch"})
    reward_scaling: bool = field(default=True, metadata={"help": "divide scores by their running standard deviation"})
    reward_clip: float = field(default=10.0, metadata={"help": "clip scaled scores to [-x, x]"})
    missing_eos_penalty: float | None = field(
        default=-1.0,
        metadata={"help": "added to the score of runaway replies: cut at max_new_tokens and looping (see runaway_threshold; empty = none)"},
    )
    runaway_threshold: float = field(
        default=RUNAWAY_THRESHOLD,
        metadata={
            "help": "a reply cut at max_new_tokens loops when at most this share of the 4-token runs in its second half are distinct; "
            "a cut reply that does not loop is only truncated (1 = penalise every cut reply, 0 = none)"
        },
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    eval_fraction: float = field(default=0.1, metadata={"help": "share of prompts held out for evaluation (ignored with eval_prompts)"})
    eval_prompts: str | None = field(default=None, metadata={"help": "a separate held-out prompts file (optional)"})
    eval_every: int = field(default=10, metadata={"help": "evaluate on held-out prompts every N steps (0 = start and end only)"})
    heldout_judge: list[dict] = field(
        default_factory=list,
        metadata={
            "help": "a reward source the policy is NOT trained on (same format as rewards), e.g. a reward model trained on other "
            "pairs: it also scores the held-out replies at every evaluation (eval_judge), so a training reward that keeps rising "
            "while this judge falls shows over-optimisation, and early_stop_patience can stop before it; a source that is also "
            "in rewards measures the proxy (a warning says so); empty = off"
        },
    )
    early_stop_patience: int = field(
        default=0,
        metadata={
            "help": "with a heldout_judge: stop when eval_judge has not beaten its best by more than early_stop_min_delta for this "
            "many evaluations in a row (one every eval_every steps), and save the policy of the judge's best evaluation instead of "
            "the last step's (also when the run reaches steps); 0 = off"
        },
    )
    early_stop_min_delta: float = field(
        default=0.0, metadata={"help": "the least rise over its best that counts as an improvement of eval_judge (early_stop_patience)"}
    )
    sample_every: int = field(default=5, metadata={"help": "log sample replies every N steps"})
    save_every: int = field(default=10, metadata={"help": "save a resumable checkpoint every N steps"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    register_as: str | None = field(default=None, metadata={"help": "registry name for the result (default: the run id)"})

    def __post_init__(self) -> None:
        self.check_launch()
        self.check_end_check()
        if self.batch_size < self.num_processes:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be at least num_processes ({self.num_processes}): each rolls out a share"
            )
        if self.method not in ("lora", "top_layers"):
            raise ValueError(f"method must be 'lora' or 'top_layers', got {self.method!r}")
        for name in ("steps", "batch_size", "minibatch_size", "micro_batch_size", "ppo_epochs", "max_new_tokens", "top_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.micro_batch_size = min(self.micro_batch_size, self.minibatch_size)
        if self.minibatch_size > self.batch_size:
            raise ValueError(f"minibatch_size ({self.minibatch_size}) cannot exceed batch_size ({self.batch_size})")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not 0 <= self.runaway_threshold <= 1:
            raise ValueError(f"runaway_threshold must be in [0, 1], got {self.runaway_threshold}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0: PPO needs sampled replies")
        if self.adaptive_kl and not self.target_kl > 0:
            raise ValueError(f"target_kl must be > 0 with adaptive_kl, got {self.target_kl}")
        if not 0 <= self.kl_gain <= 2:
            raise ValueError(f"kl_gain must be in [0, 2] (0.3 is a good start), got {self.kl_gain}")
        if self.kl_horizon is not None:
            warnings.warn(
                f"kl_horizon ({self.kl_horizon}) is no longer used: the KL controller now moves once per step at the speed "
                f"kl_gain ({self.kl_gain}); delete kl_horizon from the config",
                FutureWarning,
                stacklevel=3,
            )
        try:
            check_specs(self.rewards)
        except RewardSpecError as exc:
            raise ValueError(str(exc)) from exc
        if self.heldout_judge:
            try:
                check_specs(self.heldout_judge)
            except RewardSpecError as exc:
                # check_specs names the list it knows, "rewards[i]": name the judge's own key instead.
                message = str(exc)
                raise ValueError("heldout_judge" + message[len("rewards") :] if message.startswith("rewards") else message) from exc
            if not self.eval_prompts and not self.eval_fraction > 0:
                raise ValueError("heldout_judge scores the held-out replies: hold some prompts out (eval_fraction > 0 or eval_prompts)")
        if self.early_stop_patience < 0:
            raise ValueError(f"early_stop_patience must be >= 0 (0 = off), got {self.early_stop_patience}")
        if self.early_stop_min_delta < 0:
            raise ValueError(f"early_stop_min_delta must be >= 0, got {self.early_stop_min_delta}")
        if self.early_stop_patience:
            if not self.heldout_judge:
                raise ValueError(
                    "early_stop_patience needs a heldout_judge: the run stops when that judge stops improving "
                    "(give a reward source the policy is not trained on, or set early_stop_patience: 0)"
                )
            if not self.eval_every:
                raise ValueError("early_stop_patience counts held-out evaluations, made every eval_every steps: set eval_every >= 1")


# -- the maths, as plain functions (tested on their own) ------------------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens; (advantages, returns). Padding is masked."""
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], device=rewards.device, dtype=rewards.dtype)
    width = rewards.shape[1]
    for t in reversed(range(width)):
        next_value = values[:, t + 1] if t + 1 < width else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < width else 0)
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, advantages + values


class AdaptiveKL:
    """Move the KL coefficient once per step so the measured KL approaches the target.

    Ziegler et al. (2019) moved it by ``1 + clip(kl/target - 1, ±0.2) * episodes/horizon``; with
    their horizon of 10,000 episodes a run of a few hundred replies barely moves it (measured: KL
    16 nats against a target of 6, the coefficient almost where it started). Here the error is
    measured in log space and applied per step, ``value *= exp(gain * clip(ln(kl/target), -1, 1))``,
    so a KL e times the target multiplies the coefficient by e^gain each step; a KL below the target
    lowers it at a third of that speed (``KL_RELEASE``); the coefficient stays within ``bounds``.
    ``target`` None: a fixed coefficient.
    """

    def __init__(self, coef: float, target: float | None, gain: float, bounds: tuple[float, float] = KL_COEF_BOUNDS) -> None:
        self.target, self.gain, self.bounds = target, gain, bounds
        # A multiplicative controller cannot leave 0: an adaptive coefficient starts inside its bounds.
        self.value = coef if target is None else min(max(coef, bounds[0]), bounds[1])

    def update(self, kl: float) -> None:
        if self.target is None or math.isnan(kl):
            return
        # A batch's KL estimate can be <= 0 while the policy is still at the reference: "far below".
        error = 1.0 if kl == math.inf else -1.0 if kl <= 0 else max(-1.0, min(1.0, math.log(kl / self.target)))
        # The leash is let out three times slower than it is taken in: every run starts with KL 0
        # (the policy is the reference), and a symmetric controller would spend those first steps
        # loosening the leash it then needs; a leash too tight costs only speed, not a hacked reward.
        rate = self.gain if error > 0 else self.gain / KL_RELEASE
        self.value = min(max(self.value * math.exp(rate * error), self.bounds[0]), self.bounds[1])


class LengthFit:
    """Running least-squares fit of score on reply length (tokens), for ``length_debias``.

    The co-moments are updated one rollout at a time (Welford), so the fit covers every rollout so
    far and resumes from :meth:`state`. :meth:`debias` returns each score less the fitted line
    ``mean score + slope * (length - mean length)``: what the reward pays beyond the length trend,
    centred on 0. Centred, because a level alone pays for length too: in this trainer the end-of-turn
    token is the last one and collects the largest advantage while the value head starts at 0, so a
    positive score that no longer depends on length still shortens replies (measured on the tiny
    model: 8 tokens to 1 in four steps; centred, the length stays put).
    """

    def __init__(self) -> None:
        self.count, self.mean_x, self.mean_y, self.m2_x, self.c_xy = 0, 0.0, 0.0, 0.0, 0.0

    def update(self, lengths: Sequence[float], scores: Sequence[float]) -> None:
        for x, y in zip(lengths, scores, strict=True):
            self.count += 1
            dx = x - self.mean_x
            self.mean_x += dx / self.count
            self.mean_y += (y - self.mean_y) / self.count
            self.m2_x += dx * (x - self.mean_x)
            self.c_xy += dx * (y - self.mean_y)

    @property
    def slope(self) -> float:
        """Score per token of length; 0 while every reply so far had the same length."""
        return self.c_xy / self.m2_x if self.m2_x > 1e-9 else 0.0

    def debias(self, lengths: Sequence[float], scores: Sequence[float]) -> list[float]:
        slope = self.slope
        return [y - self.mean_y - slope * (x - self.mean_x) for x, y in zip(lengths, scores, strict=True)]

    def state(self) -> dict:
        return {"count": self.count, "mean_x": self.mean_x, "mean_y": self.mean_y, "m2_x": self.m2_x, "c_xy": self.c_xy}

    def load(self, state: dict) -> None:
        self.count, self.mean_x, self.mean_y = state["count"], state["mean_x"], state["mean_y"]
        self.m2_x, self.c_xy = state["m2_x"], state["c_xy"]


class KeywordPay:
    """What the reward pays for one token: how well "the reply contains it" predicts the score.

    The length fit's counterpart for words. Over every rollout so far it keeps, per token id, how
    many replies contained it and their summed score; :meth:`top` names the token whose presence
    correlates best with the score (Pearson's r of a 0/1 variable: r² is the share of the score's
    variance that the word alone explains), among tokens that at least ``min_replies`` replies have
    and as many lack. A reward that pays for a keyword shows it from the first steps, before the
    policy has learnt to say it more; a reward model that leans on one word shows it too. Each
    reply counts a token once, however often it says it; the trainer feeds it scores less their
    length trend (:class:`LengthFit`), since a longer reply has more words.
    """

    def __init__(self) -> None:
        self.count, self.total, self.total_sq = 0, 0.0, 0.0
        self.tokens: dict[int, list[float]] = {}  # token id -> [replies with it, their summed score]

    def update(self, replies: Sequence[Sequence[int]], scores: Sequence[float]) -> None:
        for ids, score in zip(replies, scores, strict=True):
            self.count += 1
            self.total += score
            self.total_sq += score * score
            for token in set(ids):
                entry = self.tokens.setdefault(int(token), [0, 0.0])
                entry[0] += 1
                entry[1] += score

    def top(self, min_replies: int = KEYWORD_MIN_REPLIES) -> tuple[int | None, float, float]:
        """(the token id or None, Pearson's r of its presence with the score, the score gap in spreads).

        The gap is the mean score of replies with the token less that of replies without, divided
        by the score's spread. (None, 0.0, 0.0) until a token qualifies or while scores are all equal.
        """
        if self.count < 2:
            return None, 0.0, 0.0
        mean = self.total / self.count
        spread = math.sqrt(max(self.total_sq / self.count - mean * mean, 0.0))
        if spread <= 1e-9:
            return None, 0.0, 0.0
        best: tuple[int | None, float, float] = (None, 0.0, 0.0)
        for token, (n_with, sum_with) in self.tokens.items():
            n_without = self.count - n_with
            if n_with < min_replies or n_without < min_replies:
                continue
            gap = (sum_with / n_with - (self.total - sum_with) / n_without) / spread
            share = n_with / self.count
            r = gap * math.sqrt(share * (1 - share))
            if best[0] is None or r > best[1]:
                best = (token, r, gap)
        return best

    def state(self) -> dict:
        return {"count": self.count, "total": self.total, "total_sq": self.total_sq, "tokens": {str(k): v for k, v in self.tokens.items()}}

    def load(self, state: dict) -> None:
        self.count, self.total, self.total_sq = state["count"], state["total"], state["total_sq"]
        self.tokens = {int(k): list(v) for k, v in state["tokens"].items()}


class RunningStd:
    """Running spread of scores (Welford), for reward scaling."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, xs: list[float]) -> None:
        for x in xs:
            self.count += 1
            delta = x - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (x - self.mean)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0

    def state(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load(self, state: dict) -> None:
        self.count, self.mean, self.m2 = state["count"], state["mean"], state["m2"]


class JudgeWatch:
    """The held-out judge's best evaluation so far and how many evaluations have not beaten it (early stopping).

    An evaluation improves on the best only by more than ``min_delta``; a non-finite score never
    does. :meth:`state` goes into the trainer's checkpoint, so a resumed run keeps counting.
    """

    def __init__(self, min_delta: float = 0.0) -> None:
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_step = 0
        self.since_best = 0

    def update(self, step: int, value: float) -> bool:
        """Record one evaluation; True when it is the new best."""
        if math.isfinite(value) and (self.best is None or value > self.best + self.min_delta):
            self.best, self.best_step, self.since_best = value, step, 0
            return True
        self.since_best += 1
        return False

    def state(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "since_best": self.since_best}

    def load(self, state: dict) -> None:
        self.best, self.best_step, self.since_best = state["best"], state["best_step"], state["since_best"]


def distinct_share(ids: Sequence[int], n: int = RUNAWAY_NGRAM) -> float:
    """Share of distinct ``n``-token runs in the second half of a reply (1.0: no run repeats).

    A reply stuck in a loop repeats the same few runs (a period of p tokens gives about p
    distinct ones); ordinary prose, lists included, repeats few. Too short to have a run: 1.0.
    """
    tail = list(ids[len(ids) // 2 :])
    grams = [tuple(tail[i : i + n]) for i in range(len(tail) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def is_runaway(ids: Sequence[int], threshold: float) -> bool:
    """Whether a reply's second half is a loop: at most ``threshold`` of its 4-token runs distinct."""
    return distinct_share(ids) <= threshold


def missing_eos_penalties(rollouts, penalty: float | None, threshold: float) -> tuple[list[float], list[bool]]:
    """(the penalty added to each reply's score, whether each reply is a runaway loop).

    Only a reply that was cut at ``max_new_tokens`` (it never ended its turn) and loops is a
    runaway; a finished reply, or a cut one that is still saying new things, is only truncated
    and keeps its score. ``penalty`` None: flagged, never penalised.
    """
    runaway = [not r.finished and is_runaway(r.response_ids, threshold) for r in rollouts]
    return [penalty if loop and penalty is not None else 0.0 for loop in runaway], runaway


def warnings_for(events: list[dict], cfg_target_kl: float | None = None, max_new_tokens: int | None = None) -> list[str]:
    """Signs of reward hacking or collapse in a run's step events, as sentences."""
    judged = _judge_warnings(events)
    steps = [e for e in events if "reward_mean" in e and "kl" in e]
    if len(steps) < 3:
        return judged
    out = []
    last, first = steps[-1], steps[0]
    target = cfg_target_kl or 6.0
    recent_kl = [e["kl"] for e in steps[-3:]]
    if min(recent_kl) > 3 * target or not all(math.isfinite(k) for k in recent_kl):
        out.append(
            f"KL is running away: {last['kl']:.2f} nats per reply against a target of {target:g}. "
            "Raise kl_coef (beta for GRPO / RLOO) or lower the learning rate."
        )
    if last.get("reply_length", 1) < 2:
        out.append("Replies have collapsed to (almost) nothing: the reward may favour empty replies.")
    # Three steps in a row: with single-turn prompts most of SmolLM2's replies run past 192 tokens,
    # so one batch of 16 where none ends is chance (about 1 in 30), not a trend.
    if max_new_tokens and all(e.get("eos_rate", 1) < 0.05 and e.get("reply_length", 0) >= 0.95 * max_new_tokens for e in steps[-3:]):
        out.append(
            "Replies run to the maximum length and never end: the reward may favour length (a cut reply is only penalised when it loops)."
        )
    recent_loops = [e.get("runaway_rate", 0.0) for e in steps[-3:]]
    if min(recent_loops) >= 0.25:
        out.append(
            f"{last['runaway_rate']:.0%} of the replies loop until max_new_tokens: the policy is repeating itself. "
            "Make missing_eos_penalty stronger or lower the learning rate."
        )
    if first.get("entropy") and last.get("entropy", 1) < 0.2 * first["entropy"]:
        out.append(f"Entropy has collapsed from {first['entropy']:.2f} to {last['entropy']:.2f}: the policy is repeating itself.")
    out += _length_warning(steps) + _keyword_warning(steps)
    return out + judged


TREND_MIN_STEPS = 4  # a correlation over fewer steps is noise
TREND_CORRELATION = 0.8


def _correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson's r; 0 when either series is flat."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def _length_warning(steps: list[dict]) -> list[str]:
    """A rising reward that pays for reply length (or brevity).

    From the fourth step, while the batch's mean reward (the debiased one with ``length_debias``)
    is above step 1's: Pearson's r between mean reward and mean reply length over the run above 0.8
    (below -0.8 for brevity), and the length moved by more than a quarter since step 1.
    """
    if len(steps) < TREND_MIN_STEPS:
        return []
    # With length_debias the policy is paid the debiased score: read that one, not the raw reward.
    key = "reward_debiased_mean" if all("reward_debiased_mean" in e for e in steps) else "reward_mean"
    rewards = [e[key] for e in steps]
    lengths = [e.get("reply_length") for e in steps]
    if not all(math.isfinite(r) for r in rewards) or rewards[-1] <= rewards[0]:
        return []
    if not all(isinstance(x, int | float) for x in lengths) or not lengths[0] > 0:
        return []
    r = _correlation(rewards, lengths)
    change = lengths[-1] / lengths[0] - 1
    if abs(change) <= 0.25 or r * change <= 0 or abs(r) <= TREND_CORRELATION:
        return []
    what = "length" if change > 0 else "brevity"
    return [
        f"The reward rose as replies went from {lengths[0]:.0f} to {lengths[-1]:.0f} tokens (correlation {r:.2f}): "
        f"the reward may pay for {what}. Read the samples; length_debias: true removes the reward's length preference."
    ]


def _keyword_warning(steps: list[dict]) -> list[str]:
    """A reward that pays for one word: the same token's presence correlating with the score at r >= 0.6, three steps running.

    It reads what the reward pays for (:class:`KeywordPay`), not what the policy has learnt yet, so
    it can fire from the third step, before the policy says the word more often.
    """
    recent = steps[-3:]
    keyword = recent[-1].get("keyword")
    if len(recent) < 3 or not keyword:
        return []
    if not all(e.get("keyword") == keyword and e.get("keyword_corr", 0.0) >= KEYWORD_CORRELATION for e in recent):
        return []
    last = recent[-1]
    return [
        f"The reward pays for one word: whether a reply contains {keyword!r} explains {last['keyword_corr'] ** 2:.0%} of the "
        f"reward's variance (replies with it score {last.get('keyword_pay', 0):.1f} spreads higher; "
        f"{last.get('keyword_share', 0):.0%} of the last batch say it). If that word is not what makes a reply good, "
        "the reward pays for a keyword: read the samples."
    ]


OVEROPT_WINDOW = 3  # evaluations over which the training reward rises while the held-out judge falls
OVEROPT_SPREADS = 0.25  # a meaningful move: a quarter of the spread of scores across held-out prompts at the start


def heldout_judge_warnings(rewards: list[dict], judge: list[dict], registry=None) -> list[str]:
    """Why ``heldout_judge`` may not be independent of the training reward (empty when it is).

    The counterpart of :func:`rlhf.evaluation.lineage_warnings` for the judge PPO watches while it
    trains: a judge source that is also a training source, or a reward model trained on the same
    data as a training reward model (``registry`` given: read from the models' lineage).
    """
    out = []
    trained = {source_name(spec): spec for spec in rewards}
    for i, spec in enumerate(judge):
        name = source_name(spec)
        if name in trained:
            out.append(
                f"heldout_judge[{i}] ({name}) is also a training reward: the policy is trained to please it, so eval_judge "
                "rises with the proxy and can neither show over-optimisation nor stop the run before it; use a source the "
                "policy is not trained on, e.g. a reward model trained on other pairs"
            )
            continue
        if spec["type"] != "model" or registry is None:
            continue
        data = _lineage_data(registry, spec["model"])
        for source in trained.values():
            if source["type"] == "model" and data and _lineage_data(registry, source["model"]) == data:
                out.append(
                    f"heldout_judge[{i}] ({spec['model']}) and the training reward model {source['model']} were trained on the "
                    f"same data ({data}): the judge shares the training reward's blind spots; train it on other pairs"
                )
    return list(dict.fromkeys(out))


def _lineage_data(registry, name: str) -> str | None:
    try:
        return registry.get(name).lineage.get("data")
    except Exception:  # a folder path or an unknown name: no recorded history
        return None


def _judge_warnings(events: list[dict]) -> list[str]:
    """The held-out judge's lineage warnings (logged in the step-0 event) and the over-optimisation warning."""
    lineage = [w for e in events if e.get("step") == 0 for w in e.get("judge_warnings") or []]
    return list(dict.fromkeys(lineage)) + _overoptimisation_warning(events)


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _overoptimisation_warning(events: list[dict]) -> list[str]:
    """The training reward rising on held-out prompts while the held-out judge falls (Gao et al. 2022).

    Over every window of ``OVEROPT_WINDOW`` evaluations so far: the training reward rose by at least
    ``OVEROPT_SPREADS`` of its spread across held-out prompts at the start, the judge ended the
    window lower than it began it and at least as far below its best so far. Once a window has
    shown it, the warning stays (one sentence, from the latest such window), so a noisy later
    evaluation does not hide what happened.
    """
    by_step = {}
    for e in events:
        if not e.get("final") and _finite(e.get("eval_reward")) and _finite(e.get("eval_judge")):
            by_step[e["step"]] = e
    evals = [by_step[s] for s in sorted(by_step)]
    if len(evals) < OVEROPT_WINDOW:
        return []
    rise_min = OVEROPT_SPREADS * float(evals[0].get("eval_reward_std") or 0.0)
    drop_min = OVEROPT_SPREADS * float(evals[0].get("eval_judge_std") or 0.0)
    best, best_step, fired = -math.inf, 0, None
    for i, e in enumerate(evals):
        if e["eval_judge"] > best:
            best, best_step = e["eval_judge"], e["step"]
        if i < OVEROPT_WINDOW - 1:
            continue
        first = evals[i - OVEROPT_WINDOW + 1]
        rise = e["eval_reward"] - first["eval_reward"]
        if rise > 0 and rise >= rise_min and e["eval_judge"] < first["eval_judge"] and best - e["eval_judge"] >= drop_min:
            fired = (first, e, best, best_step)
    if fired is None:
        return []
    first, last, best, best_step = fired
    return [
        f"The training reward is being over-optimised (Gao et al. 2022): on the held-out prompts it rose from "
        f"{first['eval_reward']:.3g} to {last['eval_reward']:.3g} (steps {first['step']} to {last['step']}) while the held-out "
        f"judge fell from {first['eval_judge']:.3g} to {last['eval_judge']:.3g}; the judge was best at step {best_step} "
        f"({best:.3g}). The policy is learning what the reward pays for, not what the judge values: set early_stop_patience "
        "to stop near the judge's best and save that step's policy, lower learning_rate, or hold the policy closer to its "
        "reference (a lower target_kl, or a higher kl_coef with adaptive_kl off)."
    ]


# -- the trainer ----------------------------------------------------------------------------------
def _text_of(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), str(prompt))


REFERENCE_FIELDS = ("reference", "response", "output", "chosen")


def read_prompts(path: Path) -> list[tuple[object, str | None]]:
    """(prompt, reference answer or None) for every record of a prompts file."""
    from rlhf.prompt_files import read_prompt_records

    out = []
    for record, prompt in read_prompt_records(Path(path)):
        ref = next((record[k] for k in REFERENCE_FIELDS if isinstance(record.get(k), str) and record[k].strip()), None)
        out.append((prompt, ref))
    return out


@dataclass
class Batch:
    """A rollout batch laid out for scoring: [left-padded prompt | right-padded reply]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_mask: torch.Tensor  # over the reply columns
    start: int  # first reply column


def layout(rollouts, pad_id: int, device: torch.device) -> Batch:
    width_q = max(len(r.prompt_ids) for r in rollouts)
    width_r = max(1, max(len(r.response_ids) for r in rollouts))
    ids, mask, rmask = [], [], []
    for r in rollouts:
        q_pad, r_pad = width_q - len(r.prompt_ids), width_r - len(r.response_ids)
        ids.append([pad_id] * q_pad + r.prompt_ids + r.response_ids + [pad_id] * r_pad)
        mask.append([0] * q_pad + [1] * (len(r.prompt_ids) + len(r.response_ids)) + [0] * r_pad)
        rmask.append([1] * len(r.response_ids) + [0] * r_pad)
    input_ids = torch.tensor(ids, device=device)
    attention = torch.tensor(mask, device=device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return Batch(input_ids, attention, positions, torch.tensor(rmask, device=device, dtype=torch.float32), width_q)


def share(n: int, rank: int, world: int) -> tuple[int, int]:
    """The contiguous rows [lo, hi) of a batch of ``n`` that process ``rank`` of ``world`` rolls out (sizes differ by at most 1)."""
    return n * rank // world, n * (rank + 1) // world


def row_seed(seed: int, step: int, row: int) -> int:
    """The random stream of one reply: the run's seed, the step and the reply's place in the whole batch."""
    return ((seed * 1_000_003 + step) * 1_000_033 + row) % (2**63)


class RowSeededSampler:
    """A transformers logits processor that samples every row from its own generator (Gumbel-max).

    ``argmax(log softmax(logits / T, top-p filtered) + Gumbel noise)`` is an exact draw from the
    same distribution ``generate`` samples from; with one generator per row, a reply depends on
    its own seed and prompt only, not on which other prompts share its batch. Used with greedy
    decoding (the processor does the sampling).
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device) -> None:
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.warpers = ([TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []) + (
            [TopPLogitsWarper(top_p)] if top_p < 1.0 else []
        )

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        logp = scores.float().log_softmax(-1)
        uniform = torch.stack([torch.rand(scores.shape[-1], generator=g, device=scores.device) for g in self.generators])
        return logp - torch.log(-torch.log(uniform))  # uniform 0 gives -inf: never picked


class PPOTrainer:
    """Owns the policy (with its reference inside), the value function and the optimiser.

    Under a launch of several processes it joins their group (:func:`rlhf.launch.init_distributed`),
    takes its own GPU (or shares the CPU) and starts from rank 0's weights.
    """

    def __init__(self, cfg: PPORunConfig, registry=None, device: str | None = None) -> None:
        from rlhf.generation import GenerationEngine
        from rlhf.loading import load_causal_lm
        from rlhf.registry import ModelRegistry

        self.cfg = cfg
        self.registry = registry or ModelRegistry()
        self.rank, self.world = 0, 1
        if world_size() > 1:
            import torch.distributed as dist

            joined = init_distributed()  # this process's GPU, or the CPU
            device = device or str(joined)
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        # Several processes must sample as one would: each reply from its own stream.
        self.seed_per_prompt = cfg.seed_per_prompt or self.world > 1
        torch.manual_seed(cfg.seed)
        model, self.tokenizer = load_causal_lm(cfg.policy, self.registry, device=device, dtype=torch.float32)
        self.device = model.device
        if hasattr(model, "peft_config"):  # an adapter checkpoint (e.g. from SFT) as the policy
            kinds = {c.peft_type.value if hasattr(c.peft_type, "value") else str(c.peft_type) for c in model.peft_config.values()}
            if kinds - {"LORA", "IA3"}:
                raise ValueError(
                    f"{cfg.policy} is a {'/'.join(sorted(kinds))} adapter, which cannot be merged into the model; "
                    "PPO needs a LoRA, IA3 or fully fine-tuned policy (run SFT with one of those methods)"
                )
            model = model.merge_and_unload()
        model.config.use_cache = True
        self._initial: dict[str, torch.Tensor] = {}
        if cfg.method == "lora":
            from peft import LoraConfig, get_peft_model

            from rlhf.reward import _lora_targets

            targets = [t for t in ("q_proj", "k_proj", "v_proj", "o_proj") if any(n.endswith(t) for n, _ in model.named_modules())]
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets or _lora_targets(model))
            self.policy = get_peft_model(model, lora)
        else:
            self.policy = model
            layers = _decoder_layers(model)
            if cfg.top_layers > len(layers):
                raise ValueError(f"top_layers {cfg.top_layers} exceeds the model's {len(layers)} layers")
            for p in model.parameters():
                p.requires_grad_(False)
            for layer in layers[-cfg.top_layers :]:
                for p in layer.parameters():
                    p.requires_grad_(True)
            # The reference: the original weights of the trained layers only, swapped in when needed.
            self._initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.policy.eval()  # no dropout anywhere: rollouts, scoring and updates see the same function
        hidden = self.policy.config.hidden_size if cfg.value_model is None else None
        self.value_trunk = None
        if cfg.value_model:
            vmodel, vtok = load_causal_lm(cfg.value_model, self.registry, device=device, dtype=torch.float32)
            if vtok.get_vocab() != self.tokenizer.get_vocab():
                raise ValueError(f"the value model {cfg.value_model} must share the policy's tokenizer")
            self.value_trunk = vmodel.train(False)
            hidden = vmodel.config.hidden_size
        self.value_head = torch.nn.Linear(hidden, 1).to(self.device)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        params = [p for p in self.policy.parameters() if p.requires_grad] + list(self.value_head.parameters())
        if self.value_trunk is not None:
            params += list(self.value_trunk.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, eps=1e-5)
        self.engine = GenerationEngine(self.policy, self.tokenizer, batch_size=cfg.batch_size)
        self.kl = AdaptiveKL(cfg.kl_coef, cfg.target_kl if cfg.adaptive_kl else None, cfg.kl_gain)
        self.score_std = RunningStd()
        self.length_fit = LengthFit()
        self.keyword_pay = KeywordPay()
        self.judge_watch = JudgeWatch(cfg.early_stop_min_delta)
        self.best_state: dict[str, torch.Tensor] | None = None  # the trainable weights at the judge's best (early stopping)
        self.special_ids = set(self.tokenizer.all_special_ids) | set(self.engine.stop_ids)
        self.step = 0
        if self.world > 1:  # the same seed gives the same start; rank 0's weights make sure of it
            with torch.no_grad():
                for p in self._params():
                    p.copy_(broadcast_tensor(p.detach()))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _params(self) -> list[torch.nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _sum_gradients(self) -> None:
        """Add up every process's gradients (each already divided by the whole minibatch's token count) in one buffer."""
        params = self._params()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]  # a process may own no row of a minibatch
        flat = all_sum(torch.cat([g.reshape(-1) for g in grads]))
        at = 0
        for p in params:
            p.grad = flat[at : at + p.numel()].view_as(p).to(p.dtype).clone()
            at += p.numel()

    # -- reference --------------------------------------------------------------------------------
    def reference(self):
        """Context manager: the policy behaves as the reference inside it."""
        if self.cfg.method == "lora":
            return self.policy.disable_adapter()
        return _Swapped(self.policy, self._initial)

    # -- forward passes ---------------------------------------------------------------------------
    def _forward(self, batch: Batch, rows, with_values: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(log-probs of the reply tokens, values at the same positions or None, entropy or None) for some rows.

        Only the reply's positions go through the LM head (``logits_to_keep``): the prompt's
        logits are never needed, and on a 49k vocabulary they are most of the memory.
        """
        ids, mask, pos = batch.input_ids[rows], batch.attention_mask[rows], batch.position_ids[rows]
        start, width = batch.start, batch.response_mask.shape[1]
        shared_values = with_values and self.value_trunk is None
        out = self.policy(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            output_hidden_states=shared_values,
            use_cache=False,
            logits_to_keep=width + 1,
        )
        logits = out.logits[:, :-1].float()  # positions start-1 .. start+width-2 predict the reply tokens
        if self.cfg.temperature != 1.0:
            logits = logits / self.cfg.temperature  # score the distribution the replies were sampled from
        targets = ids[:, start : start + width]
        logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        entropy = None
        if not torch.is_grad_enabled():  # a diagnostic: not worth a graph in the update passes
            logp_all = logits.log_softmax(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        values = None
        if with_values:
            if shared_values:
                hidden = out.hidden_states[-1]
            else:
                trunk = self.value_trunk(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True, use_cache=False)
                hidden = trunk.hidden_states[-1]
            values = self.value_head(hidden[:, start - 1 : start - 1 + width].float()).squeeze(-1)
        return logprobs, values, entropy

    @torch.no_grad()
    def _score_tokens(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(old log-probs, old values, reference log-probs, entropy), in micro-batches."""
        n = batch.input_ids.shape[0]
        parts: list[list[torch.Tensor]] = [[], [], [], []]
        for i in range(0, n, self.cfg.micro_batch_size):
            rows = slice(i, i + self.cfg.micro_batch_size)
            logp, values, entropy = self._forward(batch, rows, with_values=True)
            with self.reference():
                ref, _, _ = self._forward(batch, rows, with_values=False)
            for bucket, t in zip(parts, (logp, values, ref, entropy), strict=True):
                bucket.append(t)
        return tuple(torch.cat(p) for p in parts)  # type: ignore[return-value]

    # -- one PPO step -----------------------------------------------------------------------------
    def rollout(self, prompts: list, references: list, seed: int | None = None, rows: Sequence[int] | None = None):
        """One sampled reply per prompt; ``rows`` (the prompts' places in the whole batch): each from its own seed."""
        from rlhf.generation import SamplingParams

        cfg = self.cfg
        if rows is None:
            params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=seed)
            return self.engine.rollout(prompts, params, system=cfg.system)
        from transformers import LogitsProcessorList

        sampler = RowSeededSampler([row_seed(cfg.seed, self.step, r) for r in rows], cfg.temperature, cfg.top_p, self.device)
        greedy = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=cfg.max_new_tokens)  # the sampler draws
        return self.engine.rollout(prompts, greedy, system=cfg.system, logits_processor=LogitsProcessorList([sampler]))

    def train_step(self, prompts: list, references: list, reward_fn) -> tuple[dict, list[dict]]:
        """Rollout, score, update. Returns (diagnostics, samples).

        ``prompts``: the whole batch. With several processes each rolls out and scores its share
        (:func:`share`); the statistics, the update and the diagnostics are the whole batch's.
        """
        cfg = self.cfg
        began = time.perf_counter()
        n = len(prompts)
        lo, hi = share(n, self.rank, self.world)
        prompts, references = prompts[lo:hi], references[lo:hi]
        rollouts = self.rollout(prompts, references, rows=range(lo, hi)) if self.seed_per_prompt else self.rollout(prompts, references)
        t_gen = time.perf_counter()
        texts = [_text_of(p) for p in prompts]
        replies = [r.text for r in rollouts]
        raw, parts = reward_fn(texts, replies, references)
        reply_lengths = [len(r.response_ids) for r in rollouts]
        penalties, runaway = missing_eos_penalties(rollouts, cfg.missing_eos_penalty, cfg.runaway_threshold)
        finished = [r.finished for r in rollouts]
        words = [[t for t in r.response_ids if t not in self.special_ids] for r in rollouts]
        if self.world > 1:
            # Every process's per-reply figures in the batch's order: the statistics below see the whole batch, as one process would.
            pieces = gather({"raw": raw, "lengths": reply_lengths, "penalties": penalties, "runaway": runaway, "finished": finished,
                             "words": words, "texts": texts, "replies": replies, "parts": parts})  # fmt: skip

            def whole(key: str) -> list:
                return [x for piece in pieces for x in piece[key]]

            raw, reply_lengths, penalties, runaway = whole("raw"), whole("lengths"), whole("penalties"), whole("runaway")
            finished, words, texts, replies = whole("finished"), whole("words"), whole("texts"), whole("replies")
            parts = {name: [x for piece in pieces for x in piece["parts"][name]] for name in pieces[0]["parts"]}
        self.length_fit.update(reply_lengths, raw)
        debiased = self.length_fit.debias(reply_lengths, raw) if cfg.length_debias else raw
        scores = [s + p for s, p in zip(debiased, penalties, strict=True)]
        if cfg.reward_scaling:
            self.score_std.update(scores)
            scores = [s / max(self.score_std.std, 1e-6) for s in scores]
        scores = [max(-cfg.reward_clip, min(cfg.reward_clip, s)) for s in scores]
        t_reward = time.perf_counter()

        batch = layout(rollouts, self.tokenizer.pad_token_id, self.device)
        mask = batch.response_mask
        old_logp, old_values, ref_logp, entropy = self._score_tokens(batch)
        kl_tokens = (old_logp - ref_logp) * mask
        token_rewards = -self.kl.value * kl_tokens
        last = (mask.sum(1).long() - 1).clamp(min=0)
        rows = torch.arange(len(rollouts), device=self.device)
        token_rewards[rows, last] += torch.tensor(scores[lo:hi], device=self.device)
        advantages, returns = gae(token_rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = (masked_whiten(advantages, mask) if self.world == 1 else self._whiten(advantages, mask)) * mask

        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": [], "vf_clipfrac": []}
        whole_lengths = torch.tensor(reply_lengths, dtype=torch.float32)
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=generator)
            if self.world == 1:
                order = order.to(self.device)
            for i in range(0, n, cfg.minibatch_size):
                mini = order[i : i + cfg.minibatch_size]
                if self.world == 1:
                    tokens = mask[mini].sum().clamp(min=1)
                else:
                    # The same minibatch as one process takes: this process's rows of it, each loss over all of its tokens.
                    tokens = whole_lengths[mini].sum().clamp(min=1).to(self.device)
                    mini = torch.tensor([int(g) - lo for g in mini if lo <= g < hi], dtype=torch.long, device=self.device)
                self.optimizer.zero_grad(set_to_none=True)
                sums = dict.fromkeys(("policy_loss", "value_loss", "clipfrac", "vf_clipfrac", "approx_kl"), 0.0)
                # Micro-batches bound the activation memory; their token-weighted losses add up to
                # the minibatch's mean, so the update is the same as one pass over the minibatch.
                for j in range(0, len(mini), cfg.micro_batch_size):
                    idx = mini[j : j + cfg.micro_batch_size]
                    m = mask[idx]
                    logp, values, _ = self._forward(batch, idx, with_values=True)
                    log_ratio = (logp - old_logp[idx]) * m
                    ratio = log_ratio.exp()
                    adv = advantages[idx]
                    pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.cliprange, 1 + cfg.cliprange))
                    policy_loss = (pg * m).sum() / tokens
                    v_clipped = old_values[idx] + (values - old_values[idx]).clamp(-cfg.cliprange_value, cfg.cliprange_value)
                    v_loss = torch.max((values - returns[idx]) ** 2, (v_clipped - returns[idx]) ** 2)
                    value_loss = 0.5 * (v_loss * m).sum() / tokens
                    (policy_loss + cfg.vf_coef * value_loss).backward()
                    with torch.no_grad():
                        sums["policy_loss"] += policy_loss.item()
                        sums["value_loss"] += value_loss.item()
                        sums["clipfrac"] += ((((ratio - 1).abs() > cfg.cliprange).float() * m).sum() / tokens).item()
                        sums["vf_clipfrac"] += (
                            (((values - old_values[idx]).abs() > cfg.cliprange_value).float() * m).sum() / tokens
                        ).item()
                        sums["approx_kl"] += ((0.5 * log_ratio**2 * m).sum() / tokens).item()
                if self.world > 1:
                    self._sum_gradients()  # every process now holds the whole minibatch's gradient
                torch.nn.utils.clip_grad_norm_(self._params(), cfg.max_grad_norm)
                self.optimizer.step()
                for key, value in sums.items():
                    stats[key].append(value)
        if self.world > 1:  # each process summed its rows' share of every minibatch's means
            summed = all_sum(torch.tensor([stats[k] for k in stats], dtype=torch.float64)).tolist()
            stats = dict(zip(stats, summed, strict=True))
            kl_sum, ent_sum, token_sum = all_sum(torch.stack([kl_tokens.sum(), (entropy * mask).sum(), mask.sum()]).double()).tolist()
            seq_kl, mean_entropy, mean_length = kl_sum / n, ent_sum / max(token_sum, 1.0), sum(reply_lengths) / n
        else:
            seq_kl = kl_tokens.sum(1).mean().item()
            mean_entropy, mean_length = masked_mean(entropy, mask).item(), mask.sum(1).float().mean().item()
        coef_used = self.kl.value
        self.kl.update(seq_kl)
        self.step += 1
        took = time.perf_counter() - began
        # Weighed on the score less its length trend: a longer reply has more words, and a reward
        # paying for length would otherwise seem to pay for every common one.
        self.keyword_pay.update(words, self.length_fit.debias(reply_lengths, raw))
        keyword, keyword_corr, pay = self.keyword_pay.top()
        diag = {
            "reward_mean": sum(raw) / n,
            "reward_std": float(torch.tensor(raw).std().item()) if n > 1 else 0.0,
            "score_mean": sum(scores) / n,
            "kl": seq_kl,
            "kl_coef": coef_used,
            "entropy": mean_entropy,
            "reply_length": mean_length,
            "eos_rate": sum(finished) / n,
            "runaway_rate": sum(runaway) / n,
            "length_slope": self.length_fit.slope,
            "keyword": self.tokenizer.decode([keyword]) if keyword is not None else "",
            "keyword_corr": keyword_corr,
            "keyword_pay": pay,
            "keyword_share": sum(keyword in w for w in words) / n if keyword is not None else 0.0,
            "policy_loss": _mean(stats["policy_loss"]),
            "value_loss": _mean(stats["value_loss"]),
            "clipfrac": _mean(stats["clipfrac"]),
            "vf_clipfrac": _mean(stats["vf_clipfrac"]),
            "approx_kl": _mean(stats["approx_kl"]),
            "episodes": n,
            "episodes_per_second": n / took,
            "seconds_generate": t_gen - began,
            "seconds_reward": t_reward - t_gen,
            "seconds_update": time.perf_counter() - t_reward,
        }
        if self.world > 1:
            diag["processes"] = self.world
        if cfg.length_debias:
            diag["reward_debiased_mean"] = sum(debiased) / n
        for name, values in parts.items():
            diag[f"reward/{name}"] = sum(values) / n
        samples = [{"prompt": t, "reply": r, "reward": s, "ended": e} for t, r, s, e in zip(texts, replies, raw, finished, strict=True)]
        return diag, samples

    def _whiten(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:func:`masked_whiten` over the whole batch, across processes."""
        total = all_sum(torch.stack([(x * mask).sum(), mask.sum()]))
        count = total[1].clamp(min=1)
        mean = total[0] / count
        var = all_sum(((x - mean) ** 2 * mask).sum().reshape(1))[0] / count
        return (x - mean) * torch.rsqrt(var + 1e-8)

    @torch.no_grad()
    def evaluate(self, prompts: list, references: list, reward_fn, seed: int, judge_fn=None) -> dict:
        """Held-out figures (replies sampled with a fixed seed): mean training reward and its spread across
        prompts, KL to the reference, reply length in tokens, and with ``judge_fn`` the held-out judge's
        mean score and spread over the same replies."""
        if not prompts:
            return {}
        rewards: list[float] = []
        judged: list[float] = []
        kls: list[float] = []
        lengths: list[int] = []
        for i in range(0, len(prompts), self.cfg.batch_size):
            chunk, refs = prompts[i : i + self.cfg.batch_size], references[i : i + self.cfg.batch_size]
            rollouts = self.rollout(chunk, refs, seed=seed + i)
            texts, replies = [_text_of(p) for p in chunk], [r.text for r in rollouts]
            raw, _ = reward_fn(texts, replies, refs)
            rewards += raw
            if judge_fn is not None:
                judged += judge_fn(texts, replies, refs)[0]
            batch = layout(rollouts, self.tokenizer.pad_token_id, self.device)
            logp, _, ref, _ = self._score_tokens(batch)
            kls += ((logp - ref) * batch.response_mask).sum(1).tolist()
            lengths += [len(r.response_ids) for r in rollouts]
        out = {
            "eval_reward": _mean(rewards),
            "eval_reward_std": _spread(rewards),
            "eval_kl": _mean(kls),
            "eval_length": _mean(lengths),
            "eval_prompts": len(rewards),
        }
        if judge_fn is not None:
            out["eval_judge"], out["eval_judge_std"] = _mean(judged), _spread(judged)
        return out

    def note_judge(self, step: int, value: float) -> bool:
        """Record a held-out judge score; at a new best with early stopping on, keep a copy of the trainable weights."""
        improved = self.judge_watch.update(step, value)
        if improved and self.cfg.early_stop_patience:
            # trainable_state() shares storage with the parameters on a CPU: the optimiser would change a bare view.
            self.best_state = {n: t.clone() for n, t in self.trainable_state().items()}
        return improved

    def restore_best(self) -> bool:
        """Put the weights of the judge's best evaluation back (False when there is none, or it is the current step)."""
        if self.best_state is None or self.judge_watch.best_step == self.step:
            return False
        named = dict(self.policy.named_parameters())
        with torch.no_grad():
            for name, tensor in self.best_state.items():
                named[name].copy_(tensor)
        return True

    # -- checkpoints ------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu() for n, p in self.policy.named_parameters() if p.requires_grad}

    def save_state(self, folder: Path, extra: dict) -> None:
        from safetensors.torch import save_file

        tmp = folder.with_name(folder.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), str(tmp / "policy.safetensors"))
        if self.best_state is not None:
            save_file(self.best_state, str(tmp / "best_policy.safetensors"))
        value = {f"head.{k}": v.cpu() for k, v in self.value_head.state_dict().items()}
        if self.value_trunk is not None:
            value.update({f"trunk.{k}": v.cpu().contiguous() for k, v in self.value_trunk.state_dict().items()})
        save_file(value, str(tmp / "value.safetensors"))
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        state = {
            "step": self.step,
            "kl_coef": self.kl.value,
            "score_std": self.score_std.state(),
            "length_fit": self.length_fit.state(),
            "keyword_pay": self.keyword_pay.state(),
            "judge_watch": self.judge_watch.state(),
            **extra,
        }
        (tmp / "state.json").write_text(json.dumps(state))
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)

    def load_state(self, folder: Path) -> dict:
        from safetensors.torch import load_file

        trained = load_file(str(folder / "policy.safetensors"), device=str(self.device))
        named = dict(self.policy.named_parameters())
        with torch.no_grad():
            for name, tensor in trained.items():
                named[name].copy_(tensor)
        value = load_file(str(folder / "value.safetensors"), device=str(self.device))
        self.value_head.load_state_dict({k[5:]: v for k, v in value.items() if k.startswith("head.")})
        if self.value_trunk is not None:
            self.value_trunk.load_state_dict({k[6:]: v for k, v in value.items() if k.startswith("trunk.")})
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=self.device))
        state = json.loads((folder / "state.json").read_text())
        self.step, self.kl.value = state["step"], state["kl_coef"]
        self.score_std.load(state["score_std"])
        # Checkpoints written before these diagnostics have neither: they start afresh.
        if "length_fit" in state:
            self.length_fit.load(state["length_fit"])
        if "keyword_pay" in state:
            self.keyword_pay.load(state["keyword_pay"])
        if "judge_watch" in state:
            self.judge_watch.load(state["judge_watch"])
        if (folder / "best_policy.safetensors").is_file():
            self.best_state = load_file(str(folder / "best_policy.safetensors"), device="cpu")
        return state

    def final_model(self):
        """The tuned policy as a plain model (adapters merged)."""
        if self.cfg.method == "lora":
            return self.policy.merge_and_unload()
        return self.policy


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _spread(xs: Sequence[float]) -> float:
    """Standard deviation (population); 0 for fewer than two values."""
    if len(xs) < 2:
        return 0.0
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))


def _decoder_layers(model) -> torch.nn.ModuleList:
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise ValueError("cannot find the decoder layers of this architecture; use method: lora")


class _Swapped:
    """Swap the trained layers' original weights in (the reference), and back out on exit."""

    def __init__(self, model, initial: dict[str, torch.Tensor]) -> None:
        self.params = {n: p for n, p in model.named_parameters() if n in initial}
        self.initial = initial

    def __enter__(self):
        self.saved = {n: p.data for n, p in self.params.items()}
        for n, p in self.params.items():
            p.data = self.initial[n]
        return self

    def __exit__(self, *exc) -> None:
        for n, p in self.params.items():
            p.data = self.saved[n]


# -- the run ------------------------------------------------------------------------------------
def _split(items: list, fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = int(round(len(items) * fraction))
    return [items[i] for i in order[n_eval:]], [items[i] for i in order[:n_eval]]


def prompt_records(cfg) -> tuple[list, list]:
    """The training and held-out (prompt, reference) records of an online run's config (PPO, GRPO, RLOO).

    ``eval_prompts`` or a seeded ``eval_fraction`` split; ValueError when there is nothing to train on,
    when a held-out judge would have no held-out prompts, or when a similarity reward lacks references.
    """
    if not cfg.prompts:
        raise ValueError("the config needs 'prompts': a prompts file")
    records = read_prompts(Path(cfg.prompts))
    if cfg.eval_prompts:
        train_records, eval_records = records, read_prompts(Path(cfg.eval_prompts))
    else:
        train_records, eval_records = _split(records, cfg.eval_fraction, cfg.seed)
    if not train_records:
        raise ValueError(f"{cfg.prompts} has no training prompts")
    if not eval_records and cfg.heldout_judge:
        raise ValueError(
            f"heldout_judge scores held-out replies, and {cfg.prompts} leaves none at eval_fraction {cfg.eval_fraction}: "
            "raise eval_fraction or give eval_prompts"
        )
    if any(spec["type"] == "similarity" for spec in cfg.rewards + cfg.heldout_judge):
        missing = sum(ref is None for _, ref in train_records + eval_records)
        if missing:
            raise ValueError(
                f"a similarity reward needs a reference answer for every prompt; {missing} prompt(s) in {cfg.prompts} have none "
                f"(give each record a {' / '.join(REFERENCE_FIELDS)} field, or drop the similarity source)"
            )
    return train_records, eval_records


def train_ppo(cfg: PPORunConfig, run, stop, registry=None, resume: bool = False) -> dict:
    """Train, evaluate, save and register; returns the metrics (also in run/metrics.json)."""
    from rlhf.registry import ModelRegistry
    from rlhf.results import publish
    from rlhf.rewards import build_reward

    registry = registry or ModelRegistry()
    train_records, eval_records = prompt_records(cfg)
    # With several processes: join their group first, so the reward models land on this process's GPU.
    device = init_distributed() if world_size() > 1 else None
    main = is_main_process()
    if not main:
        from rlhf.runs import stop_on_sigterm

        stop_on_sigterm(stop)  # the launcher's SIGTERM reaches every process; they stop after the same step
    reward_fn = build_reward(cfg.rewards, registry, device=device)
    # Built once (by rank 0, which alone evaluates); it scores only the held-out replies and never reaches the update.
    judge_fn = build_reward(cfg.heldout_judge, registry, device=device) if cfg.heldout_judge and main else None
    judge_warnings = heldout_judge_warnings(cfg.rewards, cfg.heldout_judge, registry)
    for warning in judge_warnings if main else []:
        print(f"warning: {warning}", flush=True)
    trainer = PPOTrainer(cfg, registry)
    eval_p, eval_r = [p for p, _ in eval_records], [r for _, r in eval_records]

    def evaluate() -> dict:
        if not main:
            return {}  # rank 0 evaluates; the others wait at the next step's first exchange
        result = trainer.evaluate(eval_p, eval_r, reward_fn, seed=cfg.seed, judge_fn=judge_fn)
        if not result:
            return result
        line = (
            f"held-out at step {trainer.step}: reward {result['eval_reward']:.3f} kl {result['eval_kl']:.3f} "
            f"length {result['eval_length']:.1f}"
        )
        if "eval_judge" in result:
            trainer.note_judge(trainer.step, result["eval_judge"])
            watch = trainer.judge_watch
            best = f"{watch.best:.3f} at step {watch.best_step}" if watch.best is not None else "none yet"
            line += f" judge {result['eval_judge']:.3f} (best {best})"
        print(line, flush=True)
        return result

    state: dict = {}
    last = run.last_checkpoint() if resume else None
    if last is not None:
        state = trainer.load_state(last)
        if main:
            print(f"resumed at step {trainer.step} from {last}", flush=True)
    baseline = state.get("eval_start") or evaluate()
    if not state:
        run.append_event({"step": 0, "max_steps": cfg.steps, **baseline, **({"judge_warnings": judge_warnings} if judge_warnings else {})})

    def prompts_for(step: int) -> list:
        # The order depends only on the seed and the step, so a resumed run sees the same prompts.
        epoch, offset = divmod(step * cfg.batch_size, len(train_records))
        order = list(range(len(train_records)))
        random.Random(cfg.seed * 7919 + epoch).shuffle(order)
        picked = [order[(offset + j) % len(order)] for j in range(cfg.batch_size)]
        return [train_records[i] for i in picked]

    def agreed_stop() -> bool:
        # One process's stop request stops them all, after the same step; the main one then records "cancelled".
        halt = any_process(bool(stop))
        if halt and not stop:
            stop.set()
        return halt

    last_eval, last_eval_step = baseline, (None if state else 0)
    judge_stopped = False
    warned = bool(judge_fn) and bool(_overoptimisation_warning(run.events()))  # a resumed run said it already
    while trainer.step < cfg.steps and not agreed_stop():
        batch = prompts_for(trainer.step)
        diag, samples = trainer.train_step([p for p, _ in batch], [r for _, r in batch], reward_fn)
        event = {"step": trainer.step, "max_steps": cfg.steps, **diag}
        if cfg.sample_every and (trainer.step % cfg.sample_every == 0 or trainer.step in (1, cfg.steps)):
            event["samples"] = samples[:4]
        if main:
            print(
                f"step {trainer.step}/{cfg.steps} reward {diag['reward_mean']:.3f} kl {diag['kl']:.3f} "
                f"entropy {diag['entropy']:.2f} length {diag['reply_length']:.1f} {diag['episodes_per_second']:.2f} episodes/s",
                flush=True,
            )
        # The end is evaluated here too, so the last step's event carries it (the charts and warnings read events).
        at_end = trainer.step >= cfg.steps
        if at_end or (cfg.eval_every and trainer.step % cfg.eval_every == 0):
            last_eval, last_eval_step = evaluate(), trainer.step
            event.update(last_eval)
            watch = trainer.judge_watch
            judge_stopped = bool(cfg.early_stop_patience and judge_fn and not at_end and watch.since_best >= cfg.early_stop_patience)
            judge_stopped = broadcast(judge_stopped)  # rank 0's judge decides for every process
        run.append_event(event)  # rank 0 only (RunDir writes nothing in the others)
        if judge_fn is not None and not warned and last_eval_step == trainer.step:
            for warning in _overoptimisation_warning(run.events()):
                print(f"warning: {warning}", flush=True)
                warned = True
        halt = agreed_stop()
        if main and (cfg.save_every and trainer.step % cfg.save_every == 0 or halt or judge_stopped):
            trainer.save_state(run.trainer_dir / f"checkpoint-{trainer.step}", {"eval_start": baseline})
            _prune(run.trainer_dir, keep=2)
        if judge_stopped and main:
            print(
                f"early stop at step {trainer.step}: the held-out judge has not beaten its best "
                f"({trainer.judge_watch.best:.3f}, step {trainer.judge_watch.best_step}) for {trainer.judge_watch.since_best} evaluations",
                flush=True,
            )
        if judge_stopped:
            break

    if not main:
        return {}  # rank 0 saves, checks and registers the model
    if trainer.step >= cfg.steps and last_eval_step != trainer.step:
        last_eval = evaluate()  # resumed from a checkpoint of the last step: its end was not evaluated in this process
    final_eval = last_eval
    saved_step = trainer.step
    if judge_fn is not None and cfg.early_stop_patience and trainer.restore_best():
        saved_step = trainer.judge_watch.best_step
        print(f"saving the policy of step {saved_step}, the held-out judge's best, instead of step {trainer.step}", flush=True)
    trainable = sum(t.numel() for t in trainer.trainable_state().values())  # counted before merging removes the adapters
    model = trainer.final_model()
    model.save_pretrained(run.checkpoint_dir)
    trainer.tokenizer.save_pretrained(run.checkpoint_dir)
    metrics = {"steps": trainer.step, "episodes": trainer.step * cfg.batch_size, "kl_coef": trainer.kl.value}
    metrics["trainable_params"] = trainable
    for key in ("eval_reward", "eval_kl", "eval_length", "eval_judge"):
        if key in baseline:
            metrics[f"{key}_start"] = baseline[key]
        if key in final_eval:
            metrics[f"{key}_end"] = final_eval[key]
    if "eval_reward" in baseline and "eval_reward" in final_eval:
        metrics["eval_reward_gain"] = final_eval["eval_reward"] - baseline["eval_reward"]
    if judge_fn is not None and trainer.judge_watch.best is not None:
        metrics["eval_judge_best"] = trainer.judge_watch.best
        metrics["best_judge_step"] = trainer.judge_watch.best_step
        metrics["checkpoint_step"] = saved_step
        metrics["stopped_by_judge"] = judge_stopped
    lineage = {"policy": cfg.policy, "rewards": cfg.rewards, "prompts": cfg.prompts, "method": cfg.method}
    if cfg.heldout_judge:
        lineage["heldout_judge"] = cfg.heldout_judge
        if cfg.early_stop_patience:
            lineage["checkpoint_chosen_by_judge"] = True  # the judge also picked which policy was saved
    if cfg.check_judge and cfg.check_prompts and not stop:
        from rlhf.evaluation import end_of_run_check

        del model  # the check loads the saved checkpoint and the start model itself
        metrics.update(
            end_of_run_check(
                run, start=cfg.policy, prompts=eval_p or [p for p, _ in train_records], judge=cfg.check_judge, count=cfg.check_prompts,
                lineage=lineage, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, registry=registry,
            )
        )  # fmt: skip
    metrics = publish(
        run,
        registry,
        cfg,
        kind="ppo",
        base=cfg.policy,
        method=f"PPO ({cfg.method})",
        data=cfg.prompts,
        metrics=metrics,
        lineage=lineage,
        stop=stop,
        step=trainer.step,
        ended_early=judge_stopped,
    )
    return metrics


def _prune(folder: Path, keep: int) -> None:
    import shutil

    found = sorted((int(p.name.split("-")[1]), p) for p in folder.glob("checkpoint-*") if p.name.split("-")[1].isdigit())
    for _, path in found[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
