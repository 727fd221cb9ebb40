"""Instruction tuning: our LoRA SFT of SmolLM2 against trl's SFTTrainer with its default settings.

    .venv/bin/python -m bench.sft [--examples 500]

Data: the first human turn and the assistant's answer to it in the chosen conversations of
../shared/data/hh-rlhf-harmless-dev.jsonl.gz
(500 training examples, 50 held out), the same for both. One epoch each (trl's default is 3;
one keeps the bench short, and tokens per second do not depend on it).

- ours: ``rlhf.sft`` with LoRA (r 16, lr 2e-4, batch 8, max_length 512), loss on the reply only.
- trl: SFTTrainer with its defaults (full fine-tune, lr 2e-5, batch 8, max_length 1024), on the
  same examples in conversational prompt/completion form (so it also applies the chat template
  and, by its default, counts the completion only).

Each trainer runs in its own process (its own peak memory). Prints training tokens per second,
peak resident memory and the held-out loss (reply tokens) before and after, with the ratios.
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


def examples(n_train: int, n_eval: int) -> tuple[list[dict], list[dict]]:
    """The first human turn and the assistant's answer to it (in the chosen conversation)."""
    from bench.ppo import first_human_turn

    rows, seen = [], set()
    for row in hh_pairs():
        prompt = first_human_turn(row["chosen"])
        reply = row["chosen"].split("Assistant:", 1)[-1].split("Human:", 1)[0].strip()
        if prompt and reply and prompt not in seen:
            seen.add(prompt)
            rows.append({"prompt": prompt, "response": reply})
    if len(rows) < n_train + n_eval:
        raise SystemExit(f"only {len(rows)} examples; ask for fewer with --examples")
    return rows[:n_train], rows[n_train : n_train + n_eval]


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def ours_worker(args: argparse.Namespace) -> None:
    from rlhf.runs import RunDir, run_guard
    from rlhf.sft import SFTRunConfig, encode_example, train_sft

    cfg = SFTRunConfig(
        data=args.train, eval_data=args.eval, base_model="smollm2-135m-instruct", method="lora", epochs=1, batch_size=8,
        max_length=512, learning_rate=2e-4, logging_steps=10, save_steps=100_000, register_as="bench-sft-lora",
    )  # fmt: skip
    run = RunDir.create(Path(args.work) / "runs", "sft", {})
    with run_guard(run, handle_sigterm=False) as stop:
        metrics = train_sft(cfg, run, stop)
    runtime = next(e["train_runtime"] for e in reversed(run.events()) if "train_runtime" in e)
    from rlhf.instruction_data import read_examples
    from rlhf.loading import load_tokenizer
    from rlhf.registry import ModelRegistry

    tok = load_tokenizer(ModelRegistry().resolve("smollm2-135m-instruct"))
    tokens = sum(len(encode_example(tok, ex, cfg.max_length)["input_ids"]) for ex in read_examples(Path(args.train)))
    out = {
        "train_seconds": round(runtime, 1),
        "tokens": tokens,
        "tokens_per_second": tokens / runtime,
        "peak_rss_mb": peak_mb(),
        "held_out_loss_before": metrics["eval_loss_before"],
        "held_out_loss_after": metrics["eval_loss"],
        "trainable_params": metrics["trainable_params"],
    }
    Path(args.out).write_text(json.dumps(out))


def trl_worker(args: argparse.Namespace) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from rlhf.loading import load_tokenizer
    from rlhf.registry import ModelRegistry

    folder = ModelRegistry().resolve("smollm2-135m-instruct")
    tok = load_tokenizer(folder, padding_side="right")

    def conv(path: str) -> Dataset:
        rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
        return Dataset.from_list(
            [
                {"prompt": [{"role": "user", "content": r["prompt"]}], "completion": [{"role": "assistant", "content": r["response"]}]}
                for r in rows
            ]
        )

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config = SFTConfig(
        output_dir=str(Path(args.work) / "trl"),
        num_train_epochs=1,
        per_device_eval_batch_size=8,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=10,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=conv(args.train), eval_dataset=conv(args.eval), processing_class=tok)
    before = trainer.evaluate()["eval_loss"]
    start = time.perf_counter()
    result = trainer.train()
    runtime = result.metrics.get("train_runtime", time.perf_counter() - start)
    after = trainer.evaluate()["eval_loss"]
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    out = {
        "train_seconds": round(runtime, 1),
        "tokens": tokens,
        "tokens_per_second": tokens / runtime,
        "peak_rss_mb": peak_mb(),
        "held_out_loss_before": before,
        "held_out_loss_after": after,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    Path(args.out).write_text(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    for name in ("train", "eval", "work", "out"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "ours":
        return ours_worker(args)
    if args.worker == "trl":
        return trl_worker(args)

    train, held = examples(args.examples, 50)
    work = Path(tempfile.mkdtemp())
    (work / "train.jsonl").write_text("\n".join(json.dumps(r) for r in train) + "\n")
    (work / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in held) + "\n")
    results = {}
    for name in ("trl", "ours"):
        out = work / f"{name}.json"
        cmd = [
            sys.executable,
            "-m",
            "bench.sft",
            "--worker",
            name,
            "--train",
            str(work / "train.jsonl"),
            "--eval",
            str(work / "eval.jsonl"),
        ]
        print(f"running {name} ...", flush=True)
        subprocess.run([*cmd, "--work", str(work), "--out", str(out)], cwd=ROOT, check=True, env={**os.environ})
        results[name] = json.loads(out.read_text())
    trl, ours = results["trl"], results["ours"]
    print(f"\n{'trainer':<34}{'tokens/s':>10}{'peak MB':>9}{'loss before':>13}{'loss after':>12}{'trained':>12}")
    for label, r in (("trl SFTTrainer defaults (full)", trl), ("ours (LoRA r16)", ours)):
        print(
            f"{label:<34}{r['tokens_per_second']:>10.1f}{r['peak_rss_mb']:>9}{r['held_out_loss_before']:>13.3f}"
            f"{r['held_out_loss_after']:>12.3f}{r['trainable_params']:>12,}"
        )
    speed, memory = ours["tokens_per_second"] / trl["tokens_per_second"], ours["peak_rss_mb"] / trl["peak_rss_mb"]
    print(f"ratio: {speed:.2f}x the tokens per second at {memory:.2f}x the peak memory")
    path = write_result(
        "sft",
        {
            "command": f"python -m bench.sft --examples {args.examples}",
            "data": f"{len(train)} train / {len(held)} held-out HH-RLHF examples (first human turn, the answer to it)",
            "trl_defaults": trl,
            "ours": ours,
            "speed_ratio": round(speed, 2),
            "memory_ratio": round(memory, 2),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
