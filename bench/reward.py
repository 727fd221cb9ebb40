"""Reward models on real human preferences: our trainer against plain trl RewardTrainer.

    .venv/bin/python -m bench.reward [--epochs 2] [--lr 1e-4]

Data: ../shared/data/hh-rlhf-harmless-dev.jsonl.gz (1,500 HH-RLHF harmless pairs), shuffled
with seed 0 and split 1,200 train / 300 held out, the same for both. Base: all-MiniLM-L6-v2.

- plain trl: RewardTrainer with its defaults (1 epoch, batch 16, max_length 256) on the whole
  transcripts; it silently drops pairs longer than max_length.
- ours: rlhf.reward (prompt and reply as a pair, truncated from the left so the reply survives,
  no pair dropped).

Both are scored on all 300 held-out pairs, each in its own input format. Prints held-out
accuracy and wall time, and the "shorter reply wins" baseline.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch

from bench.common import ROOT, hh_pairs, write_result
from rlhf.preference_data import pair_from_record
from rlhf.registry import ModelRegistry
from rlhf.reward import RewardRunConfig, evaluate_pairs, train_reward
from rlhf.runs import RunDir, run_guard


def plain_trl(train_rows: list[dict], held_out: list[dict], work: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    folder = ModelRegistry().resolve("minilm-l6")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.eos_token = tokenizer.sep_token  # MiniLM has no end token; trl needs one
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)
    args = RewardConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=16,
        num_train_epochs=1,
        max_length=256,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=10,
    )
    start = time.perf_counter()
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows), processing_class=tokenizer)
    kept = len(trainer.train_dataset)
    trainer.train()
    seconds = time.perf_counter() - start

    model = trainer.model.eval()

    @torch.inference_mode()
    def score(texts: list[str]) -> list[float]:
        out = []
        for i in range(0, len(texts), 32):
            batch = tokenizer(
                [t + tokenizer.eos_token for t in texts[i : i + 32]], truncation=True, max_length=256, padding=True, return_tensors="pt"
            )
            out += model(**batch).logits[:, 0].tolist()
        return out

    chosen, rejected = score([r["chosen"] for r in held_out]), score([r["rejected"] for r in held_out])
    acc = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(held_out)
    return {
        "seconds": round(seconds, 1),
        "held_out_accuracy": round(acc, 4),
        "train_pairs_used": kept,
        "train_pairs_dropped": len(train_rows) - kept,
    }


def ours(train_rows: list[dict], held_out: list[dict], work: Path, epochs: float, lr: float, **settings) -> dict:
    import json

    train_file, eval_file = work / "train.jsonl", work / "eval.jsonl"
    train_file.write_text("\n".join(json.dumps(r) for r in train_rows))
    eval_file.write_text("\n".join(json.dumps(r) for r in held_out))
    cfg = RewardRunConfig(
        data=str(train_file),
        eval_data=str(eval_file),
        base_model="minilm-l6",
        epochs=epochs,
        learning_rate=lr,
        batch_size=16,
        logging_steps=10,
        save_steps=10_000,
        register_as="bench-reward-minilm",
        **settings,
    )
    run = RunDir.create(work / "runs", "reward", {})
    start = time.perf_counter()
    with run_guard(run, handle_sigterm=False) as stop:
        metrics = train_reward(cfg, run, stop)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 1),
        "held_out_accuracy": round(metrics["eval_accuracy"], 4),
        "train_pairs_used": metrics["train_pairs"],
        "train_pairs_dropped": 0,
        "epochs": epochs,
        "learning_rate": lr,
        **settings,
        "checkpoint": str(run.checkpoint_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--skip-trl", action="store_true", help="train ours only (bench/ppo.py uses this to make its reward model)")
    args = parser.parse_args()
    rows = hh_pairs()
    random.Random(0).shuffle(rows)
    train_rows, held_out = rows[:1200], rows[1200:]
    pairs = [pair_from_record(r, f"held-out {n}") for n, r in enumerate(held_out, 1)]
    shorter = sum(len(p.chosen) < len(p.rejected) for p in pairs) / len(pairs)

    class Shorter:
        def score_batch(self, batch):
            return [-len(reply) for _, reply in batch]

    assert abs(evaluate_pairs(Shorter(), pairs)["accuracy"] - shorter) < 0.01
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mine = ours(train_rows, held_out, work, args.epochs, args.lr)
        # Kept for bench/ppo.py, which tunes a policy against this reward model.
        cached = ROOT / "bench" / ".cache" / "reward-minilm"
        shutil.rmtree(cached, ignore_errors=True)
        shutil.copytree(mine.pop("checkpoint"), cached)
        if args.skip_trl:
            print(f"ours: held-out accuracy {mine['held_out_accuracy']:.4f} in {mine['seconds']:.0f} s; checkpoint in {cached}")
            return
        baseline = plain_trl(train_rows, held_out, work)
    print(f"{'trainer':<30}{'held-out acc':>14}{'wall s':>9}{'pairs used':>12}{'dropped':>9}")
    print(f"{'shorter reply wins':<30}{shorter:>14.4f}{'-':>9}{'-':>12}{'-':>9}")
    for name, r in (("plain trl RewardTrainer", baseline), (f"ours ({args.epochs:g} ep, lr {args.lr:g})", mine)):
        print(f"{name:<30}{r['held_out_accuracy']:>14.4f}{r['seconds']:>9.1f}{r['train_pairs_used']:>12}{r['train_pairs_dropped']:>9}")
    goal = mine["held_out_accuracy"] >= 0.65 and mine["seconds"] <= 900
    print(f"goal: ours >= 0.65 held-out accuracy within 15 min -> {'met' if goal else 'missed'}")
    path = write_result(
        "reward",
        {
            "command": f"python -m bench.reward --epochs {args.epochs:g} --lr {args.lr:g}",
            "split": "1200 train / 300 held out, seed 0",
            "shorter_reply_wins": round(shorter, 4),
            "plain_trl": baseline,
            "ours": mine,
            "goal_met": goal,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
