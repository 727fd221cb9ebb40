"""Prompt templates: demonstrations picked by hand, at random (repeatably) and by nearest neighbour; CoT rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.prompting import PromptTemplate, TemplateError, evaluate, final_answer, pick_demonstrations, render, score_output

POOL = [
    {"input": "What is 2 + 2?", "output": "4", "rationale": "Two plus two is four."},
    {"input": "What is 3 + 5?", "output": "8", "rationale": "Three plus five is eight."},
    {"input": "Name the capital of France.", "output": "Paris", "rationale": "France's capital city is Paris."},
    {"input": "Name the capital of Italy.", "output": "Rome", "rationale": "Italy's capital city is Rome."},
    {"input": "What colour is the sky?", "output": "Blue", "rationale": "Scattered sunlight makes it blue."},
]


class WordOverlap:
    """A stand-in encoder whose similarity is word overlap: the nearest neighbour is known by hand."""

    def similarities(self, query: str, texts: list[str]) -> list[float]:
        q = set(query.lower().replace("?", "").split())
        return [len(q & set(t.lower().replace("?", "").split())) / len(q | set(t.lower().split())) for t in texts]


def test_random_picking_is_seeded_and_repeatable() -> None:
    t = PromptTemplate(demos="random", k=2, seed=7)
    record = {"input": "What is 9 + 1?"}
    first = pick_demonstrations(t, POOL, record)
    assert first == pick_demonstrations(t, POOL, record) and len(first) == 2
    others = {tuple(d["input"] for d in pick_demonstrations(PromptTemplate(demos="random", k=2, seed=s), POOL, record)) for s in range(10)}
    assert len(others) > 1  # the seed matters
    asked = {"input": "What is 2 + 2?"}
    for s in range(10):
        assert all(d["input"] != asked["input"] for d in pick_demonstrations(PromptTemplate(demos="random", k=4, seed=s), POOL, asked))


def test_nearest_neighbours_return_the_nearest() -> None:
    t = PromptTemplate(demos="nearest", k=2)
    picked = pick_demonstrations(t, POOL, {"input": "Name the capital of Spain."}, WordOverlap())
    assert [d["output"] for d in picked] == ["Paris", "Rome"]
    with pytest.raises(TemplateError, match="need an encoder"):
        pick_demonstrations(t, POOL, {"input": "x"})


def test_nearest_neighbours_with_minilm(studio_home: Path, tiny_encoder_dir: Path) -> None:
    from rlhf.embedding import SentenceEncoder
    from rlhf.registry import ModelRegistry

    registry = ModelRegistry()
    registry.add(tiny_encoder_dir, name="tiny-enc")
    encoder = SentenceEncoder.load("tiny-enc", registry, device="cpu")
    query = "What is 3 + 5 ?"
    sims = encoder.similarities(query, [d["input"] for d in POOL])
    expected = max(range(len(POOL)), key=lambda i: sims[i])
    [picked] = pick_demonstrations(PromptTemplate(demos="nearest", k=1), POOL, {"input": query}, encoder)
    assert picked is POOL[expected]
    assert encoder.similarities(query, [query])[0] == pytest.approx(1.0, abs=1e-5)


def test_hand_picked_and_rendering_with_chain_of_thought() -> None:
    t = PromptTemplate(system="Answer briefly.", template="Q: {input}", demos="hand", hand_picked=[2, 0], cot="few_shot")
    demos = pick_demonstrations(t, POOL, {"input": "Name the capital of Spain."})
    messages = render(t, {"input": "Name the capital of Spain."}, demos)
    assert messages == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Q: Name the capital of France."},
        {"role": "assistant", "content": "France's capital city is Paris.\nSo the answer is: Paris"},
        {"role": "user", "content": "Q: What is 2 + 2?"},
        {"role": "assistant", "content": "Two plus two is four.\nSo the answer is: 4"},
        {"role": "user", "content": "Q: Name the capital of Spain."},
    ]
    zero = render(PromptTemplate(template="{input}", cot="zero_shot"), {"input": "Why is the sky blue?"}, [])
    assert zero == [{"role": "user", "content": "Why is the sky blue?\n\nLet's think step by step."}]
    plain = render(PromptTemplate(template="Topic {category}: {input}"), {"input": "Hi", "category": "greeting"}, [])
    assert plain[-1]["content"] == "Topic greeting: Hi"
    with pytest.raises(TemplateError, match="uses {topic}"):
        render(PromptTemplate(template="{topic}: {input}"), {"input": "Hi"}, [])
    with pytest.raises(TemplateError, match="worked rationale"):
        render(PromptTemplate(cot="few_shot"), {"input": "x"}, [{"input": "a", "output": "b"}])
    with pytest.raises(TemplateError, match="not in the pool"):
        pick_demonstrations(PromptTemplate(demos="hand", hand_picked=[9]), POOL, {"input": "x"})
    with pytest.raises(TemplateError, match="must contain {input}"):
        PromptTemplate(template="no slot").check()


def test_metrics_and_evaluate() -> None:
    assert final_answer("Two plus two is four.\nSo the answer is: 4.") == "4."
    assert score_output("exact", "So the answer is: Paris.", "paris") == 1.0
    assert score_output("exact", "Paris, of course", "Paris") == 0.0
    assert score_output("contains", "I think it is Paris, of course", "Paris") == 1.0
    seen = []

    def generate(conversations):
        seen.extend(conversations)
        return ["So the answer is: " + ("4" if "2 + 2" in c[-1]["content"] else "Lyon") for c in conversations]

    mean, rows = evaluate(PromptTemplate(), POOL[:3], [], generate, "exact")
    assert mean == pytest.approx(1 / 3) and [r.score for r in rows] == [1.0, 0.0, 0.0] and len(seen) == 3
    mean, _ = evaluate(PromptTemplate(), POOL[:2], [], generate, "reward", reward=lambda i, o: [0.5, 1.5])
    assert mean == 1.0
