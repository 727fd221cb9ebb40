"""Rewards at the level of text, so a reward source needs no tokenizer in common with the policy.

A PPO run combines one or more sources, each a mapping in the run config:

    rewards:
      - {type: model, model: my-reward-model, weight: 1.0}       # a trained reward model (rlhf.reward)
      - {type: function, function: "mypkg.rewards:polite", weight: 0.5}   # f(prompt, reply) -> float
      - {type: similarity, model: minilm-l6, weight: 1.0}         # cosine to the prompt's reference answer
      - {type: judge, model: smollm2-135m-instruct, weight: 1.0}  # RLAIF: an LM asked "is this reply good?"

The judge (RLAIF) fills ``template`` with {prompt} and {reply}, applies the judge's chat template
and reads the next token: the score is log P(yes) - log P(no). Similarity embeds with the
encoder (mean pooling) and needs a reference answer per prompt (``reference``, ``response``,
``output`` or ``chosen`` in the prompts file).

    reward = build_reward(specs, registry)
    total, parts = reward(prompts, replies, references)   # parts: per-source scores

A reward model that is an ensemble of heads (``method: head`` with ``heads`` > 1) can take an
uncertainty penalty, ``{type: model, model: NAME, uncertainty: 1.0}``: the source pays its
heads' mean minus that many standard deviations of their spread, so the policy gains nothing
from replies the reward model cannot judge (Coste et al., 2023, "Reward model ensembles help
mitigate overoptimization"). The spread is reported as its own part, ``<source> spread``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from rlhf.registry import ModelRegistry

TYPES = ("model", "function", "similarity", "judge")
DEFAULT_JUDGE_TEMPLATE = (
    "Here is a question and a reply.\n\nQuestion: {prompt}\n\nReply: {reply}\n\n"
    "Is the reply helpful, correct and polite? Answer with one word: Yes or No."
)


class RewardSpecError(ValueError):
    """A reward source in the config is wrong; the message says which and why."""


def check_specs(specs: list[dict]) -> None:
    """Validate the ``rewards`` list of a config without loading anything."""
    if not specs:
        raise RewardSpecError("rewards: give at least one reward source (type model, function, similarity or judge)")
    for i, spec in enumerate(specs):
        where = f"rewards[{i}]"
        if not isinstance(spec, dict):
            raise RewardSpecError(f"{where}: expected a mapping like {{type: model, model: NAME}}")
        kind = spec.get("type")
        if kind not in TYPES:
            raise RewardSpecError(f"{where}: type must be one of {', '.join(TYPES)}, got {kind!r}")
        allowed = {"type", "weight", "function" if kind == "function" else "model"} | ({"template"} if kind == "judge" else set())
        allowed |= {"uncertainty"} if kind == "model" else set()
        unknown = set(spec) - allowed
        if unknown:
            raise RewardSpecError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
        key = "function" if kind == "function" else "model"
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise RewardSpecError(f"{where}: a {kind} source needs '{key}'")
        if kind == "function" and ":" not in spec["function"]:
            raise RewardSpecError(f"{where}: function must look like 'module.path:function_name'")
        if not isinstance(spec.get("weight", 1.0), int | float):
            raise RewardSpecError(f"{where}: weight must be a number")
        penalty = spec.get("uncertainty", 0.0)
        if not isinstance(penalty, int | float) or isinstance(penalty, bool) or penalty < 0:
            raise RewardSpecError(f"{where}: uncertainty must be a number, 0 or more (standard deviations of the heads' spread)")
        if kind == "judge" and "template" in spec and not ("{prompt}" in spec["template"] and "{reply}" in spec["template"]):
            raise RewardSpecError(f"{where}: template must contain {{prompt}} and {{reply}}")


def source_name(spec: dict) -> str:
    return f"{spec['type']}:{spec.get('function') or spec.get('model')}"


class ModelReward:
    """A trained reward model (sequence classification) scoring (prompt, reply); an ensemble's
    score is its heads' mean, less ``uncertainty`` times their standard deviation."""

    def __init__(self, name: str, registry: ModelRegistry, device: torch.device | str | None = None, uncertainty: float = 0.0) -> None:
        from rlhf.scoring import RewardScorer

        self.scorer = RewardScorer.load(registry.resolve(name), device=str(device) if device else None)
        if uncertainty and self.scorer.heads == 1:
            raise RewardSpecError(
                f"reward model {name!r} has one head, so it has no uncertainty to penalise; "
                "train an ensemble (method: head, heads: 5) or drop 'uncertainty'"
            )
        self.uncertainty = float(uncertainty)
        self.last_spread: list[float] | None = None

    def __call__(self, prompts: Sequence[str], replies: Sequence[str], references: Sequence[str | None]) -> list[float]:
        scores, spread = self.scorer.score_spread(list(zip(prompts, replies, strict=True)))
        self.last_spread = spread if self.scorer.heads > 1 else None
        return [m - self.uncertainty * s for m, s in zip(scores, spread, strict=True)]


class FunctionReward:
    """``module:function`` called as f(prompt, reply) -> float for each reply."""

    def __init__(self, target: str) -> None:
        module, _, name = target.partition(":")
        try:
            self.fn: Callable[[str, str], float] = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise RewardSpecError(f"cannot import reward function {target!r}: {exc}") from exc

    def __call__(self, prompts: Sequence[str], replies: Sequence[str], references: Sequence[str | None]) -> list[float]:
        return [float(self.fn(p, r)) for p, r in zip(prompts, replies, strict=True)]


class SimilarityReward:
    """Cosine similarity of the reply to the prompt's reference answer under a sentence encoder."""

    def __init__(self, name: str, registry: ModelRegistry, device: torch.device | str | None = None) -> None:
        from rlhf.embedding import SentenceEncoder

        self.encoder = SentenceEncoder.load(name, registry, str(device) if device else None)

    def __call__(self, prompts: Sequence[str], replies: Sequence[str], references: Sequence[str | None]) -> list[float]:
        if any(not ref for ref in references):
            raise RewardSpecError("a similarity reward needs a reference answer for every prompt (a 'reference' or 'response' field)")
        a, b = self.encoder.embed(list(replies)), self.encoder.embed([str(r) for r in references])
        return (a * b).sum(-1).tolist()


class JudgeReward:
    """RLAIF: a causal LM asked whether the reply is good; score = log P(yes) - log P(no)."""

    def __init__(self, name: str, registry: ModelRegistry, template: str | None = None, device=None) -> None:
        from rlhf.loading import load_causal_lm

        self.model, self.tokenizer = load_causal_lm(name, registry, device=device, dtype=torch.float32)
        self.template = template or DEFAULT_JUDGE_TEMPLATE
        self.yes = self._first_tokens(["Yes", " Yes", "yes", " yes"])
        self.no = self._first_tokens(["No", " No", "no", " no"])

    def _first_tokens(self, words: list[str]) -> list[int]:
        return sorted({self.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words})

    def _text(self, prompt: str, reply: str) -> str:
        content = self.template.format(prompt=prompt, reply=reply)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        return content + "\nAnswer:"

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[str], replies: Sequence[str], references: Sequence[str | None]) -> list[float]:
        texts = [self._text(p, r) for p, r in zip(prompts, replies, strict=True)]
        special = not getattr(self.tokenizer, "chat_template", None)
        scores: list[float] = []
        for start in range(0, len(texts), 16):
            batch = self.tokenizer(texts[start : start + 16], return_tensors="pt", padding=True, add_special_tokens=special)
            batch = batch.to(self.model.device)
            logits = self.model(**batch).logits[:, -1].float().log_softmax(-1)  # left padded: the last column is next
            yes, no = logits[:, self.yes].logsumexp(-1), logits[:, self.no].logsumexp(-1)
            scores += (yes - no).cpu().tolist()
        return scores


@dataclass
class CombinedReward:
    """Weighted sum of sources; also returns each source's scores for the diagnostics."""

    sources: list[tuple[str, float, Callable]]

    def __call__(
        self, prompts: Sequence[str], replies: Sequence[str], references: Sequence[str | None] | None = None
    ) -> tuple[list[float], dict[str, list[float]]]:
        references = references if references is not None else [None] * len(prompts)
        parts = {name: source(prompts, replies, references) for name, _, source in self.sources}
        for name, _, source in self.sources:
            if getattr(source, "last_spread", None) is not None:
                parts[f"{name} spread"] = source.last_spread
        total = [0.0] * len(prompts)
        for name, weight, _ in self.sources:
            total = [t + weight * s for t, s in zip(total, parts[name], strict=True)]
        return total, parts


def build_reward(specs: list[dict], registry: ModelRegistry | None = None, device=None) -> CombinedReward:
    """Load every source of a ``rewards`` list (checked first)."""
    check_specs(specs)
    registry = registry or ModelRegistry()
    sources = []
    for spec in specs:
        kind = spec["type"]
        if kind == "model":
            source = ModelReward(spec["model"], registry, device, float(spec.get("uncertainty", 0.0)))
        elif kind == "function":
            source = FunctionReward(spec["function"])
        elif kind == "similarity":
            source = SimilarityReward(spec["model"], registry, device)
        else:
            source = JudgeReward(spec["model"], registry, spec.get("template"), device)
        sources.append((source_name(spec), float(spec.get("weight", 1.0)), source))
    return CombinedReward(sources)
