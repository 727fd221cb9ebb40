"""PPO throughput and memory: our trainer against trl==1.12.0's PPOTrainer, then 15 minutes of ours.

    .venv/bin/python -m bench.ppo [--steps 4] [--minutes 15]

Same policy (SmolLM2-135M-Instruct), same prompts (first human turns of
../shared/data/hh-rlhf-harmless-dev.jsonl.gz), batch 16, minibatch 8, 4 PPO epochs, replies of
at most 48 tokens, temperature 1, KL coefficient 0.05, missing-EOS penalty -1. The reward for
the speed comparison is a fixed scorer both trainers can use: SmolLM2 with a seeded one-output
head (trl's PPOTrainer needs a reward model on the policy's own tokenizer). Each trainer runs in
its own process so its peak resident memory is its own; trl runs in bench/.venv-trl112, made
here on first use (pip install trl==1.12.0, the last release with PPO).

- trl: its usual set-up, full fine-tune of the policy, a reference copy, a value model
  initialised from the reward model.
- ours: rlhf.ppo with LoRA (the reference is the adapters switched off) and a value head on
  the policy.

Then ours trains for ``--minutes`` against the MiniLM reward model of bench/reward.py
(bench/.cache/reward-minilm, trained first if missing) and prints the reward gain and the KL
on 32 held-out prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, hh_pairs, write_result

TRL_VENV = ROOT / "bench" / ".venv-trl112"
CACHE = ROOT / "bench" / ".cache"
SETTINGS = {"batch_size": 16, "minibatch_size": 8, "ppo_epochs": 4, "max_new_tokens": 48}


def first_human_turn(text: str) -> str:
    body = text.split("Human:", 1)[-1]
    return body.split("Assistant:", 1)[0].strip()


def prompts(n_train: int = 64, n_eval: int = 32) -> tuple[list[str], list[str]]:
    seen, out = set(), []
    for row in hh_pairs():
        p = first_human_turn(row["chosen"])
        if p and p not in seen and len(p) < 300:
            seen.add(p)
            out.append(p)
    return out[:n_train], out[n_train : n_train + n_eval]


def ensure_trl_venv() -> Path:
    python = TRL_VENV / "bin" / "python"
    if python.is_file():
        return python
    print(f"making {TRL_VENV} with trl==1.12.0 (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(TRL_VENV)], check=True)
    pins = ["torch==2.13.0", "trl==1.12.0", "transformers==5.24.0", "accelerate==1.15.0", "datasets==5.2.0", "peft==0.21.2"]
    subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
    return python


def make_scorer(policy: Path, folder: Path) -> Path:
    """SmolLM2 with a seeded one-output head: a fixed reward both trainers can run."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(1234)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForSequenceClassification.from_pretrained(policy, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def ours_worker(args: argparse.Namespace) -> None:
    """Run our trainer for --steps steps and write episodes/s and peak memory."""
    import torch

    from rlhf.ppo import PPORunConfig, PPOTrainer
    from rlhf.rewards import build_reward

    rows = [json.loads(line)["prompt"] for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    cfg = PPORunConfig(
        prompts=args.prompts, policy=args.policy, rewards=[{"type": "model", "model": args.scorer}], steps=args.steps, **SETTINGS
    )
    torch.manual_seed(0)
    trainer = PPOTrainer(cfg)
    reward = build_reward(cfg.rewards)
    start = time.perf_counter()
    for step in range(args.steps):
        batch = [rows[(step * cfg.batch_size + i) % len(rows)] for i in range(cfg.batch_size)]
        diag, _ = trainer.train_step(batch, [None] * len(batch), reward)
        print(f"ours step {step + 1}: {diag['episodes_per_second']:.2f} episodes/s, length {diag['reply_length']:.1f}", flush=True)
    seconds = time.perf_counter() - start
    episodes = args.steps * cfg.batch_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {"episodes": episodes, "seconds": round(seconds, 1), "episodes_per_second": episodes / seconds, "peak_rss_mb": round(peak)}
    Path(args.out).write_text(json.dumps(result))


def long_worker(args: argparse.Namespace) -> None:
    """Train ours for --minutes against a reward model; held-out reward and KL before and after."""
    import torch

    from rlhf.ppo import PPORunConfig, PPOTrainer
    from rlhf.rewards import build_reward

    rows = [json.loads(line)["prompt"] for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    held = [json.loads(line)["prompt"] for line in Path(args.eval_prompts).read_text().splitlines() if line.strip()]
    cfg = PPORunConfig(
        prompts=args.prompts, policy=args.policy, rewards=[{"type": "model", "model": args.scorer}], steps=10_000, **SETTINGS
    )
    torch.manual_seed(0)
    trainer = PPOTrainer(cfg)
    reward = build_reward(cfg.rewards)
    before = trainer.evaluate(held, [None] * len(held), reward, seed=7)
    print(f"held-out before: {before}", flush=True)
    deadline = time.monotonic() + args.minutes * 60
    history = []
    while time.monotonic() < deadline:
        step = trainer.step
        batch = [rows[(step * cfg.batch_size + i) % len(rows)] for i in range(cfg.batch_size)]
        diag, _ = trainer.train_step(batch, [None] * len(batch), reward)
        history.append({k: round(diag[k], 4) for k in ("reward_mean", "kl", "kl_coef", "entropy", "reply_length", "eos_rate")})
        print(f"step {trainer.step}: {history[-1]}", flush=True)
    after = trainer.evaluate(held, [None] * len(held), reward, seed=7)
    print(f"held-out after: {after}", flush=True)
    result = {
        "minutes": args.minutes,
        "steps": trainer.step,
        "episodes": trainer.step * cfg.batch_size,
        "held_out_reward_before": before["eval_reward"],
        "held_out_reward_after": after["eval_reward"],
        "reward_gain": after["eval_reward"] - before["eval_reward"],
        "held_out_kl_after": after["eval_kl"],
        "history": history,
    }
    Path(args.out).write_text(json.dumps(result))


def run_worker(cmd: list[str], log_name: str) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    print("running: " + " ".join(cmd[:4]) + " ...", flush=True)
    proc = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"{log_name} worker failed with status {proc.returncode}")
    return json.loads(out.read_text())


def reward_model_folder(train: list[str]) -> Path:
    """The MiniLM reward model of bench/reward.py, trained now if it is not cached."""
    folder = CACHE / "reward-minilm"
    if (folder / "config.json").is_file():
        return folder
    print("training the MiniLM reward model of bench/reward.py first (about 7 minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "bench.reward", "--skip-trl"], cwd=ROOT, check=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="PPO steps per trainer for the speed comparison")
    parser.add_argument("--minutes", type=float, default=15.0, help="length of our long run (0 to skip)")
    parser.add_argument("--worker", choices=["ours", "long"], help=argparse.SUPPRESS)
    for name in ("policy", "scorer", "prompts", "eval-prompts", "out"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "ours":
        return ours_worker(args)
    if args.worker == "long":
        return long_worker(args)

    from rlhf.registry import ModelRegistry

    policy = ModelRegistry().resolve("smollm2-135m-instruct")
    CACHE.mkdir(parents=True, exist_ok=True)
    scorer = make_scorer(policy, CACHE / "smollm2-fixed-scorer")
    train, held = prompts()
    work = Path(tempfile.mkdtemp())
    train_file, held_file = work / "train.jsonl", work / "held.jsonl"
    train_file.write_text("\n".join(json.dumps({"prompt": p}) for p in train) + "\n")
    held_file.write_text("\n".join(json.dumps({"prompt": p}) for p in held) + "\n")
    common = ["--policy", str(policy), "--scorer", str(scorer), "--prompts", str(train_file), "--steps", str(args.steps)]

    trl = run_worker([str(ensure_trl_venv()), str(ROOT / "bench" / "ppo_trl_worker.py"), *common], "trl")
    ours = run_worker([sys.executable, "-m", "bench.ppo", "--worker", "ours", *common], "ours")
    speed = ours["episodes_per_second"] / trl["episodes_per_second"]
    memory = ours["peak_rss_mb"] / trl["peak_rss_mb"]
    print(f"\n{'trainer':<36}{'episodes/s':>12}{'peak RSS MB':>13}")
    print(f"{'trl 1.12.0 PPOTrainer (full + copies)':<36}{trl['episodes_per_second']:>12.3f}{trl['peak_rss_mb']:>13}")
    print(f"{'ours (LoRA, shared trunk)':<36}{ours['episodes_per_second']:>12.3f}{ours['peak_rss_mb']:>13}")
    print(f"ratio: {speed:.2f}x the episodes per second at {memory:.2f}x the peak memory")
    goal = speed >= 2 and memory <= 0.5
    print(f"goal: >= 2x episodes/s at <= 0.5x peak memory -> {'met' if goal else 'missed'}")

    long = None
    if args.minutes > 0:
        rm = reward_model_folder(train)
        cmd = [sys.executable, "-m", "bench.ppo", "--worker", "long", "--policy", str(policy), "--scorer", str(rm)]
        cmd += ["--prompts", str(train_file), "--eval-prompts", str(held_file), "--minutes", str(args.minutes)]
        long = run_worker(cmd, "long")
        print(
            f"\nours, {args.minutes:g} minutes ({long['steps']} steps, {long['episodes']} episodes) against the MiniLM reward model: "
            f"held-out reward {long['held_out_reward_before']:.3f} -> {long['held_out_reward_after']:.3f} "
            f"(gain {long['reward_gain']:+.3f}), KL to the reference {long['held_out_kl_after']:.2f} nats per reply"
        )
    path = write_result(
        "ppo",
        {
            "command": f"python -m bench.ppo --steps {args.steps} --minutes {args.minutes:g}",
            "settings": {**SETTINGS, "steps": args.steps, "prompts": len(train), "held_out_prompts": len(held)},
            "trl_1_12": trl,
            "ours": ours,
            "speed_ratio": round(speed, 2),
            "memory_ratio": round(memory, 2),
            "goal_met": goal,
            "long_run": long,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
