"""Judges for automatic comparisons: which of two replies to the same prompt is better?

A judge is given prompts and two replies per prompt and returns one :class:`Judgement` each:
a verdict ("a", "b" or "tie") and a preference for A (positive: A better). Three kinds:

    {type: reward_model, model: NAME}            # scores each reply; the higher wins (ties within ``margin``)
    {type: pairwise, model: NAME, template: ...} # an LM asked "which reply is better, A or B?"
    {type: function, function: "pkg.mod:fn"}     # fn(prompt, reply) -> score, or fn(prompt, first, second) -> preference

A pairwise judge (the LM, or a three-argument function) is asked twice, once with each reply
shown first, and its two answers are averaged (the second sign-flipped): a preference for a
position adds the same amount to both answers and cancels, while a preference for a reply
survives. The verdict is the sign of that average (a tie when it is zero). Small judges lean on
position heavily (SmolLM2 prefers whatever it reads first by more than it prefers either reply),
so requiring both orders to agree would turn nearly every verdict into a tie; the average keeps
what the judge knows. Both answers are kept with each judgement. The LM judge reads the
next-token log-probabilities of "A" and "B", so it never has to write a parseable answer.

    judge = build_judge({"type": "reward_model", "model": "rm-hh"})
    found = judge.judge(prompts, replies_a, replies_b)     # [Judgement(verdict, preference, orders)]
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rlhf.registry import ModelRegistry

JUDGE_TYPES = ("reward_model", "pairwise", "function")
DEFAULT_PAIRWISE_TEMPLATE = (
    "You compare two assistant replies to the same user message.\n\n"
    "User message:\n{prompt}\n\n"
    "Reply A:\n{first}\n\n"
    "Reply B:\n{second}\n\n"
    "Which reply is more helpful, correct and harmless? Answer with one letter: A or B."
)


class JudgeSpecError(ValueError):
    """The judge in a config is wrong; the message says what to write instead."""


@dataclass(frozen=True)
class Judgement:
    """One prompt's verdict between reply A and reply B."""

    verdict: str  # "a" | "b" | "tie"
    preference: float  # > 0: A preferred; the judge's own scale (reward difference, log-odds, ...)
    orders: tuple[float, float] | None = None  # pairwise judges: (A shown first, B shown first), each "first is better" > 0

    @property
    def outcome(self) -> float:
        """1 for A, 0 for B, 0.5 for a tie: the win-rate unit (ties count half)."""
        return {"a": 1.0, "b": 0.0}.get(self.verdict, 0.5)


def check_judge(spec: dict) -> None:
    """Validate a judge mapping without loading anything."""
    if not isinstance(spec, dict):
        raise JudgeSpecError("judge: expected a mapping like {type: reward_model, model: NAME}")
    kind = spec.get("type")
    if kind not in JUDGE_TYPES:
        raise JudgeSpecError(f"judge: type must be one of {', '.join(JUDGE_TYPES)}, got {kind!r}")
    key = "function" if kind == "function" else "model"
    allowed = {"type", key} | ({"template"} if kind == "pairwise" else set()) | ({"margin"} if kind == "reward_model" else set())
    unknown = set(spec) - allowed
    if unknown:
        raise JudgeSpecError(
            f"judge: unknown key(s) {', '.join(sorted(unknown))} for a {kind} judge; allowed: {', '.join(sorted(allowed))}"
        )
    if not isinstance(spec.get(key), str) or not spec[key].strip():
        raise JudgeSpecError(f"judge: a {kind} judge needs '{key}'")
    if kind == "function" and ":" not in spec["function"]:
        raise JudgeSpecError("judge: function must look like 'module.path:function_name'")
    if kind == "pairwise" and "template" in spec:
        missing = [p for p in ("{prompt}", "{first}", "{second}") if p not in str(spec["template"])]
        if missing:
            raise JudgeSpecError(f"judge: the template must contain {', '.join(missing)}")
    if kind == "reward_model" and not isinstance(spec.get("margin", 0.0), int | float):
        raise JudgeSpecError("judge: margin must be a number (reward differences within it are ties)")


def describe(spec: dict) -> str:
    """A short human name for a judge, e.g. ``reward model rm-hh``."""
    kind = spec.get("type")
    if kind == "reward_model":
        return f"reward model {spec.get('model')}"
    if kind == "pairwise":
        return f"AI judge {spec.get('model')} (pairwise, both orders)"
    return f"function {spec.get('function')}"


def swap_debiased(ask: Callable[[list[str], list[str], list[str]], list[float]], prompts, a, b) -> list[Judgement]:
    """Ask a pairwise judge in both orders and average, so a position preference cancels.

    ``ask(prompts, first, second)`` returns "first is better" scores (> 0: the first reply). With
    A first the judge says ``d + c`` (``d``: its preference for A, ``c``: for the first position);
    with B first it says ``-d + c``; half the difference is ``d``.
    """
    a_first = ask(list(prompts), list(a), list(b))
    b_first = ask(list(prompts), list(b), list(a))
    out = []
    for one, two in zip(a_first, b_first, strict=True):
        preference = (float(one) - float(two)) / 2
        verdict = "a" if preference > 0 else "b" if preference < 0 else "tie"
        out.append(Judgement(verdict, preference, (float(one), float(two))))
    return out


class RewardModelJudge:
    """A trained reward model scores each reply on its own; the higher score wins."""

    def __init__(self, name: str, registry: ModelRegistry, margin: float = 0.0, device=None) -> None:
        from rlhf.scoring import RewardScorer

        self.scorer = RewardScorer.load(registry.resolve(name), device=str(device) if device else None)
        self.margin = float(margin)

    def scores(self, prompts: Sequence[str], replies: Sequence[str]) -> list[float]:
        return self.scorer.score_batch(list(zip(prompts, replies, strict=True)))

    def judge(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[Judgement]:
        sa, sb = self.scores(prompts, a), self.scores(prompts, b)
        out = []
        for x, y in zip(sa, sb, strict=True):
            diff = x - y
            verdict = "a" if diff > self.margin else "b" if diff < -self.margin else "tie"
            out.append(Judgement(verdict, diff))
        return out


class PairwiseLMJudge:
    """An instruction-tuned LM asked which of two replies is better, in both orders (RLAIF's judge)."""

    def __init__(self, name: str, registry: ModelRegistry, template: str | None = None, device=None, batch_size: int = 8) -> None:
        import torch

        from rlhf.loading import load_causal_lm

        self.model, self.tokenizer = load_causal_lm(name, registry, device=device, dtype=torch.float32)
        self.template = template or DEFAULT_PAIRWISE_TEMPLATE
        self.batch_size = batch_size
        self.first = self._first_tokens(["A", " A"])
        self.second = self._first_tokens(["B", " B"])

    def _first_tokens(self, words: list[str]) -> list[int]:
        return sorted({self.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words})

    def _text(self, prompt: str, first: str, second: str) -> str:
        content = self.template.format(prompt=prompt, first=first, second=second)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
        return content + "\nAnswer:"

    def ask(self, prompts: list[str], first: list[str], second: list[str]) -> list[float]:
        """log P("A") - log P("B") as the judge's next token: > 0 when it prefers the reply shown first."""
        import torch

        from rlhf.generation import context_length

        texts = [self._text(p, f, s) for p, f, s in zip(prompts, first, second, strict=True)]
        special = not getattr(self.tokenizer, "chat_template", None)
        limit = context_length(self.model, self.tokenizer)
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                ids = self.tokenizer(texts[start : start + self.batch_size], add_special_tokens=special)["input_ids"]
                # Too long for the judge's context: keep the end, where the replies and the question are.
                ids = [x[-limit:] if limit else x for x in ids]
                width = max(len(x) for x in ids)
                pad = self.tokenizer.pad_token_id
                input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=self.model.device)
                mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=self.model.device)
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, -1].float().log_softmax(-1)
                scores += (logits[:, self.first].logsumexp(-1) - logits[:, self.second].logsumexp(-1)).cpu().tolist()
        return scores

    def judge(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[Judgement]:
        return swap_debiased(self.ask, prompts, a, b)


class FunctionJudge:
    """``module:function``: f(prompt, reply) -> score (pointwise) or f(prompt, first, second) -> preference (pairwise)."""

    def __init__(self, target: str) -> None:
        module, _, name = target.partition(":")
        try:
            self.fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise JudgeSpecError(f"cannot import judge function {target!r}: {exc}") from exc
        try:
            arity = len(inspect.signature(self.fn).parameters)
        except (TypeError, ValueError):
            arity = 2
        if arity not in (2, 3):
            raise JudgeSpecError(f"judge function {target!r} takes {arity} arguments; give (prompt, reply) or (prompt, first, second)")
        self.pairwise = arity == 3

    def ask(self, prompts: list[str], first: list[str], second: list[str]) -> list[float]:
        return [float(self.fn(p, f, s)) for p, f, s in zip(prompts, first, second, strict=True)]

    def judge(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str]) -> list[Judgement]:
        if self.pairwise:
            return swap_debiased(self.ask, prompts, a, b)
        out = []
        for p, x, y in zip(prompts, a, b, strict=True):
            diff = float(self.fn(p, x)) - float(self.fn(p, y))
            out.append(Judgement("a" if diff > 0 else "b" if diff < 0 else "tie", diff))
        return out


def build_judge(spec: dict, registry: ModelRegistry | None = None, device=None):
    """Load the judge a config names (checked first)."""
    check_judge(spec)
    registry = registry or ModelRegistry()
    kind = spec["type"]
    if kind == "reward_model":
        return RewardModelJudge(spec["model"], registry, float(spec.get("margin", 0.0)), device)
    if kind == "pairwise":
        return PairwiseLMJudge(spec["model"], registry, spec.get("template"), device)
    return FunctionJudge(spec["function"])
