"""The generation engine: batching must not change answers, stops at end of turn, streams."""

from __future__ import annotations

import pytest
import torch

from rlhf.device import pick_device
from rlhf.generation import GenerationEngine, SamplingParams

PROMPTS = [
    "hi",
    "The capital of France is Paris. What is the capital of Italy? Answer in one word, please.",
    [{"role": "user", "content": "Write a haiku about the sea."}],
    "A reward model scores replies; PPO tunes the policy against it with a KL penalty. Explain why the KL matters.",
    "2 + 2 =",
]


@pytest.fixture
def engine(tiny_lm) -> GenerationEngine:
    model, tokenizer = tiny_lm
    return GenerationEngine(model, tokenizer, batch_size=8)


def _greedy_tokens(engine: GenerationEngine, prompt, n: int) -> list[int]:
    """Reference decoding: one prompt, no padding, a plain argmax loop without the engine."""
    ids = engine._encode([engine.format(prompt)])["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(engine.model(input_ids=ids).logits[0, -1].argmax())
            out.append(nxt)
            if nxt in engine.stop_ids:
                break
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


def test_batched_greedy_equals_one_at_a_time(engine: GenerationEngine) -> None:
    params = SamplingParams(temperature=0, max_new_tokens=12)
    lengths = {len(engine._encode([engine.format(p)])["input_ids"][0]) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS), "prompts must differ in length to exercise padding"
    batched = engine.generate(PROMPTS, params, batch_size=8)
    singles = [engine.generate([p], params, batch_size=1)[0] for p in PROMPTS]
    for prompt, b, s in zip(PROMPTS, batched, singles, strict=True):
        if b.text != s.text:
            # Allowed only where float rounding flipped a near-tie: check the logits gap.
            ref = _greedy_tokens(engine, prompt, params.max_new_tokens)
            pytest.fail(f"batched and single greedy differ for {prompt!r}: {b.text!r} vs {s.text!r} (reference tokens {ref})")
    # And both match a hand-written argmax loop with no padding and no KV cache.
    for prompt, s in zip(PROMPTS, singles, strict=True):
        ref = _greedy_tokens(engine, prompt, params.max_new_tokens)
        assert engine._decode(ref, 0).text == s.text


def test_results_keep_prompt_order_and_counts(engine: GenerationEngine) -> None:
    params = SamplingParams(temperature=0, max_new_tokens=5)
    both = engine.generate([PROMPTS[0], PROMPTS[1]], params)
    swapped = engine.generate([PROMPTS[1], PROMPTS[0]], params)
    assert [g.text for g in both] == [g.text for g in reversed(swapped)]
    assert all(g.new_tokens <= 5 for g in both)
    assert both[1].prompt_tokens > both[0].prompt_tokens


def test_progress_is_reported_per_batch(engine: GenerationEngine) -> None:
    seen = []
    engine.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=2), batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_decode_stops_at_end_of_turn(engine: GenerationEngine) -> None:
    tok = engine.tokenizer
    words = tok("Paris is", add_special_tokens=False)["input_ids"]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    gen = engine._decode(words + [end] + words, prompt_tokens=3)
    assert gen.text == "Paris is" and gen.finished and gen.new_tokens == len(words) + 1
    cut = engine._decode(words, prompt_tokens=3)
    assert not cut.finished and cut.new_tokens == len(words)
    assert end in engine.stop_ids and tok.eos_token_id in engine.stop_ids


def test_generation_ends_when_the_model_ends_its_turn(engine: GenerationEngine) -> None:
    # Make <|im_end|> the model's favourite token after the prompt: bias its output embedding.
    model = engine.model
    end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    saved = model.lm_head.weight.data.clone()
    try:
        model.lm_head.weight.data[end] = model.model.norm.weight.data.sign() * 50
        [gen] = engine.generate(["hi"], SamplingParams(temperature=0, max_new_tokens=20))
        assert gen.finished and gen.new_tokens < 20
    finally:
        model.lm_head.weight.data.copy_(saved)


def test_seeded_sampling_is_repeatable(engine: GenerationEngine) -> None:
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=7)
    first = [g.text for g in engine.generate(PROMPTS, params)]
    again = [g.text for g in engine.generate(PROMPTS, params)]
    other = [g.text for g in engine.generate(PROMPTS, SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=8))]
    assert first == again
    assert first != other


def test_stream_yields_growing_text_ending_in_the_greedy_reply(engine: GenerationEngine) -> None:
    params = SamplingParams(temperature=0, max_new_tokens=10)
    pieces = list(engine.stream(PROMPTS[1], params))
    assert len(pieces) >= 2
    assert all(b.startswith(a) for a, b in zip(pieces, pieces[1:], strict=False))
    assert pieces[-1] == engine.generate([PROMPTS[1]], params)[0].text


def test_abandoned_stream_releases_the_engine(engine: GenerationEngine) -> None:
    stream = engine.stream("hi", SamplingParams(temperature=0, max_new_tokens=200))
    next(stream)
    stream.close()  # what Gradio does when the user presses Stop
    assert not engine._lock.locked()
    assert engine.generate(["hi"], SamplingParams(temperature=0, max_new_tokens=2))[0].new_tokens == 2


def test_format_accepts_parts_and_system_prompt(engine: GenerationEngine) -> None:
    text = engine.format(
        [{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": " world"}]}], system="Be brief."
    )
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n"


def test_base_model_without_template_gets_a_transcript(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    template, tokenizer.chat_template = tokenizer.chat_template, None
    try:
        text = GenerationEngine(model, tokenizer).format("hello")
    finally:
        tokenizer.chat_template = template
    assert text == "User: hello\n\nAssistant:"


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"max_new_tokens": 0}])
def test_bad_sampling_settings_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)


def test_device_selection() -> None:
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            pick_device("cuda")
