"""DPO on a CPU budget: training tokens/s and minutes per 1,000 pairs, ours before and after, trl's defaults.

    .venv/bin/python -m bench.dpo [--pairs 24] [--variants ...] [--full 1000]
    .venv/bin/python -m bench.dpo --variants --full 400     # only the full run, kept beside the variants

Data: the HH-RLHF harmless pairs of ../shared/data (prompts as chat turns), the first
``--pairs`` usable ones, one epoch, the same for every variant (trl's defaults, a full
fine-tune at max_length 1024, get the first ``--trl-pairs`` of them: compare tokens/s there). Each variant runs in its own
process (its own peak memory) with the same torch threads:

- ``trl-defaults``: trl's DPOTrainer with DPOConfig's defaults (full fine-tune with a reference
  copy, batch 8, max_length 1024, lr 1e-6) on the same conversational pairs.
- ``before``: the studio's recipe before this change (LoRA r 16 on q/k/v/o of every layer,
  batch 4, max_length 512, the whole prompt, random batches, trl's LM head over every position).
- one option at a time on top of ``before``: ``+grouped`` (batches of similar length),
  ``+replies-only`` (the LM head over reply tokens only), ``+prompt128`` (the prompt's last
  turns within 128 tokens, max_length 384), ``+precompute`` (reference log-probs in one pass
  before training);
- ``after``: the new defaults of ``rlhf.dpo`` (all three of grouped, replies-only, prompt128),
  and options on top of it: ``after+top15`` (LoRA on the top 15 of 30 layers: backward stops
  there), ``after+prompt64`` (64 prompt tokens, max_length 320), ``after+batch8``.

Printed per variant: training seconds, tokens trained on (prompt + reply, both replies, after
each variant's truncation) per second, pairs per second, the projected minutes for one epoch
over 1,000 pairs, peak memory; and the ratio of each to trl's defaults and to ``before``.
``--full N`` then trains the ``after`` recipe on N pairs (10% held out) the way a user would
(``rlhf-studio train dpo``, the end-of-run check off) and reports the whole run's time and the
held-out preference accuracy (ties as half) before and after.
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

from bench.common import ROOT, SHARED_DATA, write_result

POLICY = "smollm2-135m-instruct"
BEFORE = {"max_length": 512, "max_prompt_tokens": 511, "group_by_length": False, "replies_only": False, "precompute_reference": False}
VARIANTS = {
    "trl-defaults": None,
    "before": BEFORE,
    "+grouped": {**BEFORE, "group_by_length": True},
    "+replies-only": {**BEFORE, "replies_only": True},
    "+prompt128": {**BEFORE, "max_length": 384, "max_prompt_tokens": 128},
    "+precompute": {**BEFORE, "precompute_reference": True},
    "after": {},  # the DPORunConfig defaults
    "after+top15": {"lora_layers": 15},
    "after+prompt64": {"max_prompt_tokens": 64, "max_length": 320},
    "after+batch8": {"batch_size": 8},
}


def write_pairs(n: int, out: Path) -> Path:
    from rlhf.preference_data import read_pairs

    pairs = read_pairs(SHARED_DATA / "hh-rlhf-harmless-dev.jsonl.gz", skip_invalid=True)
    pairs = [p for p in pairs if p.chosen.strip() and p.rejected.strip()][:n]
    out.write_text("\n".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) for p in pairs) + "\n")
    return out


def peak_mb() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def trained_tokens(tok, pairs, max_prompt_tokens: int | None, max_length: int) -> int:
    """Tokens of prompt + chosen and prompt + rejected as the trainer sees them, after truncation."""
    from rlhf.dpo import conversational

    data = conversational(pairs, tok if max_prompt_tokens else None, max_prompt_tokens or 0)
    total = 0
    for row in data:
        for key in ("chosen", "rejected"):
            ids = tok.apply_chat_template(row["prompt"] + row[key], tokenize=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            total += min(len(ids), max_length)
    return total


def worker(args: argparse.Namespace) -> None:
    import torch

    from rlhf.loading import load_tokenizer
    from rlhf.preference_data import read_pairs
    from rlhf.registry import ModelRegistry

    torch.set_num_threads(args.threads)
    pairs = read_pairs(Path(args.data))
    tok = load_tokenizer(ModelRegistry().resolve(POLICY), padding_side="right")
    options = VARIANTS[args.worker]
    if options is None:
        seconds, trainable, max_length = trl_defaults(args, pairs, tok)
        tokens = trained_tokens(tok, pairs, None, max_length)
    else:
        from rlhf.dpo import DPORunConfig, train_dpo
        from rlhf.runs import RunDir, run_guard

        cfg = DPORunConfig(
            data=args.data, policy=POLICY, eval_fraction=0.0, check_judge="", save_steps=100_000, logging_steps=5,
            register_as="bench-dpo-" + "".join(c if c.isalnum() else "-" for c in args.worker).strip("-"), threads=args.threads, **options,
        )  # fmt: skip
        run = RunDir.create(Path(args.work) / "runs", "dpo", {})
        with run_guard(run, handle_sigterm=False) as stop:
            metrics = train_dpo(cfg, run, stop)
        events = run.events()
        # training, plus what comes before it: tokenising and, with precompute_reference, the reference pass
        seconds = next(e["train_runtime"] for e in reversed(events) if "train_runtime" in e)
        seconds += next(e["prepare_seconds"] for e in events if "prepare_seconds" in e)
        trainable = metrics["trainable_params"]
        tokens = trained_tokens(tok, pairs, cfg.max_prompt_tokens, cfg.max_length)
    Path(args.out).write_text(
        json.dumps(
            {
                "train_seconds": round(seconds, 1),
                "tokens": tokens,
                "pairs": len(pairs),
                "trainable_params": trainable,
                "peak_rss_mb": peak_mb(),
            }
        )
    )


def trl_defaults(args: argparse.Namespace, pairs, tok) -> tuple[float, int, int]:
    import torch
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from rlhf.dpo import conversational
    from rlhf.registry import ModelRegistry

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(ModelRegistry().resolve(POLICY), dtype=torch.float32)
    config = DPOConfig(
        output_dir=str(Path(args.work) / "trl"), num_train_epochs=1, report_to=[], save_strategy="no", disable_tqdm=True,
        logging_steps=5, use_cpu=not torch.cuda.is_available(), gradient_checkpointing=False,
    )  # fmt: skip
    start = time.perf_counter()
    trainer = DPOTrainer(model=model, args=config, train_dataset=conversational(pairs), processing_class=tok)
    prepare = time.perf_counter() - start  # tokenising and copying the reference model
    result = trainer.train()
    seconds = prepare + result.metrics.get("train_runtime", time.perf_counter() - start)
    return seconds, sum(p.numel() for p in model.parameters() if p.requires_grad), config.max_length


def full_run(n: int, threads: int, work: Path) -> dict:
    """The new recipe on n pairs from the command line, as a user runs it."""
    data = write_pairs(n, work / f"pairs-{n}.jsonl")
    config = work / "dpo.yaml"
    config.write_text(f"data: {data}\npolicy: {POLICY}\ncheck_judge: ''\nthreads: {threads}\nregister_as: bench-dpo-full\n")
    runs = work / "full-runs"
    env = {**os.environ, "TQDM_DISABLE": "1", "STUDIO_HOME": str(work / "home")}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "rlhf", "train", "dpo", "--config", str(config), "--runs-dir", str(runs)], check=True, cwd=ROOT, env=env
    )
    wall = time.perf_counter() - start
    metrics = json.loads(next(runs.rglob("metrics.json")).read_text())
    events = [json.loads(x) for x in next(runs.rglob("events.jsonl")).read_text().splitlines() if x.strip()]
    runtime = next(e["train_runtime"] for e in reversed(events) if "train_runtime" in e)
    runtime += next(e["prepare_seconds"] for e in events if "prepare_seconds" in e)
    keys = ("train_pairs", "eval_pairs", "eval_accuracies_before", "eval_accuracies", "eval_margins", "eval_loss_before", "eval_loss")
    return {"pairs": n, "wall_seconds": round(wall), "train_seconds": round(runtime), **{k: metrics.get(k) for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=24, help="pairs per variant (one epoch)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--trl-pairs", type=int, default=16, help="pairs for trl-defaults (slow: a full fine-tune at max_length 1024)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for every variant")
    parser.add_argument("--full", type=int, default=0, help="then train the new recipe on this many pairs from the CLI (0 = skip)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    work = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    data = write_pairs(args.pairs, work / "pairs.jsonl")
    trl_data = write_pairs(min(args.trl_pairs, args.pairs), work / "trl-pairs.jsonl")
    found: dict[str, dict] = {}
    for name in args.variants:
        out = work / f"{name.strip('+')}.json"
        cmd = [
            sys.executable,
            "-m",
            "bench.dpo",
            "--worker",
            name,
            "--data",
            str(trl_data if name == "trl-defaults" else data),
            "--work",
            str(work / name.strip("+")),
        ]
        cmd += ["--out", str(out), "--threads", str(args.threads)]
        env = {**os.environ, "STUDIO_HOME": str(work / "home"), "TQDM_DISABLE": "1"}
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        row = json.loads(out.read_text())
        row["tokens_per_second"] = round(row["tokens"] / row["train_seconds"], 1)
        row["pairs_per_second"] = round(row["pairs"] / row["train_seconds"], 3)
        row["minutes_per_1000_pairs"] = round(1000 / row["pairs_per_second"] / 60, 1)
        found[name] = row
        print(
            f"{name:>13}: {row['train_seconds']:7.1f} s  {row['tokens_per_second']:6.1f} tokens/s  {row['pairs_per_second']:.3f} pairs/s"
            f"  {row['minutes_per_1000_pairs']:6.1f} min per 1,000 pairs  peak {row['peak_rss_mb']} MB"
            f"  trainable {row['trainable_params']:,}",
            flush=True,
        )
    ratios = {}
    for name, row in found.items():
        for peer in ("trl-defaults", "before"):
            if peer in found and peer != name:
                ratios[f"{name} / {peer}"] = {
                    "pairs_per_second": round(row["pairs_per_second"] / found[peer]["pairs_per_second"], 2),
                    "tokens_per_second": round(row["tokens_per_second"] / found[peer]["tokens_per_second"], 2),
                }
    for key, value in ratios.items():
        print(f"{key}: {value['pairs_per_second']}x the pairs/s, {value['tokens_per_second']}x the tokens/s")
    previous = ROOT / "bench" / "results" / "dpo.json"
    if not args.variants and previous.exists():  # only --full: keep the variants measured before
        kept = json.loads(previous.read_text())
        found, ratios = kept.get("variants", {}), kept.get("ratios", {})
        args.pairs, args.trl_pairs = kept.get("pairs", args.pairs), kept.get("trl_pairs", args.trl_pairs)
    figures = {
        "pairs": args.pairs,
        "trl_pairs": min(args.trl_pairs, args.pairs),
        "threads": args.threads,
        "variants": found,
        "ratios": ratios,
    }
    if args.full:
        figures["full"] = full_run(args.full, args.threads, work)
        print("full run:", json.dumps(figures["full"]))
    print("written to", write_result("dpo", figures))


if __name__ == "__main__":
    main()
