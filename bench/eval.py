"""Evaluation speed: a judged comparison batched vs one at a time, and the arena's rating fit.

    .venv/bin/python -m bench.eval [--prompts 32] [--repeats 2] [--battles 100000] [--rounds 100]

1. Judged comparison throughput on SmolLM2-135M-Instruct: two contenders (the base, and the
   base with a terse system prompt) answer the same HH-RLHF first human turns (64 new tokens,
   greedy), then the pairwise AI judge (SmolLM2, both orders) compares them. The studio's way
   (``rlhf.evaluation``: batched generation, batched judging) against a one-at-a-time loop
   (batch size 1 for both). Replies per second counts contender replies generated and judged,
   end to end. Runs alternate; medians of the repeats.
2. The arena's Bradley-Terry fit (``rlhf.ratings.bootstrap_ratings``): 100,000 simulated battles
   among 20 models, 100 bootstrap rounds. Goal: under 5 s on this machine.

Writes bench/results/eval.json.
"""

from __future__ import annotations

import argparse
import random
import time

from bench.common import first_human_turn, hh_pairs, median, write_result
from rlhf.evaluation import EvalRunConfig, generate_replies
from rlhf.judges import PairwiseLMJudge
from rlhf.ratings import BASE, SCALE, bootstrap_ratings
from rlhf.registry import DEFAULT_CHAT_MODEL, ModelRegistry

CONTENDERS = [
    {"model": DEFAULT_CHAT_MODEL, "label": "base"},
    {"model": DEFAULT_CHAT_MODEL, "label": "terse", "system": "Answer in one short sentence."},
]


def judged_comparison(prompts: list[str], registry: ModelRegistry, judge: PairwiseLMJudge, batch: int) -> dict:
    """Generate with both contenders and judge the second against the first; timings and verdicts."""
    cfg = EvalRunConfig(contenders=CONTENDERS, prompts="unused", temperature=0.0, max_new_tokens=64, batch_size=batch, device="cpu")
    start = time.perf_counter()
    replies = [generate_replies(spec, prompts, cfg, registry) for spec in CONTENDERS]
    generated = time.perf_counter()
    judge.batch_size = batch
    verdicts = judge.judge(prompts, replies[1].texts, replies[0].texts)
    end = time.perf_counter()
    return {
        "seconds": end - start,
        "generate_seconds": generated - start,
        "judge_seconds": end - generated,
        "replies": 2 * len(prompts),
        "verdicts": [v.verdict for v in verdicts],
        "texts": replies[1].texts,
    }


def simulated_battles(n: int, models: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    strength = {f"model-{i:02d}": rng.gauss(1000, 150) for i in range(models)}
    names = sorted(strength)
    out = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        p = 1 / (1 + BASE ** ((strength[b] - strength[a]) / SCALE))
        u = rng.random()
        out.append((a, b, "tie" if u < 0.1 else ("a" if u < 0.1 + 0.9 * p else "b")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--battles", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()

    registry = ModelRegistry()
    prompts = [first_human_turn(r["chosen"]) for r in hh_pairs(args.prompts)]
    judge = PairwiseLMJudge(DEFAULT_CHAT_MODEL, registry, device="cpu")
    runs: dict[str, list[dict]] = {"batched": [], "one_at_a_time": []}
    for _ in range(args.repeats):
        runs["batched"].append(judged_comparison(prompts, registry, judge, args.batch_size))
        runs["one_at_a_time"].append(judged_comparison(prompts, registry, judge, 1))
    same = runs["batched"][0]["verdicts"] == runs["one_at_a_time"][0]["verdicts"]
    figures: dict = {"prompts": len(prompts), "new_tokens": 64, "batch_size": args.batch_size, "same_verdicts": same}
    for name, found in runs.items():
        seconds = median([r["seconds"] for r in found])
        figures[name] = {
            "seconds": round(seconds, 2),
            "generate_seconds": round(median([r["generate_seconds"] for r in found]), 2),
            "judge_seconds": round(median([r["judge_seconds"] for r in found]), 2),
            "replies_per_second": round(found[0]["replies"] / seconds, 3),
        }
    figures["speedup"] = round(figures["batched"]["replies_per_second"] / figures["one_at_a_time"]["replies_per_second"], 2)
    wins = runs["batched"][0]["verdicts"]
    figures["terse_vs_base"] = {k: wins.count(k) for k in ("a", "tie", "b")}

    battles = simulated_battles(args.battles, args.models)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        ratings = bootstrap_ratings(battles, rounds=args.rounds, seed=0)
        times.append(time.perf_counter() - start)
    fit = {"battles": len(battles), "models": args.models, "rounds": args.rounds, "seconds": round(median(times), 2), "goal_seconds": 5.0}
    fit["goal_met"] = fit["seconds"] < 5.0
    fit["widest_interval"] = round(max(r.upper - r.lower for r in ratings), 1)
    figures["rating_fit"] = fit

    print(f"judged comparison, {len(prompts)} prompts x 2 contenders, 64 new tokens, SmolLM2 judge in both orders")
    print(f"{'':16}{'replies/s':>10}{'generate s':>12}{'judge s':>10}{'total s':>10}")
    for name in ("one_at_a_time", "batched"):
        f = figures[name]
        print(f"{name:16}{f['replies_per_second']:>10.3f}{f['generate_seconds']:>12.1f}{f['judge_seconds']:>10.1f}{f['seconds']:>10.1f}")
    print(f"batched / one at a time: {figures['speedup']:.2f}x (same verdicts: {same})")
    print(
        f"rating fit: {fit['battles']:,} battles, {fit['models']} models, {fit['rounds']} bootstrap rounds: {fit['seconds']:.2f} s "
        f"(goal < 5 s: {'met' if fit['goal_met'] else 'missed'}); widest 95% interval {fit['widest_interval']} points"
    )
    print(f"wrote {write_result('eval', figures)}")


if __name__ == "__main__":
    main()
