"""Reward-model variants on the shared HH pairs, 5-fold cross-validated (issue 13, item 1).

    .venv/bin/python -m bench.reward_cv [--pairs 1500] [--threads 2] [--transcript] [--finetune]

Data: ../shared/data/hh-rlhf-harmless-dev.jsonl.gz, 1,500 HH-RLHF harmless-base pairs, cut into
five folds (seed 0); each variant is trained on four and scored on the fifth, five times, so
every pair is scored once by a model that never saw it. Accuracy counts a tie as half.

Variants (features are computed once per base and format, then cached in bench/.cache):
- ``shorter reply wins``: no model, the baseline to beat.
- frozen bases with a linear Bradley-Terry head (L2 strength picked by an inner 4-fold CV on
  the training folds only): MiniLM mean pooled; SmolLM2 as the studio's ``method: head``
  reads it (last token, chat template, prompt's last turns within 128 tokens); SmolLM2's mean
  over the reply tokens and a middle layer; the reply's log-probability under SmolLM2; the
  same with the transcript format (``--transcript``).
- ensembles: several heads on bootstrap resamples (their spread is the uncertainty), and
  heads on two bases averaged.
- ``--finetune``: the MiniLM recipe of ``recipes/reward-minilm.yaml`` (full fine-tune, trl's
  RewardTrainer), trained five times: about 40 minutes on 2 cores.

Prints a table and writes bench/results/reward_cv.json.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from bench.common import ROOT, hh_pairs, write_result
from rlhf.preference_data import Pair, pair_from_record

CACHE = ROOT / "bench" / ".cache" / "reward_cv"
FOLDS = 5


def folds(n: int, k: int = FOLDS, seed: int = 0) -> list[list[int]]:
    from rlhf.features import folds as make

    return make(n, k, seed)


def accuracy(margins: torch.Tensor) -> float:
    """Pairwise accuracy with ties counted as half."""
    from rlhf.features import pair_accuracy

    return pair_accuracy(margins)


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 4), round(centre + half, 4)


def cached(name: str, make) -> dict:
    path = CACHE / f"{name}.pt"
    if path.is_file():
        return torch.load(path)
    start = time.perf_counter()
    value = make()
    value["seconds"] = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(value, path)
    return value


def minilm_features(pairs: list[Pair]) -> dict:
    from rlhf.features import FrozenFeatures

    extractor = FrozenFeatures.load("minilm-l6", max_length=256)
    return {
        "mean_chosen": extractor.features([(p.prompt, p.chosen) for p in pairs]),
        "mean_rejected": extractor.features([(p.prompt, p.rejected) for p in pairs]),
    }


def smollm2_features(pairs: list[Pair], prompt_format: str) -> dict:
    from rlhf.features import FrozenFeatures

    extractor = FrozenFeatures.load("smollm2-135m-instruct", prompt_format=prompt_format, max_prompt_tokens=128, max_reply_tokens=128)
    out: dict = {}
    for side in ("chosen", "rejected"):
        extras = extractor.decoder_features([(p.prompt, getattr(p, side)) for p in pairs])
        for key, value in extras.items():
            out[f"{key}_{side}"] = value
    return out


def fit_head(diff: torch.Tensor, l2: float, steps: int = 200, weights: torch.Tensor | None = None) -> torch.Tensor:
    from rlhf.features import fit_bradley_terry

    return fit_bradley_terry(diff, l2=l2, steps=steps, weights=weights)


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    return [(x - mean) / std for x in (train, *others)]


def pick_l2(diff: torch.Tensor) -> float:
    from rlhf.features import pick_l2 as pick

    return pick(diff)


def cv_linear(chosen: torch.Tensor, rejected: torch.Tensor, parts: list[list[int]], ensemble: int = 1) -> dict:
    """Out-of-fold margins of a linear BT head (an ensemble of bootstrap heads if ensemble > 1)."""
    n = len(chosen)
    margins = torch.zeros(n)
    spread = torch.zeros(n)
    l2s = []
    for i, held in enumerate(parts):
        train = [j for k, f in enumerate(parts) if k != i for j in f]
        c_tr, r_tr, c_te, r_te = standardise(chosen[train], rejected[train], chosen[held], rejected[held])
        diff = c_tr - r_tr
        l2 = pick_l2(diff)
        l2s.append(l2)
        if ensemble == 1:
            w = fit_head(diff, l2)
            margins[held] = (c_te - r_te) @ w
            continue
        gen = torch.Generator().manual_seed(i)
        heads = []
        for _ in range(ensemble):
            counts = torch.bincount(torch.randint(len(train), (len(train),), generator=gen), minlength=len(train)).float()
            heads.append(fit_head(diff, l2, weights=counts))
        w = torch.stack(heads, 1)  # (d, k)
        per_head = (c_te - r_te) @ w
        margins[held] = per_head.mean(1)
        spread[held] = per_head.std(1)
    return {"margins": margins, "spread": spread, "l2": l2s}


def summarise(name: str, margins: torch.Tensor, seconds: float, parts: list[list[int]], note: str = "") -> dict:
    per_fold = [accuracy(margins[f]) for f in parts]
    acc = accuracy(margins)
    row = {
        "variant": name,
        "cv_accuracy": round(acc, 4),
        "interval_95": wilson(acc, len(margins)),
        "fold_accuracies": [round(a, 4) for a in per_fold],
        "fold_sd": round(float(torch.tensor(per_fold).std()), 4),
        "seconds": round(seconds, 1),
    }
    if note:
        row["note"] = note
    print(f"{name:58s} {acc:.3f}  [{row['interval_95'][0]:.3f}, {row['interval_95'][1]:.3f}]  sd {row['fold_sd']:.3f}  {seconds:7.0f} s")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--transcript", action="store_true", help="also SmolLM2 features in the transcript format")
    parser.add_argument("--finetune", action="store_true", help="also the fine-tuned MiniLM recipe, five times (~40 min)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = [pair_from_record(r, f"record {i}") for i, r in enumerate(hh_pairs(args.pairs))]
    parts = folds(len(pairs))
    rows = []

    lengths = torch.tensor([[len(p.chosen), len(p.rejected)] for p in pairs], dtype=torch.float)
    rows.append(summarise("shorter reply wins (no model)", lengths[:, 1] - lengths[:, 0], 0.0, parts))

    tag = f"{len(pairs)}"
    mini = cached(f"minilm-{tag}", lambda: minilm_features(pairs))
    chat = cached(f"smollm2-chat-{tag}", lambda: smollm2_features(pairs, "chat"))

    def linear(name: str, chosen, rejected, feature_seconds: float, ensemble: int = 1, note: str = "") -> dict:
        start = time.perf_counter()
        out = cv_linear(chosen, rejected, parts, ensemble)
        head_seconds = (time.perf_counter() - start) / FOLDS
        row = summarise(name, out["margins"], feature_seconds + head_seconds, parts, note)
        row["l2"] = out["l2"]
        out["row"] = row
        rows.append(row)
        return out

    linear("MiniLM frozen, mean pooled, linear head", mini["mean_chosen"], mini["mean_rejected"], mini["seconds"])
    linear("SmolLM2 frozen, chat template, last token", chat["last_chosen"], chat["last_rejected"], chat["seconds"])
    reply_mean = linear("SmolLM2 frozen, chat template, mean over reply", chat["mean_chosen"], chat["mean_rejected"], chat["seconds"])
    linear("SmolLM2 frozen, chat template, middle layer mean", chat["middle_chosen"], chat["middle_rejected"], chat["seconds"])
    lp = chat["logprob_chosen"] - chat["logprob_rejected"]
    rows.append(summarise("SmolLM2 reply mean log-prob (no training)", lp, chat["seconds"], parts))
    both = [torch.cat([chat[f"last_{s}"], chat[f"mean_{s}"], chat[f"middle_{s}"]], 1) for s in ("chosen", "rejected")]
    linear("SmolLM2 frozen, last token + reply mean + middle", *both, chat["seconds"])
    linear(
        "SmolLM2 frozen, last token, 5 bootstrap heads",
        chat["last_chosen"],
        chat["last_rejected"],
        chat["seconds"],
        ensemble=5,
        note="margin = mean of 5 heads; spread = their sd",
    )
    ens = linear(
        "SmolLM2 frozen, reply mean, 5 bootstrap heads (recipes/reward-smollm2-heads.yaml)",
        chat["mean_chosen"],
        chat["mean_rejected"],
        chat["seconds"],
        ensemble=5,
        note="margin = mean of 5 heads; spread = their sd",
    )
    # Two bases averaged: each head's out-of-fold margins, standardised per fold, then summed.
    mini_out = cv_linear(mini["mean_chosen"], mini["mean_rejected"], parts)
    combo = torch.zeros(len(pairs))
    for f in parts:
        for m in (reply_mean["margins"], mini_out["margins"]):
            combo[f] += m[f] / m[f].std().clamp(min=1e-6)
    rows.append(summarise("ensemble: SmolLM2 reply-mean head + MiniLM head", combo, chat["seconds"] + mini["seconds"], parts))

    # Is the ensemble's spread useful? Accuracy on the pairs it is most and least sure of.
    sure = ens["margins"].abs() / ens["spread"].clamp(min=1e-6)
    order = sure.argsort(descending=True)
    third = len(order) // 3
    calibration = {
        "most_sure_third_accuracy": round(accuracy(ens["margins"][order[:third]]), 4),
        "least_sure_third_accuracy": round(accuracy(ens["margins"][order[-third:]]), 4),
    }
    print(
        f"5-head reply-mean ensemble: accuracy on its surest third {calibration['most_sure_third_accuracy']:.3f}, "
        f"least sure third {calibration['least_sure_third_accuracy']:.3f}"
    )

    if args.transcript:
        tr = cached(f"smollm2-transcript-{tag}", lambda: smollm2_features(pairs, "transcript"))
        linear("SmolLM2 frozen, transcript format, last token", tr["last_chosen"], tr["last_rejected"], tr["seconds"])

    if args.finetune:
        rows.append(finetune_minilm(pairs, parts))

    write_result(
        "reward_cv",
        {
            "command": "python -m bench.reward_cv " + " ".join(f"--{k}" for k in ("transcript", "finetune") if getattr(args, k)),
            "data": f"{len(pairs)} shared HH-RLHF harmless pairs, {FOLDS}-fold cross-validation (seed 0)",
            "threads": args.threads,
            "goal": 0.68,
            "variants": rows,
            "ensemble_uncertainty": calibration,
        },
    )


def finetune_minilm(pairs: list[Pair], parts: list[list[int]]) -> dict:
    """The MiniLM fine-tune recipe, trained once per fold through the studio's own trainer."""
    import json
    import shutil
    import tempfile

    from rlhf.config import load_config
    from rlhf.registry import ModelRegistry
    from rlhf.reward import RewardRunConfig, train_reward
    from rlhf.runs import RunDir, run_guard
    from rlhf.scoring import RewardScorer

    margins = torch.zeros(len(pairs))
    start = time.perf_counter()
    recipe = load_config(RewardRunConfig, ROOT / "recipes" / "reward-minilm.yaml")
    for i, held in enumerate(parts):
        work = Path(tempfile.mkdtemp(prefix="reward-cv-"))
        try:
            train = [pairs[j] for k, f in enumerate(parts) if k != i for j in f]
            data = work / "train.jsonl"
            data.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n" for p in train))
            cfg = RewardRunConfig(**{**recipe.__dict__, "data": str(data), "eval_fraction": 0.0, "register_as": f"cv-{i}"})
            run = RunDir.create(work / "runs", "reward", cfg)
            with run_guard(run) as stop:
                train_reward(cfg, run, stop, registry=ModelRegistry(work / "models.json"))
            scorer = RewardScorer.load(run.checkpoint_dir)
            test = [pairs[j] for j in held]
            c = torch.tensor(scorer.score_batch([(p.prompt, p.chosen) for p in test]))
            r = torch.tensor(scorer.score_batch([(p.prompt, p.rejected) for p in test]))
            margins[held] = c - r
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return summarise("MiniLM fine-tuned (recipes/reward-minilm.yaml)", margins, (time.perf_counter() - start) / FOLDS, parts)


if __name__ == "__main__":
    main()
