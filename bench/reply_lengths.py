"""How long the default policy's replies are at PPO's sampling settings, and which ones never end.

    .venv/bin/python -m bench.reply_lengths [--prompts 48] [--cap 512] [--threads 1]

The PPO recipe (recipes/ppo-smollm2-reward-model.yaml) samples its rollouts from SmolLM2-135M-
Instruct at its temperature and top_p (1.0 / 1.0: PPO's log-probs must be those of the
sampling distribution) and stops them at ``max_new_tokens``. This samples one reply per HH-RLHF
prompt (../shared/data, the whole conversation before the last reply, as chat turns) the way a
PPO step does (``PPOTrainer.rollout``: ``GenerationEngine.rollout``, one batch of
``--batch-size`` prompts at a time), with a cap of ``--cap`` tokens, and reports:

1. Reply length in tokens (the end-of-turn token counted, as PPO's ``reply_length`` does):
   p50 / p75 / p90, nearest rank; a percentile that falls among the replies still going at the
   cap is reported as over it (null).
2. For each cap of 48 / 96 / 128 / 192 / 256 / 384 / 512: the share of replies that end within it,
   and of those cut there, the share that are runaway loops: the cut reply's second half has
   at most ``--threshold`` of its 4-token runs distinct (``rlhf.ppo.is_runaway``, the test that
   decides who gets PPO's ``missing_eos_penalty``) against merely long. Also the decode steps a
   rollout batch takes at that cap (the batch runs until its longest reply ends or hits the
   cap), relative to 48: what the cap costs.
3. The same lengths for the single-turn prompts (a question on its own, as most PPO prompt
   files give) and the multi-turn ones (a conversation to continue) apart: they differ a lot.
4. The distinct 4-gram share of every reply still going at the cap, and of the finished
   replies, so the threshold can be read against both.

Writes bench/results/reply_lengths.json. About 10 minutes on one thread.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import yaml

from bench.common import ROOT, SHARED_DATA, write_result
from rlhf.generation import GenerationEngine, SamplingParams
from rlhf.loading import load_causal_lm
from rlhf.ppo import RUNAWAY_THRESHOLD, PPORunConfig, distinct_share, is_runaway
from rlhf.preference_data import read_pairs, transcript_messages
from rlhf.registry import ModelRegistry

CAPS = (48, 96, 128, 192, 256, 384, 512)
RECIPE = ROOT / "recipes" / "ppo-smollm2-reward-model.yaml"


def percentile(lengths: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None when it falls among the replies cut at the cap (inf)."""
    ranked = sorted(lengths)
    value = ranked[max(0, math.ceil(p / 100 * len(ranked)) - 1)]
    return None if math.isinf(value) else value


def share(count: int, total: int) -> float:
    return round(count / total, 3) if total else 0.0


def length_summary(lengths: list[float], caps: list[int]) -> dict:
    """Percentiles and the share finished within each cap, for one group of replies."""
    return {
        "prompts": len(lengths),
        **{f"p{p}": percentile(lengths, p) for p in (50, 75, 90)},
        "finished": {str(c): share(sum(length <= c for length in lengths), len(lengths)) for c in caps},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per rollout batch (the recipe's batch_size)")
    parser.add_argument("--cap", type=int, default=512, help="max_new_tokens of the sampled replies")
    parser.add_argument("--threshold", type=float, default=RUNAWAY_THRESHOLD, help="runaway: at most this share of distinct 4-grams")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    recipe = yaml.safe_load(RECIPE.read_text())
    policy, temperature, top_p = recipe["policy"], recipe["temperature"], recipe["top_p"]
    pairs = read_pairs(SHARED_DATA / "hh-rlhf-harmless-dev.jsonl.gz", skip_invalid=True)[: args.prompts]
    prompts = [transcript_messages(p.prompt) for p in pairs]
    model, tokenizer = load_causal_lm(policy, ModelRegistry(), device="cpu", dtype=torch.float32)
    engine = GenerationEngine(model, tokenizer, batch_size=args.batch_size)

    rollouts, batches = [], []
    start = time.perf_counter()
    for i in range(0, len(prompts), args.batch_size):
        params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=args.cap, seed=args.seed + i)
        batch = engine.rollout(prompts[i : i + args.batch_size], params)
        rollouts += batch
        batches.append([len(r.response_ids) if r.finished else math.inf for r in batch])
        print(f"  {len(rollouts)}/{len(prompts)} replies, {time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - start

    n = len(rollouts)
    lengths = [len(r.response_ids) if r.finished else math.inf for r in rollouts]
    tokens = sum(len(r.response_ids) for r in rollouts)
    caps_run = [c for c in CAPS if c <= args.cap]
    caps = {}
    for cap in caps_run:
        cut = [r for r, length in zip(rollouts, lengths, strict=True) if length > cap]
        loops = [r for r in cut if is_runaway(r.response_ids[:cap], args.threshold)]
        steps = sum(min(cap, max(b)) for b in batches) / len(batches)
        caps[str(cap)] = {
            "finished": share(n - len(cut), n),
            "cut": share(len(cut), n),
            "runaway": share(len(loops), n),
            "runaway_of_cut": share(len(loops), len(cut)),
            "decode_steps_per_batch": round(steps, 1),
        }
    for c in caps.values():
        c["cost_vs_48"] = round(c["decode_steps_per_batch"] / caps["48"]["decode_steps_per_batch"], 2) if "48" in caps else None
    turns = [len(m) for m in prompts]
    by_prompt = {
        "single_turn": length_summary([x for x, t in zip(lengths, turns, strict=True) if t == 1], caps_run),
        "multi_turn": length_summary([x for x, t in zip(lengths, turns, strict=True) if t > 1], caps_run),
    }
    capped = [r for r in rollouts if not r.finished]
    finished = [r for r in rollouts if r.finished]
    long_finished = [distinct_share(r.response_ids[:-1]) for r in finished if len(r.response_ids) > 64]
    default_cap = PPORunConfig.__dataclass_fields__["max_new_tokens"].default
    figures = {
        "policy": policy,
        "prompts": n,
        "temperature": temperature,
        "top_p": top_p,
        "cap": args.cap,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "runaway_threshold": args.threshold,
        "runaway_definition": f"cut at the cap, and at most {args.threshold:g} of the 4-token runs in its second half distinct",
        "seconds": round(seconds, 1),
        "tokens": tokens,
        "tokens_per_second": round(tokens / seconds, 1),
        "percentiles": {f"p{p}": percentile(lengths, p) for p in (50, 75, 90)},
        "mean_finished_length": round(sum(len(r.response_ids) for r in finished) / len(finished), 1) if finished else None,
        "longer_than_48": share(sum(length > 48 for length in lengths), n),
        "caps": caps,
        "by_prompt": by_prompt,
        "ppo_default_cap": default_cap,
        "distinct_share_capped": sorted(round(distinct_share(r.response_ids), 2) for r in capped),
        "distinct_share_finished_over_64": {
            "replies": len(long_finished),
            "min": round(min(long_finished), 3) if long_finished else None,
            "median": round(sorted(long_finished)[len(long_finished) // 2], 3) if long_finished else None,
        },
        # every reply: its length (null: still going at the cap) and, at each cap that cut it,
        # the distinct 4-gram share of the cut reply's second half (another threshold can be read off)
        "replies": [
            {
                "turns": n_turns,
                "length": None if math.isinf(length) else length,
                "distinct_at_cut": {str(c): round(distinct_share(r.response_ids[:c]), 3) for c in caps_run if length > c},
            }
            for r, length, n_turns in zip(rollouts, lengths, turns, strict=True)
        ],
        "examples_runaway": [r.text[-240:] for r in capped if is_runaway(r.response_ids, args.threshold)][:3],
        "examples_long": [r.text[-240:] for r in capped if not is_runaway(r.response_ids, args.threshold)][:3],
    }

    pct = figures["percentiles"]
    shown = {k: ("over the cap" if v is None else f"{v:.0f}") for k, v in pct.items()}
    print(
        f"\n{policy}, {n} HH prompts, temperature {temperature:g}, top_p {top_p:g}, cap {args.cap}: "
        f"{seconds:.0f} s, {figures['tokens_per_second']} tokens/s on {torch.get_num_threads()} thread(s)"
    )
    print(f"reply length (tokens): p50 {shown['p50']}, p75 {shown['p75']}, p90 {shown['p90']}; {figures['longer_than_48']:.0%} over 48")
    print(f"{'cap':>5}{'finished':>10}{'cut':>7}{'runaway':>9}{'of cut':>8}{'cost':>7}")
    for cap, c in caps.items():
        print(f"{cap:>5}{c['finished']:>10.0%}{c['cut']:>7.0%}{c['runaway']:>9.0%}{c['runaway_of_cut']:>8.0%}{c['cost_vs_48'] or 0:>6.1f}x")
    for name, g in by_prompt.items():
        p50 = "over the cap" if g["p50"] is None else f"{g['p50']:.0f}"
        ends = ", ".join(f"{c} {v:.0%}" for c, v in g["finished"].items())
        print(f"{name} prompts ({g['prompts']}): p50 {p50}; finished within {ends}")
    if str(default_cap) in caps:
        c = caps[str(default_cap)]
        print(f"PPO's default max_new_tokens {default_cap}: {c['finished']:.0%} of replies end, {c['runaway']:.0%} penalised as runaway")
    print(f"distinct 4-gram share (second half) of the replies cut at {args.cap}: {figures['distinct_share_capped']}")
    fin = figures["distinct_share_finished_over_64"]
    print(f"finished replies over 64 tokens: {fin['replies']}, distinct share min {fin['min']}, median {fin['median']}")
    print(f"wrote {write_result('reply_lengths', figures)}")


if __name__ == "__main__":
    main()
