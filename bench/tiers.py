"""The tiers judged: base, a prompted variant, SFT, PPO and DPO on the shared HH-RLHF pairs.

    .venv/bin/python -m bench.tiers [--dpo-pairs 120] [--sft-examples 200] [--eval-prompts 48]

Everything through the studio's own commands (``python -m rlhf train ...`` / ``eval compare``),
with the default recipes from ``recipes/`` (only the data, names and sizes set here):

1. The 1,500 shared HH-RLHF harmless pairs (../shared/data) are split in two halves by a seeded
   shuffle. Records ``read_pairs`` cannot use (their two transcripts differ before the last
   reply) are left out and counted.
2. Half A trains the **judge**: a MiniLM reward model (recipes/reward-minilm.yaml). The policies
   never see half A, and the judge never sees half B.
3. Half B trains the policies: a second reward model (the PPO reward), PPO against it
   (recipes/ppo-smollm2-reward-model.yaml, prompts = half B's first human turns), DPO on
   ``--dpo-pairs`` of half B's pairs (recipes/dpo-smollm2.yaml), SFT on ``--sft-examples`` of
   half B's chosen replies (recipes/sft-smollm2-lora.yaml).
4. ``eval compare`` on ``--eval-prompts`` first human turns of half A (prompts no policy trained
   on): base, base + a system prompt (L1), SFT (L2), PPO and DPO (L3), each against the base,
   judged twice: by the half-A reward model, and by SmolLM2 asked pairwise in both orders.

Prints each contender's win rate with its 95% interval, length-controlled rate and reply
length under both judges, and the PPO / DPO runs' own independent checks; writes
bench/results/tiers.json. Takes about an hour on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.common import ROOT, first_human_turn, hh_pairs, write_result
from rlhf.preference_data import PairFileError, pair_from_record

WORK = ROOT / "bench" / ".cache" / "tiers"
L1_SYSTEM = "You are a helpful, honest and harmless assistant. Answer the user's question clearly and kindly; refuse harmful requests."


def recipe(name: str, **overrides) -> dict:
    data = yaml.safe_load((ROOT / "recipes" / name).read_text())
    return {**data, **overrides}


def run(args: list[str], env: dict, log: Path) -> float:
    """Run an rlhf command; its output goes to ``log``. Returns the seconds it took."""
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "rlhf", *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"`rlhf {' '.join(args)}` failed; see {log}")
    return time.perf_counter() - start


def train(kind: str, cfg: dict, env: dict, name: str) -> tuple[float, dict]:
    done = _finished(kind, cfg.get("register_as"))
    if done is not None:  # a rerun keeps what an earlier run of this bench trained with the same config
        print(f"  {name}: kept from {done.name}", flush=True)
        status = json.loads((done / "status.json").read_text())
        metrics = json.loads((done / "metrics.json").read_text())
        return metrics.get("train_seconds") or 0.0, {**metrics, "_started": status.get("started")}
    path = WORK / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    seconds = run(["train", kind, "--config", str(path), "--runs-dir", str(WORK / "runs")], env, WORK / f"{name}.log")
    newest = max((p for p in (WORK / "runs").iterdir() if p.name.startswith(kind)), key=lambda p: p.stat().st_mtime)
    print(f"  {name}: {seconds / 60:.1f} min ({newest.name})", flush=True)
    return seconds, json.loads((newest / "metrics.json").read_text())


def _finished(kind: str, name: str | None) -> Path | None:
    """The newest finished run of ``kind`` registered as ``name`` (waiting for one still running)."""
    from rlhf.runs import RunDir

    runs = WORK / "runs"
    if not name or not runs.is_dir():
        return None
    for folder in sorted(runs.glob(f"{kind}-*"), reverse=True):
        try:
            config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
        except (OSError, ValueError):
            continue
        if config.get("register_as") != name:
            continue
        run = RunDir(folder)
        while run.effective_state() == "running":  # an earlier bench's run of the same model: let it finish
            time.sleep(10)
        if run.effective_state() == "finished" and run.metrics().get("registered_as") == name:
            return folder
    return None


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dpo-pairs", type=int, default=120)
    parser.add_argument("--sft-examples", type=int, default=200)
    parser.add_argument("--eval-prompts", type=int, default=48)
    parser.add_argument("--ppo-steps", type=int, default=None, help="PPO steps (default: the recipe's)")
    parser.add_argument("--no-sft", action="store_true", help="leave the L2 SFT model out")
    parser.add_argument("--judges", choices=["both", "rm"], default="both", help="rm: only the half-A reward model judges")
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STUDIO_HOME": str(WORK / "home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    raw = hh_pairs()
    usable, left_out = [], 0
    for n, record in enumerate(raw):
        try:
            pair_from_record(record, f"record {n}")
            usable.append(record)
        except PairFileError:
            left_out += 1
    random.Random(0).shuffle(usable)
    half = len(usable) // 2
    a, b = usable[:half], usable[half:]
    print(f"{len(raw)} HH pairs, {left_out} left out (transcripts differ before the last reply); half A {len(a)}, half B {len(b)}")
    data = WORK / "data"
    a_file, b_file = write_jsonl(data / "half-a.jsonl", a), write_jsonl(data / "half-b.jsonl", b)
    dpo_file = write_jsonl(data / "dpo-pairs.jsonl", b[: args.dpo_pairs])
    b_prompts = write_jsonl(data / "ppo-prompts.jsonl", [{"prompt": first_human_turn(r["chosen"])} for r in b])
    sft_rows = []
    for r in b[: args.sft_examples]:
        pair = pair_from_record(r, "sft")
        if "\n\nAssistant:" not in pair.prompt:  # single-turn only: a clean instruction and its answer
            sft_rows.append({"prompt": first_human_turn(r["chosen"]), "response": pair.chosen})
    sft_file = write_jsonl(data / "sft.jsonl", sft_rows)
    eval_prompts = write_jsonl(data / "eval-prompts.jsonl", [{"prompt": first_human_turn(r["chosen"])} for r in a[: args.eval_prompts]])

    subprocess.run([sys.executable, "-m", "rlhf", "models", "prepare"], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    figures: dict = {"pairs": len(raw), "left_out": left_out, "half_a": len(a), "half_b": len(b), "costs": {}}
    print("training (default recipes):", flush=True)
    sec, m = train("reward", recipe("reward-minilm.yaml", data=str(a_file), register_as="tiers-judge-rm-a"), env, "judge-rm-a")
    figures["costs"]["judge_rm_a"] = {"seconds": round(sec), "eval_accuracy": m.get("eval_accuracy")}
    sec, m = train("reward", recipe("reward-minilm.yaml", data=str(b_file), register_as="tiers-rm-b"), env, "rm-b")
    figures["costs"]["rm_b"] = {"seconds": round(sec), "eval_accuracy": m.get("eval_accuracy")}
    sec, m = train("dpo", recipe("dpo-smollm2.yaml", data=str(dpo_file), register_as="tiers-dpo"), env, "dpo")
    dpo_keys = ("eval_accuracies_before", "eval_accuracies", "judged_win_rate_vs_start")
    figures["costs"]["dpo"] = {"seconds": round(sec), **{k: m.get(k) for k in dpo_keys}}
    ppo = recipe("ppo-smollm2-reward-model.yaml", prompts=str(b_prompts), register_as="tiers-ppo")
    ppo["rewards"] = [{"type": "model", "model": "tiers-rm-b", "weight": 1.0}]
    if args.ppo_steps:
        ppo["steps"] = args.ppo_steps
    sec, m = train("ppo", ppo, env, "ppo")
    ppo_keys = ("eval_reward_gain", "eval_kl_end", "episodes", "judged_win_rate_vs_start")
    figures["costs"]["ppo"] = {"seconds": round(sec), **{k: m.get(k) for k in ppo_keys}}
    if not args.no_sft:
        sec, m = train("sft", recipe("sft-smollm2-lora.yaml", data=str(sft_file), register_as="tiers-sft"), env, "sft")
        figures["costs"]["sft"] = {"seconds": round(sec), **{k: m.get(k) for k in ("train_examples", "eval_loss")}}

    contenders = [
        {"model": "smollm2-135m-instruct", "label": "L1 base"},
        {"model": "smollm2-135m-instruct", "label": "L1 system prompt", "system": L1_SYSTEM},
        *([] if args.no_sft else [{"model": "tiers-sft", "label": "L2 SFT"}]),
        {"model": "tiers-ppo", "label": "L3 PPO"},
        {"model": "tiers-dpo", "label": "L3 DPO"},
    ]
    figures["judged"] = {}
    judges = [("rm_half_a", {"type": "reward_model", "model": "tiers-judge-rm-a"})]
    if args.judges == "both":
        judges.append(("smollm2_pairwise", {"type": "pairwise", "model": "smollm2-135m-instruct"}))
    for name, judge in judges:
        cfg = {
            "contenders": contenders,
            "prompts": str(eval_prompts),
            "judge": judge,
            "max_prompts": 0,
            "temperature": 0.7,
            "max_new_tokens": 192,
        }
        path = WORK / "configs" / f"eval-{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        sec = run(["eval", "compare", "--config", str(path), "--runs-dir", str(WORK / "runs")], env, WORK / f"eval-{name}.log")
        newest = max((p for p in (WORK / "runs").iterdir() if p.name.startswith("eval")), key=lambda p: p.stat().st_mtime)
        results = json.loads((newest / "results.json").read_text())
        figures["judged"][name] = {
            "judge": results["judge"],
            "seconds": round(sec),
            "baseline_mean_words": results["baseline_mean_words"],
            "contenders": results["contenders"],
            "warnings": results["warnings"],
        }
        print(f"\njudge: {results['judge']} ({sec / 60:.1f} min), baseline L1 base, {results['baseline_mean_words']:.0f} words")
        for r in results["contenders"]:
            print(
                f"  {r['contender']:18} win rate {r['win_rate']:.3f} [{r['win_rate_low']:.3f}, {r['win_rate_high']:.3f}]  "
                f"length-controlled {r['lc_win_rate']:.3f}  {r['mean_words']:.0f} words  unfinished {r['unfinished_share']:.0%}"
            )
        for w in results["warnings"]:
            print(f"  warning: {w}")
    for kind in ("ppo", "dpo"):
        c = figures["costs"][kind]
        if c.get("judged_win_rate_vs_start") is not None:
            rate = c["judged_win_rate_vs_start"]
            print(f"{kind} run's own check (SmolLM2 pairwise, 16 held-out prompts): judged win rate vs start {rate:.3f}")
    print(f"wrote {write_result('tiers', figures)}")


if __name__ == "__main__":
    main()
