"""DPO on a tiny model: held-out preference accuracy and margin go up; the result chats."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rlhf.dpo import DPORunConfig, train_dpo
from rlhf.registry import ModelRegistry
from rlhf.runs import RunDir, run_guard


def test_dpo_learns_the_preference(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path) -> None:
    registry = ModelRegistry()
    registry.add(tiny_lm_dir, name="tiny")
    rows = [{"prompt": f"question {i} about the sea", "chosen": "The sea is wide.", "rejected": "def add(a, b)"} for i in range(40)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = DPORunConfig(
        data=str(data), policy="tiny", learning_rate=5e-3, epochs=3, batch_size=8, max_length=64, eval_fraction=0.2,
        lora_r=4, lora_alpha=8, logging_steps=2, save_steps=1000, register_as="tiny-dpo",
        check_judge="function:tests.rlhf.judge_fns:longer_is_better", check_prompts=6,
    )  # fmt: skip
    run = RunDir.create(tmp_path / "runs", "dpo", {})
    with run_guard(run, handle_sigterm=False) as stop:
        metrics = train_dpo(cfg, run, stop, registry=registry)
    assert metrics["eval_margins"] > metrics["eval_margins_before"] + 0.1, metrics
    assert metrics["eval_accuracies"] >= 0.9 and metrics["eval_loss"] < metrics["eval_loss_before"]
    check = [metrics[f"judged_win_rate_vs_start{end}"] for end in ("_low", "", "_high")]
    assert 0 <= check[0] <= check[1] <= check[2] <= 1
    assert (run.path / "check" / "replies.jsonl").is_file() and metrics["check_judge"].startswith("function")
    entry = registry.get("tiny-dpo")
    assert entry.kind == "causal-lm" and entry.lineage["method"] == "dpo"
    assert "DPO (LoRA, beta 0.1)" in (run.checkpoint_dir / "README.md").read_text()
    from rlhf.loading import load_causal_lm

    tuned, tok = load_causal_lm("tiny-dpo", registry, device="cpu", dtype=torch.float32)
    base, _ = load_causal_lm("tiny", registry, device="cpu", dtype=torch.float32)
    assert any(not torch.equal(a, b) for a, b in zip(tuned.parameters(), base.parameters(), strict=True))
