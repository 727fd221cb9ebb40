"""Instruction tuning on a tiny model: every PEFT method lowers the held-out loss; data shapes; masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlhf.instruction_data import InstructionFileError, read_examples
from rlhf.registry import ModelRegistry
from rlhf.runs import RunDir, run_guard
from rlhf.sft import SFTRunConfig, encode_example, train_sft

ANSWERS = ["The capital of France is Paris.", "The sea is wide.", "Add a and b.", "Light becomes sugar."]


def instruction_rows(n: int) -> list[dict]:
    """A learnable task: each of four questions always gets the same answer."""
    questions = ["Where is Paris?", "Tell me about the sea.", "What does add do?", "What is photosynthesis?"]
    return [{"instruction": questions[i % 4], "context": "", "response": ANSWERS[i % 4], "category": "qa"} for i in range(n)]


@pytest.fixture
def registry(studio_home: Path, tiny_lm_dir: Path) -> ModelRegistry:
    reg = ModelRegistry()
    reg.add(tiny_lm_dir, name="tiny")
    return reg


@pytest.fixture
def dolly_file(tmp_path: Path) -> Path:
    path = tmp_path / "dolly.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in instruction_rows(40)))
    return path


def test_data_shapes_and_errors(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Say hi", "context": "to Bob", "response": "Hi Bob", "category": "greet"},
        {"instruction": "Add", "input": "1 and 2", "output": "3"},
        {"messages": [{"role": "user", "content": "Hey"}, {"role": "assistant", "content": "Hello!"}]},
        {"prompt": "Q?", "response": "A."},
        {"prompt": "Q2?", "chosen": "Good.", "rejected": "Bad."},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    examples = read_examples(path)
    assert examples[0].messages[0]["content"] == "Say hi\n\nto Bob" and examples[0].category == "greet"
    assert examples[1].messages == [{"role": "user", "content": "Add\n\n1 and 2"}, {"role": "assistant", "content": "3"}]
    assert [e.messages[-1]["content"] for e in examples[2:]] == ["Hello!", "A.", "Good."]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"instruction": "x", "response": ""}) + "\n")
    with pytest.raises(InstructionFileError, match=r"bad.jsonl:2: field 'response' is empty"):
        read_examples(bad)
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}))
    with pytest.raises(InstructionFileError, match="must end with an assistant turn"):
        read_examples(bad)
    bad.write_text(json.dumps({"text": "free text"}))
    with pytest.raises(InstructionFileError, match="dolly, alpaca, conversation or prompt/response"):
        read_examples(bad)


def test_only_the_reply_is_learned(tiny_lm_dir: Path) -> None:
    from rlhf.instruction_data import Example
    from rlhf.loading import load_tokenizer

    tok = load_tokenizer(tiny_lm_dir)
    ex = Example([{"role": "user", "content": "Where is Paris?"}, {"role": "assistant", "content": "In France."}])
    enc = encode_example(tok, ex, max_length=512)
    learned = [t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != -100]
    assert tok.decode(learned).startswith("In France.") and "Where is Paris" not in tok.decode(learned)
    assert enc["labels"][: len(enc["labels"]) - len(learned)] == [-100] * (len(enc["labels"]) - len(learned))
    short = encode_example(tok, Example([{"role": "user", "content": "word " * 200}, ex.messages[1]]), max_length=40)
    assert len(short["input_ids"]) == 40 and tok.decode([t for t in short["labels"] if t != -100]).startswith("In France.")


@pytest.mark.parametrize("method", ["lora", "prefix", "prompt", "ia3", "full"])
def test_each_method_lowers_the_held_out_loss(tmp_path: Path, registry: ModelRegistry, dolly_file: Path, method: str) -> None:
    lr = {"lora": 5e-3, "prefix": 1e-1, "prompt": 2e-1, "ia3": 1e-1, "full": 3e-3}[method]
    cfg = SFTRunConfig(
        data=str(dolly_file), base_model="tiny", method=method, learning_rate=lr, epochs=4, batch_size=8, max_length=64,
        eval_fraction=0.2, logging_steps=2, save_steps=1000, num_virtual_tokens=4, lora_r=4, lora_alpha=8, register_as=f"tiny-sft-{method}",
    )  # fmt: skip
    run = RunDir.create(tmp_path / "runs", "sft", {})
    with run_guard(run, handle_sigterm=False) as stop:
        metrics = train_sft(cfg, run, stop, registry=registry)
    assert metrics["eval_loss"] < metrics["eval_loss_before"] - 0.3, metrics
    assert metrics["eval_perplexity"] < metrics["eval_perplexity_before"]
    assert metrics["train_examples"] == 32 and metrics["eval_examples"] == 8
    entry = registry.get(f"tiny-sft-{method}")
    assert entry.kind == "causal-lm" and entry.lineage["method"] == method
    card = (run.checkpoint_dir / "README.md").read_text()
    assert "license: apache-2.0" in card and "eval_loss" in card and f"SFT ({method})" in card and entry.licence == "apache-2.0"
    # The registered checkpoint loads and its weights (or adapters) differ from the base.
    from rlhf.generation import GenerationEngine, SamplingParams
    from rlhf.loading import load_causal_lm

    model, tok = load_causal_lm(entry.name, registry, device="cpu", dtype=torch.float32)
    base, _ = load_causal_lm("tiny", registry, device="cpu", dtype=torch.float32)
    ids = torch.tensor([tok("Where is Paris?")["input_ids"]])
    with torch.no_grad():
        assert not torch.allclose(
            model(input_ids=ids).logits[:, -1], base(input_ids=ids).logits[:, -1], atol=1e-4
        )  # virtual tokens add positions
    [reply] = GenerationEngine(model, tok).generate(["Where is Paris?"], SamplingParams(temperature=0, max_new_tokens=8))
    assert reply.new_tokens > 0
    # The checkpoint can start PPO, except prefix / prompt tuning adapters, which cannot be merged.
    from rlhf.ppo import PPORunConfig, PPOTrainer

    ppo_cfg = PPORunConfig(
        prompts="unused.jsonl", policy=entry.name, rewards=[{"type": "function", "function": "tests.rlhf.reward_fns:likes_e"}]
    )
    if method in ("prefix", "prompt"):
        with pytest.raises(ValueError, match="cannot be merged"):
            PPOTrainer(ppo_cfg, registry)
    else:
        assert PPOTrainer(ppo_cfg, registry).reference() is not None


def test_sft_command_and_bad_data(tmp_path: Path, registry: ModelRegistry, dolly_file: Path, capsys) -> None:
    from studio.cli import main

    config = tmp_path / "sft.yaml"
    config.write_text(f"data: {dolly_file}\nbase_model: tiny\nepochs: 1\nmax_length: 64\nregister_as: cli-sft\n")
    assert main(["train", "sft", "--config", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "cli-sft" in capsys.readouterr().out
    config.write_text("data: x.jsonl\nmethod: adapter-magic\n")
    assert main(["train", "sft", "--config", str(config), "--runs-dir", str(tmp_path / "runs2")]) == 2
    assert "method must be one of lora, prefix, prompt, ia3, full" in capsys.readouterr().err
