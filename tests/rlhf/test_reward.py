"""Reward training on a tiny separable dataset, scoring, the train/eval commands, pair files."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import torch

from rlhf.preference_data import PairFileError, read_pairs, split_pairs
from rlhf.registry import ModelRegistry
from rlhf.reward import RewardRunConfig, evaluate_pairs, train_reward
from rlhf.runs import RunDir, run_guard
from rlhf.scoring import RewardScorer, encode_pair
from studio.cli import main

WORDS = ["capital", "France", "Paris", "reward", "model", "policy", "sea", "light", "sugar", "function"]


def separable_pairs(n: int, seed: int = 0) -> list[dict]:
    """Chosen replies say 'good', rejected ones 'bad': a reward model can learn this in seconds."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(6))
        filler = " ".join(rng.choice(WORDS) for _ in range(4))
        rows.append({"prompt": prompt, "chosen": f"{filler} good good", "rejected": f"{filler} bad bad"})
    return rows


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in separable_pairs(96)))
    return path


def _train(tmp_path: Path, cfg: RewardRunConfig, registry: ModelRegistry) -> tuple[RunDir, dict]:
    run = RunDir.create(tmp_path / "runs", "reward", {})
    with run_guard(run, handle_sigterm=False) as stop:
        metrics = train_reward(cfg, run, stop, registry=registry)
    return run, metrics


@pytest.mark.parametrize("method", ["full", "lora"])
def test_training_raises_pairwise_accuracy(
    tmp_path: Path, studio_home: Path, tiny_encoder_dir: Path, pairs_file: Path, method: str
) -> None:
    registry = ModelRegistry()
    registry.add(tiny_encoder_dir, name="tiny-enc")
    cfg = RewardRunConfig(
        data=str(pairs_file),
        base_model="tiny-enc",
        method=method,
        learning_rate=3e-3 if method == "full" else 1e-2,
        epochs=6,
        batch_size=8,
        max_length=32,
        eval_fraction=0.25,
        logging_steps=2,
        save_steps=1000,
        lora_r=4,
        lora_alpha=8,
    )
    train, held_out = split_pairs(read_pairs(pairs_file), cfg.eval_fraction, cfg.seed)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(cfg.seed)
    untrained = RewardScorer(
        AutoModelForSequenceClassification.from_pretrained(tiny_encoder_dir, num_labels=1),
        AutoTokenizer.from_pretrained(tiny_encoder_dir),
        32,
    )
    before = evaluate_pairs(untrained, held_out)
    run, metrics = _train(tmp_path, cfg, registry)
    # An untrained head already leans one way on "good" vs "bad" (so its accuracy is 0 or 1 by
    # chance); what training must do is make the chosen reply win by a clear margin.
    assert metrics["eval_accuracy"] >= 0.9
    assert metrics["eval_mean_margin"] > before["mean_margin"] + 0.5
    assert metrics["train_pairs"] == len(train) == 72 and metrics["eval_pairs"] == 24
    # weights changed, the checkpoint scores like the trained model, and it is registered with lineage
    trained = AutoModelForSequenceClassification.from_pretrained(run.checkpoint_dir)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_encoder_dir, num_labels=1)
    assert any(not torch.equal(a, b) for a, b in zip(base.bert.parameters(), trained.bert.parameters(), strict=True))
    scorer = RewardScorer.load(run.checkpoint_dir, max_length=32)
    assert scorer.score("capital sea", "France good good") > scorer.score("capital sea", "France bad bad")
    # Saved with mean pooling, loaded with mean pooling: the reloaded scorer gives the run's own figures.
    assert json.loads((run.checkpoint_dir / "config.json").read_text())["rlhf_pooling"] == "mean"
    assert evaluate_pairs(scorer, held_out)["mean_margin"] == pytest.approx(metrics["eval_mean_margin"], abs=1e-4)
    entry = registry.get(metrics["registered_as"])
    assert entry.kind == "reward-model" and entry.lineage["base_model"] == "tiny-enc" and entry.lineage["data"] == str(pairs_file)
    losses = [e["loss"] for e in run.events() if "loss" in e]
    assert losses and losses[-1] < losses[0]
    assert run.status()["state"] == "finished"


def test_left_truncation_keeps_the_reply(tiny_encoder_dir: Path, tiny_lm_dir: Path) -> None:
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    ids = encode_pair(enc, "sea " * 200, "paris good", 16)
    reply = enc("paris good", add_special_tokens=False)["input_ids"]
    assert len(ids) == 16 and ids[-len(reply) - 1 :] == reply + [enc.sep_token_id] and ids[0] == enc.cls_token_id
    dec = AutoTokenizer.from_pretrained(tiny_lm_dir)
    ids = encode_pair(dec, "sea " * 200, "Paris is good", 16)
    assert len(ids) == 16 and ids[-1] == dec.eos_token_id and "Paris is good" in dec.decode(ids)


def test_pair_files(tmp_path: Path) -> None:
    hh = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
    gz = tmp_path / "hh.jsonl.gz"
    with gzip.open(gz, "wt") as handle:
        handle.write(json.dumps(hh) + "\n")
    [pair] = read_pairs(gz)
    assert (pair.prompt, pair.chosen, pair.rejected) == ("User: hi", "hello", "go away")
    from rlhf.preference_data import transcript_messages

    assert transcript_messages("User: hi\n\nAssistant: yo\n\nUser: and?") == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "and?"},
    ]
    assert transcript_messages("a bare question") == [{"role": "user", "content": "a bare question"}]
    conv = tmp_path / "conv.json"
    conv.write_text(
        json.dumps(
            [
                {
                    "prompt": [{"role": "user", "content": "q"}],
                    "chosen": [{"role": "assistant", "content": "a"}],
                    "rejected": [{"role": "assistant", "content": "b"}],
                }
            ]
        )
    )
    assert read_pairs(conv)[0].chosen == "a"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "chosen": "a"}\n')
    with pytest.raises(PairFileError, match="bad.jsonl line 1: needs 'chosen' and 'rejected'"):
        read_pairs(bad)
    with pytest.raises(PairFileError, match="not a snapshot folder"):
        read_pairs(tmp_path)


def test_snapshot_agreement_splits_the_accuracy(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    snap = tmp_path / "snap"
    snap.mkdir()
    rows = {"prompt": ["p", "p"], "chosen": ["good", "good"], "rejected": ["bad", "bad"], "agreement": [1.0, 0.5]}
    pq.write_table(pa.table(rows), snap / "preference.parquet")

    class Fixed:
        heads = 1

        def score_heads(self, pairs):
            return torch.tensor([[1.0 if r == "good" else 0.0] for _, r in pairs])

    result = evaluate_pairs(Fixed(), read_pairs(snap))
    assert result["accuracy_unanimous"] == 1.0 and result["pairs_split"] == 1


def test_train_and_eval_commands(tmp_path: Path, studio_home: Path, tiny_encoder_dir: Path, pairs_file: Path, capsys) -> None:
    ModelRegistry().add(tiny_encoder_dir, name="tiny-enc")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {pairs_file}\nbase_model: tiny-enc\nmethod: full\nepochs: 1\nbatch_size: 16\nmax_length: 32\n"
        "register_as: my-rm\nthreads: 1\n"
    )
    assert main(["train", "reward", "--config", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "registered_as=my-rm" in out
    [run_path] = (tmp_path / "runs").iterdir()
    first = json.loads((run_path / "events.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["threads"] == 1 and first["threads_why"] == "set to 1"
    assert "torch threads: set to 1" in (run_path / "run.log").read_text()
    assert "# registered model name or local folder to start from" in (run_path / "config.yaml").read_text()
    assert "loss" in (run_path / "run.log").read_text()
    assert main(["eval", "reward", "--checkpoint", "my-rm", "--pairs", str(pairs_file), "--max-length", "32"]) == 0
    assert "pairs 96  accuracy" in capsys.readouterr().out


def test_train_command_errors(tmp_path: Path, studio_home: Path, tiny_encoder_dir: Path, capsys) -> None:
    config, runs = tmp_path / "run.yaml", tmp_path / "runs"

    def train() -> int:
        return main(["train", "reward", "--config", str(config), "--runs-dir", str(runs)])

    config.write_text("data: nowhere.jsonl\nepochs: two\n")
    assert train() == 2
    assert "epochs: expected a number" in capsys.readouterr().err
    config.write_text(f"data: {tmp_path / 'nowhere.jsonl'}\n")
    assert train() == 2
    assert "nowhere.jsonl not found" in capsys.readouterr().err
    assert not runs.exists()  # a config that cannot run makes no run folder
    # A bad record past the ones checked up front is found by the training itself: recorded with its traceback.
    ModelRegistry().add(tiny_encoder_dir, name="tiny-enc")
    pairs = tmp_path / "late.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in separable_pairs(40)) + '\n{"prompt": "p", "chosen": "a"}\n')
    config.write_text(f"data: {pairs}\nbase_model: tiny-enc\n")
    assert train() == 2
    assert "late.jsonl line 41: needs 'chosen' and 'rejected'" in capsys.readouterr().err
    [run_path] = runs.iterdir()
    status = json.loads((run_path / "status.json").read_text())
    assert status["state"] == "failed" and "line 41" in status["error"] and "Traceback" in status["traceback"]


def _prepared_run(tmp_path: Path, pairs_file: Path, **extra) -> RunDir:
    """A run folder as the studio prepares it: config.yaml and status 'created', nothing trained."""
    from rlhf.config import config_to_dict, save_config

    cfg = RewardRunConfig(data=str(pairs_file), base_model="tiny-enc", epochs=1, batch_size=16, max_length=32, **extra)
    run = RunDir.create(tmp_path / "runs", "reward", config_to_dict(cfg))
    save_config(cfg, run.config_path)
    return run


def _run_command(cmd: list[str], run: RunDir, studio_home: Path) -> int:
    import os
    import subprocess

    env = {**os.environ, "STUDIO_HOME": str(studio_home)}
    with run.log_path.open("a") as log:  # as the studio does: the child's output is the run's log
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=300).returncode


def test_a_prepared_run_trains_in_a_subprocess_without_doubling_its_log(
    tmp_path: Path, studio_home: Path, tiny_encoder_dir: Path, pairs_file: Path
) -> None:
    from rlhf.launch import train_command

    ModelRegistry().add(tiny_encoder_dir, name="tiny-enc")
    run = _prepared_run(tmp_path, pairs_file, register_as="sub-rm")
    assert _run_command(train_command("reward", run.path), run, studio_home) == 0, run.tail_log()
    assert run.status()["state"] == "finished"
    log = run.log_path.read_text()
    assert log.count(f"run {run.id}: ") == 1  # output went to run.log once, not teed into itself
    assert "sub-rm" in ModelRegistry().names("reward-model")


def test_accelerate_launch_with_one_cpu_process(tmp_path: Path, studio_home: Path, tiny_encoder_dir: Path, pairs_file: Path) -> None:
    from rlhf.launch import train_command

    ModelRegistry().add(tiny_encoder_dir, name="tiny-enc")
    run = _prepared_run(tmp_path, pairs_file, launcher="accelerate", num_processes=1, register_as="acc-rm")
    assert _run_command(train_command("reward", run.path), run, studio_home) == 0, run.tail_log()
    log = run.log_path.read_text()
    assert "accelerate.commands.launch --num_processes 1" in log
    status = run.status()
    assert status["state"] == "finished", run.tail_log()
    assert run.metrics()["eval_pairs"] > 0 and run.events()
    assert "acc-rm" in ModelRegistry().names("reward-model")


def _raw_hh_file(tmp_path: Path) -> Path:
    """HH-RLHF as it comes: good records, one whose transcripts differ early, a broken line, an empty reply."""
    good = [separable_pairs(1, seed=i)[0] for i in range(40)]
    lines = [json.dumps(r) for r in good]
    early = {
        "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
        "rejected": "\n\nHuman: a\n\nAssistant: X\n\nHuman: c\n\nAssistant: e",
    }
    lines.insert(3, json.dumps(early))
    lines.insert(7, "{not json")
    lines.insert(9, json.dumps({"prompt": "q", "chosen": "fine", "rejected": "   "}))
    path = tmp_path / "raw.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pairs_files_as_they_come(tmp_path: Path) -> None:
    from rlhf.preference_data import PairReport

    path = _raw_hh_file(tmp_path)
    with pytest.raises(PairFileError, match=r"raw.jsonl line 8: not valid JSON"):
        read_pairs(path)
    path.write_text(path.read_text().replace("{not json\n", ""))
    with pytest.raises(PairFileError, match=r"raw.jsonl line 4: 'chosen' and 'rejected' differ before their last reply"):
        read_pairs(path)
    path = _raw_hh_file(tmp_path)
    report = PairReport()
    pairs = read_pairs(path, skip_invalid=True, report=report)
    assert len(pairs) == report.kept == 41
    assert [x.split(":")[0] for x in report.left_out] == ["raw.jsonl line 4", "raw.jsonl line 8"]
    assert "differ before their last reply" in report.left_out[0] and "not valid JSON" in report.left_out[1]
    assert report.warnings == ["raw.jsonl line 10: the rejected reply is empty"]
    summary = report.summary(path)
    assert summary.startswith("raw.jsonl: 41 pairs kept, 2 left out, 1 with an empty reply (kept)") and "line 4" in summary


def test_train_and_eval_with_skip_invalid(tmp_path: Path, studio_home: Path, tiny_encoder_dir: Path, capsys) -> None:
    ModelRegistry().add(tiny_encoder_dir, name="tiny-enc")
    raw = _raw_hh_file(tmp_path)
    config, runs = tmp_path / "run.yaml", tmp_path / "runs"
    config.write_text(f"data: {raw}\nbase_model: tiny-enc\nepochs: 1\nbatch_size: 16\nmax_length: 32\nregister_as: rm-raw\n")
    assert main(["train", "reward", "--config", str(config), "--runs-dir", str(runs)]) == 2
    assert "--skip-invalid" in capsys.readouterr().err and not runs.exists()
    assert main(["train", "reward", "--config", str(config), "--runs-dir", str(runs), "--skip-invalid"]) == 0
    [run] = runs.iterdir()
    log = (run / "run.log").read_text()
    assert "raw.jsonl: 41 pairs kept, 2 left out" in log and "skip_invalid: true" in (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["eval", "reward", "--checkpoint", "rm-raw", "--pairs", str(raw), "--max-length", "32"]) == 2
    assert "line 8: not valid JSON" in capsys.readouterr().err
    assert main(["eval", "reward", "--checkpoint", "rm-raw", "--pairs", str(raw), "--max-length", "32", "--skip-invalid"]) == 0
    out = capsys.readouterr().out
    assert "41 pairs kept, 2 left out" in out and "pairs 41  accuracy" in out
    sft = tmp_path / "sft.yaml"
    sft.write_text(f"data: {raw}\nbase_model: tiny-enc\n")
    assert main(["train", "sft", "--config", str(sft), "--skip-invalid", "--runs-dir", str(runs)]) == 2
    assert "applies to pairs files" in capsys.readouterr().err


@pytest.mark.parametrize("base", ["encoder", "decoder"])
def test_one_prompt_format_for_training_and_every_scorer(
    tmp_path: Path, studio_home: Path, tiny_encoder_dir: Path, tiny_lm_dir: Path, base: str
) -> None:
    from rlhf.rewards import ModelReward
    from rlhf.scoring import FORMAT_FILE, encode_pair, reward_prompt

    registry = ModelRegistry()
    registry.add(tiny_encoder_dir if base == "encoder" else tiny_lm_dir, name="tiny-base")
    hh = tmp_path / "hh.jsonl"
    hh.write_text(
        "\n".join(
            json.dumps({"chosen": f"\n\nHuman: hi {i}\n\nAssistant: hello", "rejected": f"\n\nHuman: hi {i}\n\nAssistant: go"})
            for i in range(16)
        )
    )
    cfg = RewardRunConfig(
        data=str(hh), base_model="tiny-base", method="full", prompt_format="transcript", max_prompt_tokens=0, max_reply_tokens=0,
        epochs=1, batch_size=8, max_length=24, register_as="rm-format",
    )  # fmt: skip
    _train(tmp_path, cfg, registry)
    folder = registry.resolve("rm-format")
    assert json.loads((folder / FORMAT_FILE).read_text()) == {
        "prompt_format": "transcript-v1",
        "text_format": "transcript",
        "max_length": 24,
        "max_prompt_tokens": 0,
        "max_reply_tokens": 0,
    }
    # what training encoded for the first pair (the prompt as the pairs file gives it) ...
    pair = read_pairs(hh)[0]
    scorer = RewardScorer.load(folder, device="cpu")
    trained_ids = encode_pair(scorer.tokenizer, pair.prompt, pair.chosen, cfg.max_length)
    # ... is what every scorer feeds it: a bare question (PPO, prompt lab, eval), chat messages, the transcript
    assert scorer.max_length == 24
    for prompt in ("hi 0", [{"role": "user", "content": "hi 0"}], "User: hi 0"):
        assert reward_prompt(prompt) == pair.prompt == "User: hi 0"
        assert scorer.encode(prompt, "hello") == trained_ids
    ppo_reward = ModelReward("rm-format", registry, device="cpu")
    assert ppo_reward.scorer.max_length == 24
    assert ppo_reward(["hi 0"], ["hello"], [None]) == pytest.approx(scorer.score_batch([(pair.prompt, pair.chosen)]), abs=1e-5)
