"""Our PPO against trl's GRPO and RLOO: same prompts, same reward model, same wall-clock budget (issue 14, item 6).

    .venv/bin/python -m bench.online_rl [--minutes 8] [--tokens 64] [--batch 8] [--eval-prompts 48]

Data and models are bench.learning's (run that first, or this script trains the two reward
models the same way): the 1,500 shared HH-RLHF harmless pairs shuffled (seed 0) into A (700
pairs: the training reward model ``learning-rm-a`` and the training prompts), B (700 pairs: the
judge ``learning-rm-b``, a reward model no policy is trained against) and C (prompts none saw).

Each trainer runs as ``rlhf-studio train KIND --config ...`` in its own process, from its recipe
(recipes/ppo-smollm2-reward-model.yaml, grpo-smollm2.yaml, rloo-smollm2.yaml) with the same
reply cap (``--tokens``), the same rollouts per step (``--batch``: PPO's batch; GRPO/RLOO's
prompts x group size), the same LoRA and learning rate as its recipe says, and is sent SIGTERM
after ``--minutes`` (it stops at the next step boundary and saves). Measured per trainer:

- episodes per second: replies generated and trained on, over the run's wall time;
- peak memory: the largest resident set of the trainer's process tree (sampled every 0.2 s);
- reward gain: the training reward model's (``learning-rm-a``) mean score on the replies to C's
  prompts less the base's, with a paired bootstrap 95% interval: measured after training, the same
  way for every trainer (a run stopped by the clock skips its own final held-out evaluation);
- KL(policy || base): on the policy's own replies to C's prompts (nats per reply);
- the judged win rate against the base on C's prompts by ``learning-rm-b`` (``eval compare``,
  the same sampling for every model), with its bootstrap 95% interval, the length-controlled
  rate and the mean reply length beside it.

Writes bench/results/online_rl.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from bench.common import ROOT, write_result
from bench.learning import WORK, reply_kl, write_pairs, write_prompts

KINDS = ("ppo", "grpo", "rloo")
RECIPES = {"ppo": "ppo-smollm2-reward-model.yaml", "grpo": "grpo-smollm2.yaml", "rloo": "rloo-smollm2.yaml"}


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of a process and all its children (0 for those already gone)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_trainer(kind: str, config: Path, minutes: float, env: dict) -> dict:
    """``python -m rlhf train KIND --config`` for ``minutes``, then SIGTERM; wall time and peak memory."""
    runs = WORK / "online-runs"
    before = set(runs.glob(f"{kind}-*")) if runs.is_dir() else set()
    cmd = [sys.executable, "-m", "rlhf", "train", kind, "--config", str(config), "--runs-dir", str(runs)]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = psutil.Process(child.pid)
    peak, stopped = 0, False
    while child.poll() is None:
        peak = max(peak, tree_rss(proc))
        if not stopped and time.perf_counter() - start > minutes * 60:
            child.send_signal(signal.SIGTERM)
            stopped = True
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    folders = sorted(set(runs.glob(f"{kind}-*")) - before)
    if not folders:
        raise RuntimeError(f"{kind}: no run folder was made (exit status {child.returncode})")
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak / 2**20), "run": folders[-1], "returncode": child.returncode}


def events_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


def summarise(kind: str, run: Path, seconds: float) -> dict:
    """The run's own figures from its events: steps, episodes, training reward and KL, held-out gain."""
    events = events_of(run)
    steps = [e for e in events if "reward_mean" in e and not e.get("final")]
    evals = [e for e in events if "eval_reward" in e]
    episodes = sum(e.get("episodes", 0) for e in steps)
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    out = {
        "steps": len(steps),
        "episodes": episodes,
        "episodes_per_second": round(episodes / seconds, 4) if seconds else None,
        "train_reward_first": steps[0]["reward_mean"] if steps else None,
        "train_reward_last": steps[-1]["reward_mean"] if steps else None,
        "train_kl_last": steps[-1].get("kl") if steps else None,
        "reply_length_first": steps[0].get("reply_length") if steps else None,
        "reply_length_last": steps[-1].get("reply_length") if steps else None,
        "eval_reward_first": evals[0]["eval_reward"] if evals else None,
        "eval_reward_last": evals[-1]["eval_reward"] if evals else None,
        "eval_reward_gain": metrics.get("eval_reward_gain", (evals[-1]["eval_reward"] - evals[0]["eval_reward"]) if evals else None),
        "eval_kl_end": metrics.get("eval_kl_end", evals[-1].get("eval_kl") if evals else None),
        "warnings": [e["warning"] for e in events if "warning" in e],
    }
    return out


def reward_gains(rows: list[dict], model: str, registry, resamples: int = 2000) -> dict[str, dict]:
    """Each contender's mean training-reward-model score on C's prompts less the base's, with a paired bootstrap 95% interval.

    The same replies the judge read, scored by the reward model the policies were trained against: what
    each trainer gained on the reward it optimised, on prompts none of them saw, measured the same way for all.
    """
    import random

    from rlhf.rewards import build_reward

    reward = build_reward([{"type": "model", "model": model}], registry)
    by: dict[str, dict[int, float]] = {}
    for label in dict.fromkeys(r["contender"] for r in rows):
        mine = sorted((r for r in rows if r["contender"] == label), key=lambda r: r["prompt_index"])
        scores, _ = reward([r["prompt"] for r in mine], [r["reply"] for r in mine])
        by[label] = {r["prompt_index"]: s for r, s in zip(mine, scores, strict=True)}
    base = by["base"]
    out = {}
    rng = random.Random(0)
    for label, scores in by.items():
        diffs = [scores[k] - base[k] for k in scores if k in base]
        means = sorted(sum(rng.choices(diffs, k=len(diffs))) / len(diffs) for _ in range(resamples))
        out[label] = {
            "gain": sum(diffs) / len(diffs),
            "low": means[int(0.025 * resamples)],
            "high": means[int(0.975 * resamples) - 1],
            "mean": sum(scores.values()) / len(scores),
        }
    return out


def reward_models(registry, args) -> tuple[str, str]:
    """bench.learning's two reward models, trained here with its recipe when they are missing."""
    names = ("learning-rm-a", "learning-rm-b")
    if all(n in registry.names() for n in names):
        return names
    from bench.learning import timed_run
    from rlhf.config import load_config
    from rlhf.reward import RewardRunConfig, train_reward

    recipe = load_config(RewardRunConfig, ROOT / "recipes" / "reward-smollm2-heads.yaml")
    for tag, name in zip("ab", names, strict=True):
        cfg = dataclasses.replace(recipe, data=str(WORK / f"pairs-{tag}.jsonl"), eval_fraction=0.1, register_as=name, threads=args.threads)
        timed_run("reward", cfg, train_reward, registry, None, name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0, help="wall-clock minutes per trainer")
    parser.add_argument("--tokens", type=int, default=64, help="reply cap for every trainer and for the judged replies")
    parser.add_argument("--batch", type=int, default=8, help="replies generated per step, for every trainer")
    parser.add_argument("--group", type=int, default=4, help="GRPO/RLOO replies per prompt (batch / group prompts per step)")
    parser.add_argument("--eval-prompts", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=list(KINDS), choices=KINDS, help="the trainers to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import random

    from bench.common import hh_pairs
    from rlhf.config import config_to_dict, load_config, save_config
    from rlhf.evaluation import EvalRunConfig, compare
    from rlhf.preference_data import pair_from_record
    from rlhf.preflight import config_class
    from rlhf.registry import ModelRegistry

    WORK.mkdir(parents=True, exist_ok=True)
    home = WORK / "home"
    registry = ModelRegistry(home)
    pairs = [pair_from_record(r, f"record {i}") for i, r in enumerate(hh_pairs())]
    random.Random(0).shuffle(pairs)
    part_a, part_b, part_c = pairs[:700], pairs[700:1400], pairs[1400:]
    write_pairs(WORK / "pairs-a.jsonl", part_a)
    write_pairs(WORK / "pairs-b.jsonl", part_b)
    prompts_a = write_prompts(WORK / "prompts-a.jsonl", part_a)
    prompts_c = write_prompts(WORK / "prompts-c.jsonl", part_c[: args.eval_prompts])
    rm_a, rm_b = reward_models(registry, args)
    env = {**os.environ, "STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1"}

    shared = {
        "prompts": str(prompts_a),
        "rewards": [{"type": "model", "model": rm_a}],
        "max_new_tokens": args.tokens,
        "check_judge": "",
        "threads": args.threads,
        "eval_fraction": 0.03,
    }
    per_kind = {
        "ppo": {"steps": 10_000, "batch_size": args.batch, "minibatch_size": min(4, args.batch), "eval_every": 5},
        "grpo": {"steps": 10_000, "num_generations": args.group, "batch_size": args.batch, "eval_every": 5},
        "rloo": {"steps": 10_000, "num_generations": args.group, "batch_size": args.batch, "eval_every": 5},
    }
    results: dict = {"split": {"a": 700, "b": 700, "c_prompts": min(len(part_c), args.eval_prompts)}, "judge": rm_b, "reward": rm_a}
    contenders = [{"model": "smollm2-135m-instruct", "label": "base"}]
    for kind in args.only:
        cls = config_class(kind)
        recipe = load_config(cls, ROOT / "recipes" / RECIPES[kind])
        names = {f.name for f in dataclasses.fields(cls)}
        changes = {k: v for k, v in {**shared, **per_kind[kind]}.items() if k in names}
        if f"online-{kind}" in registry.names():  # an earlier run of this bench: its model is replaced
            registry.remove(f"online-{kind}")
        cfg = dataclasses.replace(recipe, **changes, register_as=f"online-{kind}")
        path = save_config(cfg, WORK / f"online-{kind}.yaml")
        shown = ", ".join(f"{k}={v}" for k, v in changes.items() if k != "rewards")
        print(f"{kind}: training for {args.minutes} min ({shown})", flush=True)
        ran = run_trainer(kind, path, args.minutes, env)
        figures = summarise(kind, ran["run"], ran["seconds"])
        checkpoint = ran["run"] / "checkpoint"
        if not (checkpoint / "config.json").is_file():
            raise RuntimeError(f"{kind}: the run saved no checkpoint; see {ran['run'] / 'run.log'}")
        entry = registry.add(checkpoint, name=f"online-{kind}", source=f"{kind} run {ran['run'].name} (bench.online_rl)", replace=True)
        results[kind] = {**figures, "seconds": ran["seconds"], "peak_rss_mb": ran["peak_rss_mb"]}
        results[kind]["settings"] = {k: v for k, v in config_to_dict(cfg).items() if k not in ("prompts", "rewards")}
        contenders.append({"model": entry.name, "label": kind})
        print(
            f"{kind}: {figures['steps']} steps, {figures['episodes']} episodes in {ran['seconds']:.0f} s "
            f"({figures['episodes_per_second']} /s), peak {ran['peak_rss_mb']} MB, batch reward {figures['train_reward_first']} -> "
            f"{figures['train_reward_last']}, KL {figures['train_kl_last']}",
            flush=True,
        )

    cfg = EvalRunConfig(
        contenders=contenders,
        baseline="base",
        prompts=str(prompts_c),
        max_prompts=args.eval_prompts,
        judge={"type": "reward_model", "model": rm_b},
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=args.tokens,
        threads=args.threads,
    )
    rows: list[dict] = []
    judged = compare(cfg, registry, write_replies=rows.extend)
    (WORK / "online-replies.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gains = reward_gains(rows, rm_a, registry)
    prompts = [json.loads(line)["messages"] for line in prompts_c.read_text().splitlines()][: args.eval_prompts]
    base_rows = [r for r in rows if r["contender"] == "base"]
    base_tokens = sum(r["tokens"] for r in base_rows) / max(1, len(base_rows))
    results["base"] = {"mean_tokens": base_tokens}
    print(f"\n{'TRAINER':8} {'EPISODES/S':>10} {'PEAK MB':>8} {'RM-A GAIN [95%]':>22}  WIN RATE vs BASE [95%]  LC    TOKENS (base)  KL")
    for row in judged["contenders"]:
        kind = row["contender"]
        model = next(c["model"] for c in contenders if c["label"] == kind)
        replies = [r["reply"] for r in sorted((r for r in rows if r["contender"] == kind), key=lambda r: r["prompt_index"])]
        kl = reply_kl(model, "smollm2-135m-instruct", prompts, replies, registry)
        results[kind]["judged"] = {**row, **kl, "length_ratio": row["mean_tokens"] / max(base_tokens, 1e-9)}
        results[kind]["training_reward_gain_c"] = gains[kind]
        r, g = results[kind], gains[kind]
        print(
            f"{kind:8} {r['episodes_per_second'] or 0:>10.3f} {r['peak_rss_mb']:>8} "
            f"{g['gain']:>7.3f} [{g['low']:.3f}, {g['high']:.3f}]  "
            f"{row['win_rate']:.2f} [{row['win_rate_low']:.2f}, {row['win_rate_high']:.2f}]"
            f"       {row['lc_win_rate']:.2f}  {row['mean_tokens']:>5.0f} ({base_tokens:.0f})  {kl['kl_mean']:.2f}",
            flush=True,
        )
    peer = results.get("ppo", {}).get("episodes_per_second")
    for kind in ("grpo", "rloo"):
        if kind in results and peer:
            results[kind]["episodes_per_second_vs_ppo"] = round(results[kind]["episodes_per_second"] / peer, 2)
            print(f"{kind}: {results[kind]['episodes_per_second_vs_ppo']}x PPO's episodes per second", flush=True)
    results["judged_warnings"] = judged.get("warnings", [])
    write_result(
        "online_rl",
        {
            "command": f"python -m bench.online_rl --minutes {args.minutes:g} --tokens {args.tokens} --batch {args.batch} "
            f"--group {args.group} --eval-prompts {args.eval_prompts}",
            **results,
        },
    )


if __name__ == "__main__":
    main()
