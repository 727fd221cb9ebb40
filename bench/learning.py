"""The whole loop on the shared pairs, judged by a reward model the policies never saw (issue 13, item 5).

    .venv/bin/python -m bench.learning [--minutes 15] [--ppo-tokens 64] [--ppo-batch 8] [--eval-prompts 48]

Data: the 1,500 shared HH-RLHF harmless pairs, shuffled (seed 0) and cut into three parts:
- A (700 pairs): the reward model PPO trains against, DPO's pairs, PPO's prompts;
- B (700 pairs): the judge, a reward model trained with the same recipe on B only, so it never
  saw a pair of A and was never a training signal;
- C (the rest): prompts for the final comparison, seen by none of the models.

Steps, each through the studio's own trainers and default recipes (recipes/*.yaml):
1. reward models on A and on B (``--reward-recipe``), with their held-out accuracy;
2. PPO (recipes/ppo-smollm2-reward-model.yaml) against the A model for ``--minutes`` of wall
   time, its reply cap and batch lowered to ``--ppo-tokens`` / ``--ppo-batch`` so that a 2-core
   machine completes more than a few steps (stated in the results); with ``heldout_judge`` when the
   config has it, the B model is tracked on held-out prompts during training;
3. DPO (recipes/dpo-smollm2.yaml) on A's pairs for ``--minutes``;
4. the base model, the PPO policy and the DPO policy answer C's prompts with the same sampling
   (temperature 1, top_p 1, the PPO reply cap) and the B model judges each against the base
   (``rlhf-studio eval compare``): win rate with a bootstrap 95% interval, the length-controlled
   rate, mean reply length; KL(policy || base) is estimated on each policy's own replies (sum over
   reply tokens of log p_policy - log p_base).

Goal (issue 13): PPO and DPO each win at least 60% against the base, with KL at or under the PPO
target (6 nats) and mean reply length within 25% of the base's. Writes bench/results/learning.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import threading
import time
from pathlib import Path

import torch

from bench.common import ROOT, hh_pairs, write_result
from rlhf.preference_data import pair_from_record, transcript_messages

WORK = ROOT / "bench" / ".cache" / "learning"


def write_pairs(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n" for p in pairs))
    return path


def write_prompts(path: Path, pairs) -> Path:
    path.write_text("".join(json.dumps({"messages": transcript_messages(p.prompt)}) + "\n" for p in pairs))
    return path


def timed_run(kind: str, cfg, train, registry, minutes: float | None, name: str) -> tuple[dict, float, Path]:
    """Run a trainer in this process; stop it after ``minutes``; register what it saved."""
    from rlhf.runs import RunDir, run_guard

    run = RunDir.create(WORK / "runs", kind, dataclasses.asdict(cfg))
    start = time.perf_counter()
    with run_guard(run, handle_sigterm=False) as stop:
        timer = threading.Timer(minutes * 60, stop.set) if minutes else None
        if timer:
            timer.start()
        try:
            metrics = train(cfg, run, stop, registry=registry)
        finally:
            if timer:
                timer.cancel()
    seconds = time.perf_counter() - start
    if "registered_as" not in metrics:  # stopped by the clock: register the saved checkpoint by hand
        entry = registry.add(
            run.checkpoint_dir, name=name, source=f"{kind} run {run.id} (bench.learning)", lineage=_lineage(cfg), replace=True
        )
        metrics["registered_as"] = entry.name
    return metrics, seconds, run.path


def _lineage(cfg) -> dict:
    out = {k: getattr(cfg, k) for k in ("data", "policy", "rewards", "prompts", "base_model", "method") if hasattr(cfg, k)}
    return out


@torch.no_grad()
def reply_kl(policy: str, base: str, prompts: list, replies: list[str], registry) -> dict:
    """Mean over prompts of sum_t log p_policy - log p_base on the policy's own sampled replies."""
    from rlhf.loading import load_causal_lm

    pol, tok = load_causal_lm(policy, registry, dtype=torch.float32)
    ref, _ = load_causal_lm(base, registry, dtype=torch.float32)
    values = []
    for messages, reply in zip(prompts, replies, strict=True):
        head = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        head = list(head["input_ids"] if hasattr(head, "keys") else head)
        body = tok(reply, add_special_tokens=False)["input_ids"]
        if not body:
            values.append(0.0)
            continue
        ids = torch.tensor([head + body], device=pol.device)
        sums = []
        for model in (pol, ref):
            logits = model(input_ids=ids).logits[0, len(head) - 1 : -1].float()
            sums.append(torch.log_softmax(logits, -1).gather(1, ids[0, len(head) :, None]).sum())
        values.append(float(sums[0] - sums[1]))
    del pol, ref
    return {"kl_mean": sum(values) / len(values), "kl_median": sorted(values)[len(values) // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock minutes for PPO and for DPO, each")
    parser.add_argument("--reward-recipe", default="recipes/reward-smollm2-heads.yaml")
    parser.add_argument("--ppo-tokens", type=int, default=64, help="PPO reply cap for this bench (the recipe says 192)")
    parser.add_argument("--ppo-batch", type=int, default=8, help="PPO rollouts per step for this bench (the recipe says 16)")
    parser.add_argument("--eval-prompts", type=int, default=48)
    parser.add_argument("--part-size", type=int, default=700, help="pairs in A and in B (a smaller figure makes a quick smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["ppo", "dpo"], help="leave a trainer out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from rlhf.config import load_config
    from rlhf.dpo import DPORunConfig, train_dpo
    from rlhf.evaluation import EvalRunConfig, compare
    from rlhf.ppo import PPORunConfig, train_ppo
    from rlhf.registry import ModelRegistry
    from rlhf.reward import RewardRunConfig, train_reward

    WORK.mkdir(parents=True, exist_ok=True)
    registry = ModelRegistry(WORK / "home")  # the bench's models stay out of the user's registry
    pairs = [pair_from_record(r, f"record {i}") for i, r in enumerate(hh_pairs())]
    random.Random(0).shuffle(pairs)
    n = args.part_size
    part_a, part_b, part_c = pairs[:n], pairs[n : 2 * n], pairs[1400:]
    file_a, file_b = write_pairs(WORK / "pairs-a.jsonl", part_a), write_pairs(WORK / "pairs-b.jsonl", part_b)
    prompts_a = write_prompts(WORK / "prompts-a.jsonl", part_a)
    prompts_c = write_prompts(WORK / "prompts-c.jsonl", part_c[: args.eval_prompts])
    results: dict = {"split": {"a": len(part_a), "b": len(part_b), "c_prompts": min(len(part_c), args.eval_prompts)}}
    began = time.perf_counter()

    # 1. reward models on A (the PPO reward) and on B (the judge)
    recipe = load_config(RewardRunConfig, ROOT / args.reward_recipe)
    rewards = {}
    for tag, data in (("a", file_a), ("b", file_b)):
        cfg = dataclasses.replace(recipe, data=str(data), eval_fraction=0.1, register_as=f"learning-rm-{tag}", threads=args.threads)
        metrics, seconds, _ = timed_run("reward", cfg, train_reward, registry, None, f"learning-rm-{tag}")
        rewards[tag] = {"seconds": round(seconds, 1), **{k: metrics[k] for k in metrics if k.startswith("eval_") or k == "registered_as"}}
        print(f"reward model {tag}: held-out accuracy {metrics.get('eval_accuracy', 0):.3f} in {seconds:.0f} s", flush=True)
    results["reward_models"] = {"recipe": args.reward_recipe, **rewards}
    judge_name = rewards["b"]["registered_as"]

    # 2. PPO against the A model
    contenders = [{"model": "smollm2-135m-instruct", "label": "base"}]
    if "ppo" not in args.skip:
        ppo = load_config(PPORunConfig, ROOT / "recipes" / "ppo-smollm2-reward-model.yaml")
        extra = {"heldout_judge": [{"type": "model", "model": judge_name}]} if hasattr(ppo, "heldout_judge") else {}
        ppo = dataclasses.replace(
            ppo,
            prompts=str(prompts_a),
            rewards=[{"type": "model", "model": rewards["a"]["registered_as"]}],
            steps=10_000,
            max_new_tokens=args.ppo_tokens,
            batch_size=args.ppo_batch,
            minibatch_size=min(ppo.minibatch_size, args.ppo_batch),
            eval_fraction=0.03,
            eval_every=5,
            check_judge="",
            threads=args.threads,
            register_as="learning-ppo",
            **extra,
        )
        metrics, seconds, run_path = timed_run("ppo", ppo, train_ppo, registry, args.minutes, "learning-ppo")
        events = [json.loads(line) for line in (run_path / "events.jsonl").read_text().splitlines() if line.strip()]
        steps = [e for e in events if "reward_mean" in e]
        results["ppo"] = {
            "seconds": round(seconds, 1),
            "steps": len(steps),
            "episodes": sum(e.get("episodes", 0) for e in steps),
            "max_new_tokens": args.ppo_tokens,
            "batch_size": args.ppo_batch,
            "train_reward_first": steps[0]["reward_mean"] if steps else None,
            "train_reward_last": steps[-1]["reward_mean"] if steps else None,
            "train_kl_last": steps[-1]["kl"] if steps else None,
            "kl_coef_last": steps[-1].get("kl_coef") if steps else None,
            "reply_length_first": steps[0]["reply_length"] if steps else None,
            "reply_length_last": steps[-1]["reply_length"] if steps else None,
            "eval": [{k: e[k] for k in e if k.startswith("eval_") or k == "step"} for e in events if "eval_reward" in e],
            "warnings": [e["warning"] for e in events if "warning" in e],
        }
        contenders.append({"model": metrics["registered_as"], "label": "ppo"})
        print(f"ppo: {len(steps)} steps in {seconds:.0f} s", flush=True)

    # 3. DPO on A's pairs
    if "dpo" not in args.skip:
        dpo = load_config(DPORunConfig, ROOT / "recipes" / "dpo-smollm2.yaml")
        dpo = dataclasses.replace(dpo, data=str(file_a), check_judge="", threads=args.threads, register_as="learning-dpo")
        metrics, seconds, _ = timed_run("dpo", dpo, train_dpo, registry, args.minutes, "learning-dpo")
        results["dpo"] = {"seconds": round(seconds, 1), **{k: v for k, v in metrics.items() if isinstance(v, int | float | str)}}
        contenders.append({"model": metrics["registered_as"], "label": "dpo"})
        print(f"dpo: {metrics.get('steps', '?')} steps in {seconds:.0f} s", flush=True)

    # 4. judged comparison on C
    cfg = EvalRunConfig(
        contenders=contenders,
        baseline="base",
        prompts=str(prompts_c),
        max_prompts=args.eval_prompts,
        judge={"type": "reward_model", "model": judge_name},
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=args.ppo_tokens,
        threads=args.threads,
    )
    rows: list[dict] = []
    start = time.perf_counter()
    judged = compare(cfg, registry, write_replies=rows.extend)
    results["eval_seconds"] = round(time.perf_counter() - start, 1)
    prompts = [json.loads(line)["messages"] for line in prompts_c.read_text().splitlines()][: args.eval_prompts]
    table = []
    base_rows = [r for r in rows if r["contender"] == "base"]
    base_tokens = sum(r["tokens"] for r in base_rows) / max(1, len(base_rows))
    results["base"] = {"mean_tokens": base_tokens, "mean_words": judged.get("baseline_mean_words")}
    for row in judged["contenders"]:
        label = row["contender"]
        model = next(c["model"] for c in contenders if c["label"] == label)
        replies = [r["reply"] for r in sorted((r for r in rows if r["contender"] == label), key=lambda r: r["prompt_index"])]
        kl = reply_kl(model, "smollm2-135m-instruct", prompts, replies, registry)
        entry = {**row, **kl, "length_ratio": row["mean_tokens"] / max(base_tokens, 1e-9)}
        entry["goal_win"] = row["win_rate"] >= 0.6
        entry["goal_kl"] = kl["kl_mean"] <= 6.0
        entry["goal_length"] = abs(entry["length_ratio"] - 1) <= 0.25
        table.append(entry)
        print(
            f"{label}: win rate {row['win_rate']:.2f} [{row['win_rate_low']:.2f}, {row['win_rate_high']:.2f}] "
            f"(length-controlled {row['lc_win_rate']:.2f}), {row['mean_tokens']:.0f} tokens (base {base_tokens:.0f}), "
            f"KL {kl['kl_mean']:.2f}",
            flush=True,
        )
    results["judged"] = {"judge": judge_name, "warnings": judged.get("warnings", []), "contenders": table}
    results["total_seconds"] = round(time.perf_counter() - began, 1)
    write_result(
        "learning",
        {
            "command": "python -m bench.learning "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("skip", "threads")),
            "goal": "PPO and DPO each win >= 60% against the base under the independent judge, KL <= 6, length within 25%",
            **results,
        },
    )


if __name__ == "__main__":
    main()
