"""GRPO and RLOO: trl's online trainers on the studio's prompts files and reward sources.

    rlhf-studio train grpo --config run.yaml        # or: python -m rlhf train grpo ...
    rlhf-studio train rloo --config run.yaml

Both sample ``num_generations`` replies per prompt and learn from how each reply scores against
its siblings, so neither needs a value model: GRPO normalises the rewards within each group
(``scale_rewards``) and aggregates a clipped token loss (``loss_type``); RLOO uses the mean of the
other replies as each reply's baseline (leave-one-out) and a clipped sequence loss. The policy has
LoRA adapters; the reference is the same model with its adapters switched off (never a second copy).

Rewards are the studio's own sources (``rlhf.rewards``: reward model, Python function,
similarity to a reference answer, AI judge), each passed to trl as one reward function over text
named after its source (so trl logs a reward per source), with the sources' weights as trl's
``reward_weights``. The prompts file is read like PPO's (``rlhf.ppo.read_prompts``); each prompt
becomes a conversation, so the policy's chat template formats it, and a reference answer rides
along for similarity rewards.

Every logged step is written to the run's events.jsonl under the names PPO uses (reward_mean,
reward/<source>, kl in nats per reply, entropy, reply_length, eos_rate, runaway_rate, the
reward's slope on length and the word it pays most for, sample replies every ``sample_every``
steps), so the PPO screen's charts and :func:`rlhf.ppo.warnings_for` work unchanged. Held-out
evaluations (start, every ``eval_every`` steps, end) sample one reply per held-out prompt with a
fixed seed and log eval_reward, eval_kl, eval_length and, with a ``heldout_judge``, eval_judge.

``use_vllm``: "auto" generates with vLLM (colocated) when it is importable and a CUDA GPU is
present, "on" requires both (refused clearly otherwise), "off" never; vLLM is an optional extra
and never needed on a CPU.
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rlhf.launch import CheckFields, LaunchFields, init_distributed, is_main_process, world_size
from rlhf.rewards import CombinedReward, RewardSpecError, check_specs

VLLM_CHOICES = ("auto", "on", "off")
GRPO_LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "luspo", "vespo")
GRPO_SCALING = ("group", "batch", "none")
SAMPLES_LOGGED = 4  # sample replies per logged event, as PPO


def _default_rewards() -> list[dict]:
    return [{"type": "judge", "model": "smollm2-135m-instruct", "weight": 1.0}]


def vllm_available() -> bool:
    """vLLM can generate here: the package is importable and a CUDA GPU is present."""
    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def _check_sources(specs: list[dict], key: str) -> None:
    try:
        check_specs(specs)
    except RewardSpecError as exc:
        # check_specs names the list it knows, "rewards[i]": name this config's own key instead.
        message = str(exc)
        raise ValueError(key + message[len("rewards") :] if message.startswith("rewards") else message) from exc


@dataclass
class OnlineRunConfig(CheckFields, LaunchFields):
    """What GRPO and RLOO share; see :class:`GRPORunConfig` and :class:`RLOORunConfig`."""

    prompts: str = field(
        default="", metadata={"help": "prompts file (.jsonl/.json/.csv/.parquet with prompt/messages/instruction, or .txt)"}
    )
    eval_prompts: str | None = field(default=None, metadata={"help": "a separate held-out prompts file (optional)"})
    eval_fraction: float = field(default=0.1, metadata={"help": "share of prompts held out for evaluation (ignored with eval_prompts)"})
    policy: str = field(default="smollm2-135m-instruct", metadata={"help": "registered causal LM (or SFT checkpoint) to tune"})
    rewards: list[dict] = field(
        default_factory=_default_rewards,
        metadata={"help": "reward sources: type model/function/similarity/judge + weight (each logged as its own reward)"},
    )
    heldout_judge: list[dict] = field(
        default_factory=list,
        metadata={
            "help": "a reward source the policy is NOT trained on (same format as rewards), e.g. a reward model trained on other "
            "pairs: it also scores the held-out replies at every evaluation (eval_judge), so a training reward that keeps rising "
            "while this judge falls shows over-optimisation; empty = off"
        },
    )
    system: str | None = field(default=None, metadata={"help": "system prompt for every prompt"})
    num_generations: int = field(
        default=4, metadata={"help": "replies sampled per prompt (the group each reply is compared with); at least 2"}
    )
    beta: float = field(default=0.0, metadata={"help": "KL coefficient to the reference (each method sets its own default)"})
    batch_size: int = field(
        default=8,
        metadata={
            "help": "replies per step on each process (trl's per_device_train_batch_size); the replies of all processes together "
            "must be a multiple of num_generations: batch_size / num_generations prompts per step on one process"
        },
    )
    max_new_tokens: int = field(default=128, metadata={"help": "longest reply in tokens (a step's time grows in proportion)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the replies"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass of the replies"})
    learning_rate: float = field(
        default=5e-5, metadata={"help": "AdamW learning rate (trl's 1e-6 is for full fine-tuning; LoRA wants more)"}
    )
    steps: int = field(
        default=20, metadata={"help": "optimizer steps, one batch of replies each; 0 = run `epochs` passes over the prompts"}
    )
    epochs: float = field(default=1.0, metadata={"help": "passes over the training prompts (used when steps is 0)"})
    num_iterations: int = field(default=1, metadata={"help": "updates per batch of replies (trl's μ; above 1 the clipping matters)"})
    epsilon: float = field(default=0.2, metadata={"help": "policy ratio clip"})
    mask_truncated_completions: bool = field(
        default=False, metadata={"help": "leave replies cut at max_new_tokens out of the loss (DAPO's advice)"}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling"})
    use_vllm: str = field(
        default="auto",
        metadata={
            "help": "generate with vLLM: auto (when vLLM is installed and a CUDA GPU is present), on (require both), off; "
            "vLLM is an optional extra, never needed on a CPU"
        },
    )
    eval_every: int = field(default=10, metadata={"help": "evaluate on held-out prompts every N steps (0 = start and end only)"})
    sample_every: int = field(default=5, metadata={"help": "log sample replies every N steps"})
    seed: int = field(default=0, metadata={"help": "random seed"})
    logging_steps: int = field(default=1, metadata={"help": "log every N steps (1: each event is one batch, and kl per reply is exact)"})
    save_steps: int = field(default=10, metadata={"help": "save a resumable checkpoint every N steps"})
    register_as: str | None = field(default=None, metadata={"help": "registry name for the result (default: the run id)"})

    def __post_init__(self) -> None:
        self.check_launch()
        self.check_end_check()
        for name in ("batch_size", "max_new_tokens", "num_iterations", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2: each reply is compared with its siblings, got {self.num_generations}")
        if (self.batch_size * self.num_processes) % self.num_generations:
            raise ValueError(
                f"the replies of a step (batch_size {self.batch_size} x num_processes {self.num_processes}) must be a multiple of "
                f"num_generations ({self.num_generations}): set batch_size to {self.num_generations} or a multiple of it"
            )
        if self.steps < 0 or (self.steps == 0 and not self.epochs > 0):
            raise ValueError("give steps >= 1, or steps: 0 with epochs > 0")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0: GRPO and RLOO need sampled replies")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.eval_every < 0 or self.sample_every < 0:
            raise ValueError("eval_every and sample_every must be >= 0 (0 = off)")
        _check_sources(self.rewards, "rewards")
        if self.heldout_judge:
            _check_sources(self.heldout_judge, "heldout_judge")
            if not self.eval_prompts and not self.eval_fraction > 0:
                raise ValueError("heldout_judge scores the held-out replies: hold some prompts out (eval_fraction > 0 or eval_prompts)")
        if self.use_vllm not in VLLM_CHOICES:
            raise ValueError(f"use_vllm must be auto, on or off, got {self.use_vllm!r}")
        if self.use_vllm == "on" and not vllm_available():
            missing = "vLLM is not installed" if importlib.util.find_spec("vllm") is None else "there is no CUDA GPU"
            raise ValueError(
                f"use_vllm is on but {missing}: vLLM generates on a CUDA GPU only (pip install vllm on a GPU machine); "
                "set use_vllm: auto or off to generate with transformers"
            )

    @property
    def vllm(self) -> bool:
        """Whether this run generates with vLLM."""
        return self.use_vllm == "on" or (self.use_vllm == "auto" and vllm_available())


@dataclass
class GRPORunConfig(OnlineRunConfig):
    beta: float = field(
        default=0.04,
        metadata={
            "help": "KL coefficient to the reference, in the loss (trl 1.16 defaults to 0.0: no reference, no KL measured; "
            "0.04 is the GRPO paper's value); 0 = no reference pass (faster) and no KL in the diagnostics"
        },
    )
    loss_type: str = field(
        default="dapo",
        metadata={
            "help": "how token losses are averaged: dapo (trl's default; over all reply tokens of the batch, no length bias), "
            "grpo (per reply, then over replies: favours short good replies), dr_grpo (by a constant), bnpo, cispo, sapo, luspo, vespo"
        },
    )
    scale_rewards: str = field(
        default="group",
        metadata={
            "help": "divide the advantages by the spread of rewards in each prompt's group (group, trl's default), over the whole "
            "batch (batch), or not at all (none, Dr. GRPO: no difficulty bias)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type not in GRPO_LOSSES:
            raise ValueError(f"loss_type must be one of {', '.join(GRPO_LOSSES)}, got {self.loss_type!r}")
        if self.scale_rewards not in GRPO_SCALING:
            raise ValueError(f"scale_rewards must be one of {', '.join(GRPO_SCALING)}, got {self.scale_rewards!r}")


@dataclass
class RLOORunConfig(OnlineRunConfig):
    beta: float = field(
        default=0.05,
        metadata={
            "help": "KL coefficient to the reference, subtracted from each reply's reward (summed over its tokens), trl 1.16's "
            "default; 0 = no reference pass and no KL in the diagnostics"
        },
    )
    normalize_advantages: bool = field(
        default=False, metadata={"help": "scale the advantages of each batch to mean 0 and spread 1 (trl's default: off)"}
    )
    reward_clip: float | None = field(
        default=None, metadata={"help": "clip the weighted reward to [-x, x] before the baseline (empty = no clipping)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reward_clip is not None and not self.reward_clip > 0:
            raise ValueError(f"reward_clip must be > 0 (or empty for none), got {self.reward_clip}")


# -- the studio's reward sources as trl reward functions --------------------------------------------
def _reply_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion if m.get("role") == "assistant")


class RewardBank:
    """Scores of the current batch from every source, and the diagnostics PPO computes from them.

    trl calls each reward function once per batch of replies, in order; when the last source has
    scored, the bank adds the weighted total and updates the reward's length trend, the word it
    pays most for and the runaway count (``rlhf.ppo``'s :class:`LengthFit` and :class:`KeywordPay`).
    :meth:`flush` returns what was gathered since the last logged step.
    """

    def __init__(self, weights: list[float], tokenizer, max_new_tokens: int) -> None:
        from rlhf.generation import end_of_turn_ids
        from rlhf.ppo import KeywordPay, LengthFit

        self.weights = weights
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.stop_ids = set(end_of_turn_ids(tokenizer))
        self.special_ids = set(tokenizer.all_special_ids) | self.stop_ids
        self.length_fit, self.keyword_pay = LengthFit(), KeywordPay()
        self.parts: dict[int, list[float]] = {}
        self.replies = 0
        self.runaway = 0
        self.samples: list[dict] = []
        self.started = time.perf_counter()

    def record(self, index: int, prompts: list[str], replies: list[str], completion_ids, scores: list[float]) -> None:
        from rlhf.ppo import RUNAWAY_THRESHOLD, is_runaway

        self.parts[index] = scores
        if len(self.parts) < len(self.weights):
            return
        total = [sum(w * self.parts[i][j] for i, w in enumerate(self.weights)) for j in range(len(replies))]
        self.parts = {}
        ids = [list(c) for c in completion_ids] if completion_ids is not None else [self.tokenizer(r)["input_ids"] for r in replies]
        ended = [bool(row) and (row[-1] in self.stop_ids or len(row) < self.max_new_tokens) for row in ids]
        lengths = [len(row) for row in ids]
        finite = [t if math.isfinite(t) else 0.0 for t in total]
        self.length_fit.update(lengths, finite)
        words = [[t for t in row if t not in self.special_ids] for row in ids]
        self.keyword_pay.update(words, self.length_fit.debias(lengths, finite))
        self.replies += len(replies)
        self.runaway += sum(not e and is_runaway(row, RUNAWAY_THRESHOLD) for e, row in zip(ended, ids, strict=True))
        self.samples = [
            {"prompt": p, "reply": r, "reward": s, "ended": e} for p, r, s, e in zip(prompts, replies, total, ended, strict=True)
        ][:SAMPLES_LOGGED]
        self._last_words = words

    def flush(self) -> dict:
        """The step's extra diagnostics (runaway rate, length slope, keyword), then start counting afresh."""
        keyword, corr, pay = self.keyword_pay.top()
        words = getattr(self, "_last_words", [])
        took = time.perf_counter() - self.started
        out = {
            "runaway_rate": self.runaway / self.replies if self.replies else 0.0,
            "length_slope": self.length_fit.slope,
            "keyword": self.tokenizer.decode([keyword]) if keyword is not None else "",
            "keyword_corr": corr,
            "keyword_pay": pay,
            "keyword_share": sum(keyword in w for w in words) / len(words) if keyword is not None and words else 0.0,
            "episodes": self.replies,
            "episodes_per_second": self.replies / took if took > 0 else 0.0,
        }
        self.replies, self.runaway, self.started = 0, 0, time.perf_counter()
        return out


class SourceReward:
    """One studio reward source as a trl reward function over text, named after the source.

    trl passes the prompts and replies as message lists when the dataset is conversational; the
    source gets the last user turn and the reply as plain text, and the prompt's reference answer
    (the dataset's ``reference`` column) for similarity. An ensemble reward model's spread is
    logged through trl's ``log_metric`` as ``rewards/<source> spread``.
    """

    def __init__(self, name: str, source, bank: RewardBank, index: int) -> None:
        self.__name__ = name  # trl names the logged reward after it: rewards/<name>/mean
        self.source, self.bank, self.index = source, bank, index

    def __call__(self, prompts, completions, completion_ids=None, reference=None, log_metric=None, **kwargs) -> list[float]:
        from rlhf.ppo import _text_of

        texts = [_text_of(p) for p in prompts]
        replies = [_reply_text(c) for c in completions]
        refs = list(reference) if reference is not None else [None] * len(texts)
        scores = [float(s) for s in self.source(texts, replies, refs)]
        spread = getattr(self.source, "last_spread", None)
        if spread is not None and log_metric is not None:
            log_metric(f"rewards/{self.__name__} spread", sum(spread) / max(1, len(spread)))
        self.bank.record(self.index, texts, replies, completion_ids, scores)
        return scores


def reward_functions(
    specs: list[dict], registry, tokenizer, max_new_tokens: int, device=None
) -> tuple[list[SourceReward], RewardBank, CombinedReward]:
    """One trl reward function per source of ``specs`` (loaded by :func:`rlhf.rewards.build_reward`), their bank,
    and the same sources combined (for the held-out evaluation: each model is loaded once)."""
    from rlhf.rewards import build_reward

    combined = build_reward(specs, registry, device)
    bank = RewardBank([w for _, w, _ in combined.sources], tokenizer, max_new_tokens)
    return [SourceReward(name, source, bank, i) for i, (name, _, source) in enumerate(combined.sources)], bank, combined


# -- diagnostics under the studio's names ---------------------------------------------------------
def studio_metrics(logs: dict, names: Sequence[str], reply_length: float | None = None) -> dict:
    """trl's logged metrics under the names PPO writes (what the charts and ``warnings_for`` read).

    trl logs KL and entropy per token; PPO's kl is per reply, so kl = per-token KL x mean reply
    length (the same sums when one batch is logged per event; ``reply_length``: the last batch's,
    for a step that reuses it with num_iterations > 1), and trl's own per-token figure is kept as
    kl_per_token. eos_rate = 1 - trl's clipped ratio.
    """
    out: dict = {}
    length = logs.get("completions/mean_length", reply_length)
    if logs.get("kl") is not None:
        out["kl_per_token"] = logs["kl"]
        # trl's key is "kl" too: replaced, so an event never holds a per-token figure under PPO's per-reply name
        out["kl"] = logs["kl"] * length if length is not None else None
    if logs.get("entropy") is not None:
        out["entropy"] = logs["entropy"]
    if "loss" in logs:
        out["policy_loss"] = logs["loss"]
    if logs.get("clip_ratio/region_mean") is not None:
        out["clipfrac"] = logs["clip_ratio/region_mean"]
    if "reward" not in logs:
        return out
    out["reward_mean"] = logs["reward"]
    if "reward_std" in logs:
        out["reward_std"] = logs["reward_std"]
    for name in names:
        if f"rewards/{name}/mean" in logs:
            out[f"reward/{name}"] = logs[f"rewards/{name}/mean"]
        if f"rewards/{name} spread" in logs:
            out[f"reward/{name} spread"] = logs[f"rewards/{name} spread"]
    if "completions/mean_length" in logs:
        out["reply_length"] = logs["completions/mean_length"]
    if logs.get("completions/clipped_ratio") is not None:
        out["eos_rate"] = 1.0 - logs["completions/clipped_ratio"]
    return out


# -- held-out evaluation --------------------------------------------------------------------------
class HeldOut:
    """Held-out figures, as PPO's: one reply per prompt sampled with a fixed seed, the training reward,
    KL to the reference (the adapters off) in nats per reply, reply length and the held-out judge."""

    def __init__(self, cfg: OnlineRunConfig, tokenizer, records: list, reward_fn, judge_fn) -> None:
        self.cfg, self.tokenizer = cfg, tokenizer
        self.prompts, self.references = [p for p, _ in records], [r for _, r in records]
        self.reward_fn, self.judge_fn = reward_fn, judge_fn

    def __call__(self, model) -> dict:
        import torch

        from rlhf.generation import GenerationEngine, SamplingParams
        from rlhf.ppo import _mean, _spread, _text_of, layout

        if not self.prompts:
            return {}
        cfg = self.cfg
        was_training = model.training
        model.eval()
        engine = GenerationEngine(model, self.tokenizer, batch_size=max(cfg.batch_size, 1))
        rewards: list[float] = []
        judged: list[float] = []
        kls: list[float] = []
        lengths: list[int] = []
        device = engine.device
        # A fixed seed for comparable evaluations, without disturbing the training's random stream.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            for i in range(0, len(self.prompts), cfg.batch_size):
                chunk, refs = self.prompts[i : i + cfg.batch_size], self.references[i : i + cfg.batch_size]
                params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + i)
                rollouts = engine.rollout(chunk, params, system=cfg.system)
                texts, replies = [_text_of(p) for p in chunk], [r.text for r in rollouts]
                rewards += self.reward_fn(texts, replies, refs)[0]
                if self.judge_fn is not None:
                    judged += self.judge_fn(texts, replies, refs)[0]
                batch = layout(rollouts, self.tokenizer.pad_token_id, device)
                logp = _reply_logprobs(model, batch, cfg.temperature)
                with model.disable_adapter():
                    ref = _reply_logprobs(model, batch, cfg.temperature)
                kls += ((logp - ref) * batch.response_mask).sum(1).tolist()
                lengths += [len(r.response_ids) for r in rollouts]
        model.train(was_training)
        out = {
            "eval_reward": _mean(rewards),
            "eval_reward_std": _spread(rewards),
            "eval_kl": _mean(kls),
            "eval_length": _mean(lengths),
            "eval_prompts": len(rewards),
        }
        if self.judge_fn is not None:
            out["eval_judge"], out["eval_judge_std"] = _mean(judged), _spread(judged)
        return out


def _reply_logprobs(model, batch, temperature: float):
    """Log-probs of the reply tokens of a :func:`rlhf.ppo.layout` batch (the LM head over the reply only)."""
    start, width = batch.start, batch.response_mask.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        logits_to_keep=width + 1,
    )
    logits = out.logits[:, :-1].float() / temperature  # the distribution the replies were sampled from
    targets = batch.input_ids[:, start : start + width]
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


# -- the run --------------------------------------------------------------------------------------
def _dataset(records: list, system: str | None):
    """trl's conversational prompt dataset; ``reference`` carries the answer for similarity rewards."""
    from datasets import Dataset

    rows = []
    for prompt, reference in records:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if system and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
        rows.append({"prompt": [{"role": m["role"], "content": str(m["content"])} for m in messages], "reference": reference})
    return Dataset.from_list(rows)


def _trainer_args(cfg: OnlineRunConfig, run, weights: list[float]) -> dict:
    """The arguments GRPOConfig and RLOOConfig share."""
    import torch

    from rlhf.results import trainer_arguments

    return {
        **trainer_arguments(run, cfg.seed, cfg.logging_steps, cfg.save_steps),
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": 1,  # one generation batch per optimizer step: one event per step
        "num_generations": cfg.num_generations,
        "max_completion_length": cfg.max_new_tokens,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "learning_rate": cfg.learning_rate,
        "max_steps": cfg.steps if cfg.steps else -1,
        "num_train_epochs": cfg.epochs,
        "beta": cfg.beta,
        "num_iterations": cfg.num_iterations,
        "epsilon": cfg.epsilon,
        "mask_truncated_completions": cfg.mask_truncated_completions,
        "reward_weights": weights,
        "use_vllm": cfg.vllm,
        "vllm_mode": "colocate",
        # trl defaults to checkpointing; it only saves memory on a GPU and costs a second forward pass
        "gradient_checkpointing": torch.cuda.is_available(),
        "log_completions": False,
        "disable_dropout": True,
    }


def _train_online(kind: str, cfg: OnlineRunConfig, run, stop, registry=None, resume: bool = False) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback

    from rlhf.loading import load_causal_lm
    from rlhf.ppo import heldout_judge_warnings, prompt_records
    from rlhf.registry import ModelRegistry
    from rlhf.results import publish
    from rlhf.rewards import build_reward
    from rlhf.runs import run_callback

    registry = registry or ModelRegistry()
    train_records, eval_records = prompt_records(cfg)
    torch.manual_seed(cfg.seed)
    # Under a launch of several processes, join the group first: each process's models then go to its own
    # GPU (cuda:LOCAL_RANK), not all to GPU 0.
    device = init_distributed() if world_size() > 1 else None
    model, tokenizer = load_causal_lm(cfg.policy, registry, device=device, dtype=torch.float32)
    if hasattr(model, "peft_config"):  # an adapter checkpoint (e.g. from SFT): trl takes a plain model and our LoRA
        model = model.merge_and_unload()
    funcs, bank, reward_fn = reward_functions(cfg.rewards, registry, tokenizer, cfg.max_new_tokens, device=device)
    names = [f.__name__ for f in funcs]
    weights = [float(spec.get("weight", 1.0)) for spec in cfg.rewards]
    # The judge scores the held-out replies only (rank 0 evaluates) and never reaches the policy's update.
    judge_fn = build_reward(cfg.heldout_judge, registry, device) if cfg.heldout_judge and is_main_process() else None
    judge_warnings = heldout_judge_warnings(cfg.rewards, cfg.heldout_judge, registry)
    for warning in judge_warnings:
        print(f"warning: {warning}", flush=True)
    held_out = HeldOut(cfg, tokenizer, eval_records, reward_fn, judge_fn)

    names_in = {n.split(".")[-1] for n, _ in model.named_modules()}
    targets = [t for t in ("q_proj", "k_proj", "v_proj", "o_proj") if t in names_in] or None
    lora = LoraConfig(task_type="CAUSAL_LM", r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=targets)
    common = _trainer_args(cfg, run, weights)
    if kind == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        args = GRPOConfig(**common, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards)
        trainer_class = GRPOTrainer
    else:
        from trl import RLOOConfig, RLOOTrainer

        clip = (-cfg.reward_clip, cfg.reward_clip) if cfg.reward_clip else None
        args = RLOOConfig(**common, normalize_advantages=cfg.normalize_advantages, reward_clip_range=clip)
        trainer_class = RLOOTrainer

    evals: dict[int, dict] = {}

    def evaluate(step: int) -> dict:
        if step not in evals:
            result = held_out(trainer.accelerator.unwrap_model(trainer.model))
            evals[step] = result
            if result:
                line = f"held-out at step {step}: reward {result['eval_reward']:.3f} kl {result['eval_kl']:.3f}"
                line += f" length {result['eval_length']:.1f}"
                if "eval_judge" in result:
                    line += f" judge {result['eval_judge']:.3f}"
                print(line, flush=True)
        return evals[step]

    class StudioEvents(TrainerCallback):
        """Adds the studio's names to each logged record (run_callback, after it, writes the event) and evaluates."""

        reply_length: float | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not ("reward" in logs or "kl" in logs):
                return
            logs.update(studio_metrics(logs, names, self.reply_length))
            self.reply_length = logs.get("reply_length", self.reply_length)
            if "reward" not in logs:  # a step that reuses the last batch of replies (num_iterations > 1)
                return
            logs.update(bank.flush())
            step = state.global_step
            if cfg.sample_every and bank.samples and (step % cfg.sample_every == 0 or step in (1, state.max_steps)):
                logs["samples"] = bank.samples

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if cfg.eval_every and step % cfg.eval_every == 0 and step < state.max_steps and is_main_process() and not stop:
                result = evaluate(step)
                if result:
                    run.append_event({"step": step, "max_steps": state.max_steps, **result})

    trainer = trainer_class(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=_dataset(train_records, cfg.system),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[StudioEvents(), run_callback(run, stop)],
    )
    last = run.last_checkpoint() if resume else None
    baseline = next((e for e in run.events() if e.get("step") == 0 and "eval_reward" in e), None) if last else None
    if baseline is None and is_main_process():
        baseline = evaluate(0)
        run.append_event(
            {"step": 0, "max_steps": trainer.args.max_steps, **baseline, **({"judge_warnings": judge_warnings} if judge_warnings else {})}
        )
    baseline = {k: v for k, v in (baseline or {}).items() if k.startswith("eval_")}
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if not is_main_process():
        return {}
    step = trainer.state.global_step
    final = evaluate(step)
    if final:
        run.append_event({"step": step, "max_steps": trainer.state.max_steps, **final})

    # trl reuses each batch of replies for num_iterations steps
    episodes = step * cfg.batch_size * cfg.num_processes // cfg.num_iterations
    metrics: dict = {"steps": step, "episodes": episodes, "train_prompts": len(train_records)}
    metrics["trainable_params"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    for key in ("eval_reward", "eval_kl", "eval_length", "eval_judge"):
        if key in baseline:
            metrics[f"{key}_start"] = baseline[key]
        if key in final:
            metrics[f"{key}_end"] = final[key]
    if "eval_reward" in baseline and "eval_reward" in final:
        metrics["eval_reward_gain"] = final["eval_reward"] - baseline["eval_reward"]
    if "eval_judge" in baseline and "eval_judge" in final:
        metrics["eval_judge_gain"] = final["eval_judge"] - baseline["eval_judge"]
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(run.checkpoint_dir)
    tokenizer.save_pretrained(run.checkpoint_dir)
    lineage = {"prompts": cfg.prompts, "policy": cfg.policy, "rewards": cfg.rewards, "method": kind}
    if cfg.heldout_judge:
        lineage["heldout_judge"] = cfg.heldout_judge
    if cfg.check_judge and cfg.check_prompts and not stop:
        from rlhf.evaluation import end_of_run_check

        del merged  # the check loads the saved checkpoint and the start model itself
        prompts = [p for p, _ in eval_records] or [p for p, _ in train_records]
        metrics.update(
            end_of_run_check(
                run, start=cfg.policy, prompts=prompts, judge=cfg.check_judge, count=cfg.check_prompts, lineage=lineage,
                max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, registry=registry,
            )
        )  # fmt: skip
    label = "GRPO" if kind == "grpo" else "RLOO"
    return publish(
        run,
        registry,
        cfg,
        kind=kind,
        base=cfg.policy,
        method=f"{label} (LoRA, {cfg.num_generations} replies per prompt, beta {cfg.beta:g})",
        data=cfg.prompts,
        metrics=metrics,
        lineage=lineage,
        stop=stop,
        step=step,
    )


def train_grpo(cfg: GRPORunConfig, run, stop, registry=None, resume: bool = False) -> dict:
    """GRPO: train, evaluate, save, write the model card and register; returns the metrics."""
    return _train_online("grpo", cfg, run, stop, registry, resume)


def train_rloo(cfg: RLOORunConfig, run, stop, registry=None, resume: bool = False) -> dict:
    """RLOO: train, evaluate, save, write the model card and register; returns the metrics."""
    return _train_online("rloo", cfg, run, stop, registry, resume)
