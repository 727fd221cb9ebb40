"""Generation throughput: a naive loop (one ``model.generate`` per prompt) against the engine.

    .venv/bin/python -m bench.generation [--repeats 3] [--batch-size 16]

SmolLM2-135M-Instruct, the same 32 prompts (first human turns of HH-RLHF), 64 new tokens,
greedy, both stopping at the end of the turn. Tokens/s counts the reply tokens each approach
actually produced (padding after a row has finished does not count). Runs alternate and the
median of each is reported, because another process may share the CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.common import first_human_turn, hh_pairs, median, write_result
from rlhf.generation import GenerationEngine, SamplingParams
from rlhf.loading import load_causal_lm

NEW_TOKENS = 64


def naive_loop(engine: GenerationEngine, prompts: list[str]) -> tuple[int, float]:
    """The baseline: each prompt on its own through ``model.generate``."""
    model, tok = engine.model, engine.tokenizer
    tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            batch = tok(text, return_tensors="pt", add_special_tokens=False).to(engine.device)
            out = model.generate(
                **batch, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=engine.stop_ids, pad_token_id=tok.pad_token_id
            )
            new = out[0, batch["input_ids"].shape[1] :].tolist()
            stops = [i for i, t in enumerate(new) if t in engine.stop_ids]
            tokens += stops[0] + 1 if stops else len(new)
    return tokens, time.perf_counter() - start


def engine_run(engine: GenerationEngine, prompts: list[str], batch_size: int) -> tuple[int, float]:
    start = time.perf_counter()
    results = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=NEW_TOKENS), batch_size=batch_size)
    return sum(g.new_tokens for g in results), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=32)
    args = parser.parse_args()

    prompts = [first_human_turn(p["chosen"]) for p in hh_pairs(args.prompts)]
    model, tokenizer = load_causal_lm("smollm2-135m-instruct")
    engine = GenerationEngine(model, tokenizer)
    engine_run(engine, prompts[:2], 2)  # warm-up: first-call allocations are not what we measure

    naive_rates, engine_rates, naive_tokens, engine_tokens = [], [], [], []
    for r in range(args.repeats):
        n_tok, n_sec = naive_loop(engine, prompts)
        e_tok, e_sec = engine_run(engine, prompts, args.batch_size)
        naive_rates.append(n_tok / n_sec)
        engine_rates.append(e_tok / e_sec)
        naive_tokens.append(n_tok)
        engine_tokens.append(e_tok)
        print(f"repeat {r + 1}: naive {n_tok} tokens in {n_sec:.1f} s, engine {e_tok} tokens in {e_sec:.1f} s")

    naive, fast = median(naive_rates), median(engine_rates)
    ratio = fast / naive
    print()
    print(f"{'approach':<34}{'tokens/s':>10}")
    print(f"{'naive loop (1 generate per prompt)':<34}{naive:>10.1f}")
    print(f"{f'engine (batch {args.batch_size})':<34}{fast:>10.1f}")
    print(f"ratio engine / naive: {ratio:.2f}x (goal: at least 4x)")
    path = write_result(
        "generation",
        {
            "command": "python -m bench.generation",
            "model": "smollm2-135m-instruct",
            "prompts": len(prompts),
            "max_new_tokens": NEW_TOKENS,
            "decoding": "greedy",
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "naive_tokens_per_s": round(naive, 1),
            "engine_tokens_per_s": round(fast, 1),
            "ratio": round(ratio, 2),
            "goal_ratio": 4.0,
            "tokens_generated": {"naive": naive_tokens, "engine": engine_tokens},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
