"""L1 prompting: templates, in-context demonstrations and chain-of-thought, rendered as chat turns.

    template = PromptTemplate(system="You are terse.", template="Q: {input}", demos="nearest", k=3, cot="few_shot")
    picked = pick_demonstrations(template, pool, record, encoder)        # hand / random (seeded) / nearest
    messages = render(template, record, picked)                          # system, demo turns, the question

A pool is any list of labelled records (``input`` or ``instruction`` / ``prompt`` / ``question``,
an answer in ``output`` / ``response`` / ``answer``, optionally a ``rationale``); templates use
``{placeholders}`` filled from the record's fields, ``{input}`` always being the question.
Demonstrations become earlier user/assistant turns. Chain-of-thought: ``zero_shot`` appends the
trigger ("Let's think step by step.") to the question; ``few_shot`` shows each demonstration's
worked rationale before its answer ("... So the answer is: X").

:func:`evaluate` runs a template over a labelled dataset: exact match, contains, or a reward
model's score, one row per example.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

INPUT_FIELDS = ("input", "instruction", "prompt", "question")
ANSWER_FIELDS = ("output", "response", "answer", "completion", "chosen")
RATIONALE_FIELDS = ("rationale", "explanation", "reasoning")
DEMO_MODES = ("none", "hand", "random", "nearest")
COT_MODES = ("none", "zero_shot", "few_shot")
ANSWER_MARK = "So the answer is:"


class TemplateError(ValueError):
    """A template or pool cannot be used; the message says what to fix."""


@dataclass
class PromptTemplate:
    name: str = "untitled"
    system: str = ""
    template: str = "{input}"
    demos: str = "none"  # none | hand | random | nearest
    k: int = 3
    hand_picked: list[int] = field(default_factory=list)  # pool indices for demos = "hand"
    seed: int = 0
    cot: str = "none"  # none | zero_shot | few_shot
    cot_trigger: str = "Let's think step by step."

    def check(self) -> None:
        if self.demos not in DEMO_MODES:
            raise TemplateError(f"demonstrations must be one of {', '.join(DEMO_MODES)}, got {self.demos!r}")
        if self.cot not in COT_MODES:
            raise TemplateError(f"chain-of-thought must be one of {', '.join(COT_MODES)}, got {self.cot!r}")
        if "{input}" not in self.template:
            raise TemplateError("the template must contain {input}, where the question goes")
        if self.k < 0:
            raise TemplateError("k must be >= 0")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PromptTemplate:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def field_of(record: dict, names: Sequence[str]) -> str | None:
    for name in names:
        value = record.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def input_of(record: dict) -> str:
    found = field_of(record, INPUT_FIELDS)
    if found is None:
        raise TemplateError(f"a record needs one of {', '.join(INPUT_FIELDS)} (found: {', '.join(record) or 'nothing'})")
    extra = field_of(record, ("context",)) if "instruction" in record else None
    return f"{found}\n\n{extra}" if extra else found


def fill(template: str, record: dict) -> str:
    """``template`` with {placeholders} from the record; {input} is the question. Unknown names are named."""
    values = {k: str(v) for k, v in record.items() if v is not None}
    values["input"] = input_of(record)
    names = [n for _, n, _, _ in string.Formatter().parse(template) if n]
    missing = [n for n in names if n not in values]
    if missing:
        raise TemplateError(f"the template uses {{{missing[0]}}} but the record has no such field (fields: {', '.join(sorted(values))})")
    return template.format(**values)


def pick_demonstrations(template: PromptTemplate, pool: list[dict], record: dict, encoder=None) -> list[dict]:
    """The k demonstrations for ``record``: by hand, at random (seeded, repeatable) or the nearest under ``encoder``."""
    template.check()
    if template.demos == "none" or template.k == 0 or not pool:
        return []
    question = input_of(record)
    candidates = [i for i, r in enumerate(pool) if input_of(r) != question]  # never show the question itself
    if template.demos == "hand":
        bad = [i for i in template.hand_picked if not 0 <= i < len(pool)]
        if bad:
            raise TemplateError(f"hand-picked demonstration {bad[0]} is not in the pool (0 to {len(pool) - 1})")
        return [pool[i] for i in template.hand_picked]
    k = min(template.k, len(candidates))
    if template.demos == "random":
        return [pool[i] for i in random.Random(template.seed).sample(candidates, k)]
    if encoder is None:
        raise TemplateError("nearest-neighbour demonstrations need an encoder (MiniLM)")
    scores = encoder.similarities(question, [input_of(pool[i]) for i in candidates])
    ranked = sorted(range(len(candidates)), key=lambda j: (-scores[j], candidates[j]))
    return [pool[candidates[j]] for j in ranked[:k]]


def _demo_answer(demo: dict, cot: str) -> str:
    answer = field_of(demo, ANSWER_FIELDS)
    if answer is None:
        raise TemplateError(f"a demonstration needs an answer in one of {', '.join(ANSWER_FIELDS)}")
    if cot != "few_shot":
        return answer
    rationale = field_of(demo, RATIONALE_FIELDS)
    if rationale is None:
        raise TemplateError(f"few-shot chain-of-thought needs a worked rationale for each demonstration ({', '.join(RATIONALE_FIELDS)})")
    return f"{rationale}\n{ANSWER_MARK} {answer}"


def render(template: PromptTemplate, record: dict, demos: list[dict]) -> list[dict]:
    """The chat messages: system, one user/assistant pair per demonstration, then the question."""
    template.check()
    messages = [{"role": "system", "content": template.system}] if template.system.strip() else []
    for demo in demos:
        messages.append({"role": "user", "content": fill(template.template, demo)})
        messages.append({"role": "assistant", "content": _demo_answer(demo, template.cot)})
    question = fill(template.template, record)
    if template.cot == "zero_shot":
        question = f"{question}\n\n{template.cot_trigger}"
    messages.append({"role": "user", "content": question})
    return messages


def final_answer(text: str) -> str:
    """The answer part of a reply: after "answer is" when the reply reasons first, else the whole reply."""
    found = re.search(r"answer is:?\s*(.+)", text, re.I | re.S)
    return (found.group(1) if found else text).strip()


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().strip().strip(".!?\"'")).strip()


def score_output(metric: str, output: str, expected: str | None) -> float:
    if expected is None:
        raise TemplateError(f"the {metric} metric needs an expected answer ({', '.join(ANSWER_FIELDS)}) in every record")
    answer = final_answer(output)
    if metric == "exact":
        return float(_normalise(answer) == _normalise(expected))
    if metric == "contains":
        return float(_normalise(expected) in _normalise(output))
    raise TemplateError(f"unknown metric {metric!r}; use exact, contains or reward")


@dataclass
class EvalRow:
    input: str
    expected: str | None
    output: str
    score: float


def evaluate(
    template: PromptTemplate,
    dataset: list[dict],
    pool: list[dict],
    generate: Callable[[list[list[dict]]], list[str]],
    metric: str,
    encoder=None,
    reward: Callable[[list[str], list[str]], list[float]] | None = None,
) -> tuple[float, list[EvalRow]]:
    """Run the template over every record; (mean score, rows). ``generate`` takes message lists."""
    conversations = [render(template, r, pick_demonstrations(template, pool, r, encoder)) for r in dataset]
    outputs = generate(conversations)
    inputs = [input_of(r) for r in dataset]
    expected = [field_of(r, ANSWER_FIELDS) for r in dataset]
    if metric == "reward":
        if reward is None:
            raise TemplateError("the reward metric needs a reward model")
        scores = reward(inputs, outputs)
    else:
        scores = [score_output(metric, o, e) for o, e in zip(outputs, expected, strict=True)]
    rows = [EvalRow(i, e, o, s) for i, e, o, s in zip(inputs, expected, outputs, scores, strict=True)]
    return (sum(scores) / len(scores) if scores else 0.0), rows
