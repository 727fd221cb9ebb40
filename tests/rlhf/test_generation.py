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


# -- the model's context is never exceeded ---------------------------------------------------------
@pytest.fixture(scope="module")
def short_context() -> GenerationEngine:
    """A tiny GPT-2 with 64 positions: learned position embeddings fail outright past the context."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.tiny import make_tokenizer

    tokenizer = make_tokenizer()
    tokenizer.padding_side = "left"
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        initializer_range=0.3,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return GenerationEngine(GPT2LMHeadModel(config).eval(), tokenizer, batch_size=8)


LONG = "The capital of France is Paris. " * 40 + "What is the capital of Italy?"


def test_a_long_prompt_keeps_its_end_and_says_how_much_was_cut(short_context: GenerationEngine) -> None:
    engine = short_context
    params = SamplingParams(temperature=0, max_new_tokens=8)
    [full] = engine._token_ids([engine.format(LONG)])
    assert len(full) > 64
    with pytest.raises((IndexError, RuntimeError)):  # what the engine used to do: feed it all
        engine.model.generate(**engine._pad([full]), generation_config=engine._generation_config(params))
    [gen] = engine.generate([LONG], params)
    assert engine.context == 64 and gen.prompt_tokens == 64 - 8 and gen.truncated_tokens == len(full) - 56
    assert gen.prompt_tokens + gen.new_tokens <= 64
    assert engine.prompt_cut(LONG, params) == gen.truncated_tokens and engine.prompt_cut("hi", params) == 0
    # The model saw the end of the prompt, which holds the question.
    tail = full[-56:]
    assert engine.tokenizer.decode(tail).endswith("What is the capital of Italy?<|im_end|>\n<|im_start|>assistant\n")
    with torch.no_grad():
        out = engine.model.generate(**engine._pad([tail]), generation_config=engine._generation_config(params))
    assert engine._decode(out[0, 56:].tolist(), 56).text == gen.text
    # Short prompts in the same call are untouched.
    short = engine.generate(["hi", LONG], params)
    assert short[0].truncated_tokens == 0 and short[1].truncated_tokens == gen.truncated_tokens


def test_streaming_and_rollouts_fit_the_context_too(short_context: GenerationEngine) -> None:
    engine = short_context
    params = SamplingParams(temperature=0, max_new_tokens=200)  # more than the whole context
    info: dict = {}
    pieces = list(engine.stream(LONG, params, info=info))
    assert info["truncated_tokens"] > 0 and info["prompt_tokens"] == 32  # half the context stays the prompt's
    [gen] = engine.generate([LONG], params)
    assert gen.prompt_tokens == 32 and gen.prompt_tokens + gen.new_tokens <= 64
    assert (pieces[-1] if pieces else "") == gen.text
    [rollout] = engine.rollout([LONG], SamplingParams(temperature=1.0, max_new_tokens=8, seed=0))
    assert len(rollout.prompt_ids) == 56 and rollout.truncated_tokens > 0


def test_batches_are_bounded_in_tokens(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    engine = GenerationEngine(model, tokenizer, batch_size=8, max_batch_tokens=600)
    shapes = []
    original = model.generate

    def recording(**kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return original(**kwargs)

    model.generate = recording
    try:
        huge = "Waves fold into foam. " * 40  # ~ 370 tokens (the context is 512): alone in its batch
        results = engine.generate([huge, *PROMPTS], SamplingParams(temperature=0, max_new_tokens=4))
    finally:
        del model.generate
    assert len(results) == 6 and all(r.truncated_tokens == 0 for r in results)
    assert shapes[0][0] == 1 and shapes[0][1] > 300  # the long prompt was not padded into the short ones' rows
    assert all(rows * (width + 4) <= 600 for rows, width in shapes[1:]) and sum(r for r, _ in shapes) == 6
