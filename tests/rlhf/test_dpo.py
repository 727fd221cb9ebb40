"""DPO on a tiny model: held-out preference accuracy and margin go up; the result chats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
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
        lora_r=4, lora_alpha=8, logging_steps=2, save_steps=1000, register_as="tiny-dpo", max_prompt_tokens=32,
        check_judge="function:tests.rlhf.judge_fns:longer_is_better", check_prompts=6,
    )  # fmt: skip
    run = RunDir.create(tmp_path / "runs", "dpo", {})
    with run_guard(run, handle_sigterm=False) as stop:
        metrics = train_dpo(cfg, run, stop, registry=registry)
    assert metrics["eval_margins"] > metrics["eval_margins_before"] + 0.1, metrics
    assert metrics["eval_accuracies"] >= 0.9 and metrics["eval_loss"] < metrics["eval_loss_before"]
    # before training the policy is the reference: every pair a tie, counted half
    assert metrics["eval_accuracies_before"] == 0.5 and metrics["eval_margins_before"] == 0.0
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


def _pairs_file(tmp_path: Path, n: int = 24) -> Path:
    rows = [
        {
            "prompt": f"User: hello {i}\n\nAssistant: hi\n\nUser: question {i} about the sea",
            "chosen": "The sea is wide.",
            "rejected": "def add(a, b)",
        }
        for i in range(n)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return data


def test_dpo_that_has_not_moved_reads_half_not_zero(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path) -> None:
    """A learning rate of 0 leaves the adapter at zero: the real held-out pass finds only ties, 0.5."""
    registry = ModelRegistry()
    registry.add(tiny_lm_dir, name="tiny")
    cfg = DPORunConfig(
        data=str(_pairs_file(tmp_path)), policy="tiny", learning_rate=0.0, epochs=1, batch_size=4, max_length=64, max_prompt_tokens=32,
        eval_fraction=0.25, lora_r=4, lora_alpha=8, save_steps=1000, register_as="tiny-still", check_judge="",
    )  # fmt: skip
    run = RunDir.create(tmp_path / "runs", "dpo", {})
    with run_guard(run, handle_sigterm=False) as stop:
        metrics = train_dpo(cfg, run, stop, registry=registry)
    assert metrics["eval_accuracies"] == 0.5 and abs(metrics["eval_margins"]) < 1e-6, metrics
    assert abs(metrics["eval_loss"] - math.log(2)) < 1e-5


def test_dpo_cpu_options_train_fewer_parameters_and_still_learn(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path) -> None:
    """LoRA on the top layer only, precomputed reference log-probs, length-grouped batches."""
    registry = ModelRegistry()
    registry.add(tiny_lm_dir, name="tiny")
    common = dict(
        data=str(_pairs_file(tmp_path, 40)), policy="tiny", learning_rate=5e-3, epochs=3, batch_size=8, max_length=64,
        max_prompt_tokens=24, eval_fraction=0.2, lora_r=4, lora_alpha=8, save_steps=1000, check_judge="",
    )  # fmt: skip
    found = {}
    for name, extra in (("all", {"group_by_length": False}), ("top", {"lora_layers": 1, "precompute_reference": True})):
        run = RunDir.create(tmp_path / "runs", "dpo", {})
        with run_guard(run, handle_sigterm=False) as stop:
            found[name] = train_dpo(DPORunConfig(**common, register_as=f"tiny-{name}", **extra), run, stop, registry=registry)
    assert found["top"]["trainable_params"] * 2 == found["all"]["trainable_params"]  # one of the two layers
    for metrics in found.values():
        assert metrics["eval_margins"] > 0.1 and metrics["eval_accuracies"] > 0.5, metrics


def test_dpo_config_prompt_budget_and_refusals() -> None:
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        DPORunConfig(data="x.jsonl", max_prompt_tokens=0)
    # a prompt budget that would fill max_length leaves half of it for the replies
    assert DPORunConfig(data="x.jsonl", max_length=64).prompt_budget == 32
    assert DPORunConfig(data="x.jsonl", max_length=384, max_prompt_tokens=128).prompt_budget == 128
    with pytest.raises(ValueError, match="lora_layers"):
        DPORunConfig(data="x.jsonl", lora_layers=-1)


def test_last_turns_keeps_the_end_of_the_conversation(tiny_lm) -> None:
    from rlhf.preference_data import conversation_tokens, last_turns, transcript_messages

    _, tok = tiny_lm
    turns = transcript_messages("User: first question here\n\nAssistant: first answer\n\nUser: the last question")
    assert last_turns(turns, tok, 10_000) == turns  # fits: unchanged
    need_last = conversation_tokens(tok, turns[-1:])
    kept = last_turns(turns, tok, need_last)
    assert kept == turns[-1:]  # earlier turns dropped whole; starts with the user
    long = [{"role": "user", "content": " ".join(f"word{i}" for i in range(200)) + " THE END"}]
    cut = last_turns(long, tok, 40)
    assert conversation_tokens(tok, cut) <= 40 and cut[0]["content"].endswith("THE END") and "word0 " not in cut[0]["content"]


def test_scoring_only_the_replies_changes_no_log_prob(tmp_path: Path, tiny_lm_dir: Path) -> None:
    """The CPU shortcut (the LM head over reply tokens only) gives the same held-out figures."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rlhf.dpo import conversational, held_out_metrics, replies_scored_only
    from rlhf.preference_data import read_pairs

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    data = conversational(read_pairs(_pairs_file(tmp_path, 8)), tok, 24)
    lora = LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # not a no-op
    args = DPOConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, per_device_eval_batch_size=4, max_length=64)
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tok, peft_config=lora)
    every_position = held_out_metrics(trainer, 0.1, "sigmoid")
    with replies_scored_only():
        replies_only = held_out_metrics(trainer, 0.1, "sigmoid")
    assert every_position["eval_margins"] != 0.0
    for key, value in every_position.items():
        assert abs(replies_only[key] - value) < 1e-5, (key, value, replies_only[key])
