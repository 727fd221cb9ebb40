"""Configs are checked completely before a run folder exists; resume trims events; files are owner-only."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from rlhf.config import ConfigError, config_to_dict, save_config
from rlhf.modelfiles import ModelError
from rlhf.preflight import check_run_config, load_run_config, problems
from rlhf.registry import ModelRegistry
from rlhf.reward import RewardRunConfig
from rlhf.runs import RunDir, checkpoint_step
from studio.cli import main
from tests.rlhf.test_reward import separable_pairs


@pytest.fixture
def registry(studio_home: Path, tiny_encoder_dir: Path, tiny_lm_dir: Path) -> ModelRegistry:
    reg = ModelRegistry()
    reg.add(tiny_encoder_dir, name="tiny-enc")
    reg.add(tiny_lm_dir, name="tiny")
    return reg


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in separable_pairs(48)) + "\n")
    return path


def _train(kind: str, config: Path, runs: Path, text: str, capsys) -> tuple[int, str]:
    config.write_text(text)
    code = main(["train", kind, "--config", str(config), "--runs-dir", str(runs)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "kind, text, message",
    [
        ("reward", "", "is empty"),
        ("sft", "# only a comment\n", "is empty"),
        ("reward", "learning_rat: 0.1\n", "unknown key(s) learning_rat for RewardRunConfig; allowed: launcher"),
        ("dpo", "data: x\nbeta: -1\n", "beta must be > 0"),
        ("ppo", "prompts: x\nrewards: []\n", "give at least one reward source"),
        ("reward", "epochs: 1\n", "data: required; name a snapshot folder or a preference file"),
        ("ppo", "steps: 2\n", "prompts: required; name a prompts file"),
        ("reward", "data: {tmp}/nowhere.jsonl\n", "nowhere.jsonl not found"),
        ("reward", "data: {tmp}\n", "is not a snapshot folder (no preference.parquet)"),
        ("reward", "data: {tmp}/bad.jsonl\n", "bad.jsonl line 2: not valid JSON"),
        ("reward", "data: {tmp}/broken.jsonl.gz\n", "broken.jsonl.gz cannot be read"),
        ("dpo", "data: {tmp}/pairs.jsonl\neval_data: {tmp}/shapeless.jsonl\n", "eval_data: shapeless.jsonl line 1: needs 'chosen'"),
        ("sft", "data: {tmp}/pairs.jsonl\nbase_model: tiny\n", None),  # prompt + chosen is a valid SFT shape
        ("sft", "data: {tmp}/shapeless.jsonl\nbase_model: tiny\n", "no 'messages', 'instruction' or 'prompt' field"),
        ("ppo", "prompts: {tmp}/shapeless.jsonl\npolicy: tiny\n", "shapeless.jsonl:1: no 'prompt', 'messages' or 'instruction'"),
        ("reward", "data: {tmp}/pairs.jsonl\nbase_model: ghost\n", "base_model (base model): unknown model 'ghost'"),
        ("sft", "data: {tmp}/pairs.jsonl\nbase_model: tiny-enc\n", "tiny-enc is a encoder model; it must be causal-lm"),
        (
            "ppo",
            "prompts: {tmp}/pairs.jsonl\npolicy: tiny\nrewards: [{{type: model, model: tiny}}]\n",
            "rewards[0] (model): tiny is a causal-lm model; it must be reward-model",
        ),
        (
            "ppo",
            "prompts: {tmp}/pairs.jsonl\npolicy: tiny\nrewards: [{{type: function, function: 'a:b'}}]\n"
            "heldout_judge: [{{type: model, model: ghost-judge}}]\n",
            "heldout_judge[0] (model): unknown model 'ghost-judge'",
        ),
        ("reward", "data: {tmp}/pairs.jsonl\nbase_model: tiny-enc\nregister_as: Bad Name!\n", "register_as: model name 'bad name!' is not"),
        ("reward", "data: {tmp}/pairs.jsonl\nbase_model: tiny-enc\nregister_as: minilm-l6\n", "'minilm-l6' is a built-in model name"),
        ("dpo", "data: {tmp}/pairs.jsonl\npolicy: tiny\nregister_as: tiny-enc\n", "a model called 'tiny-enc' is already registered"),
    ],
)
def test_a_config_that_cannot_run_makes_no_run_folder(
    tmp_path: Path, registry: ModelRegistry, pairs: Path, capsys, kind: str, text: str, message: str | None
) -> None:
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{oops\n')
    (tmp_path / "broken.jsonl.gz").write_bytes(b"not gzip at all")
    (tmp_path / "shapeless.jsonl").write_text('{"question": "where?"}\n')
    runs = tmp_path / "runs"
    if message is None:  # the data is fine; only the check runs (no training here)
        check_run_config(kind, load_run_config(kind, _write(tmp_path / "run.yaml", text.format(tmp=tmp_path))), registry)
        return
    code, err = _train(kind, tmp_path / "run.yaml", runs, text.format(tmp=tmp_path), capsys)
    assert code == 2 and message in err, err
    assert not runs.exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_every_problem_is_listed_at_once(tmp_path: Path, registry: ModelRegistry) -> None:
    cfg = RewardRunConfig(data=str(tmp_path / "none.jsonl"), base_model="ghost", register_as="minilm-l6")
    found = problems("reward", cfg, registry)
    assert [p.split(":")[0] for p in found] == ["data", "base_model (base model)", "register_as"]
    with pytest.raises(ConfigError, match="the reward config cannot run: data: .*none.jsonl not found; base_model"):
        check_run_config("reward", cfg, registry)


def test_register_as_follows_the_registrys_rule(registry: ModelRegistry, tmp_path: Path, tiny_lm_dir: Path) -> None:
    assert registry.check_name("My-Model", replace="runs") == "my-model"
    # A run may replace an earlier run's model of the same name (re-training), never one added by hand.
    registry.add(tiny_lm_dir, name="from-a-run", source="sft run x", lineage={"run": "sft-1"})
    assert registry.check_name("from-a-run", replace="runs") == "from-a-run"
    with pytest.raises(ModelError, match="already registered"):
        registry.check_name("tiny", replace="runs")
    with pytest.raises(ModelError, match="already registered"):
        registry.add(tiny_lm_dir, name="from-a-run")
    assert registry.add(tiny_lm_dir, name="tiny", replace=True).name == "tiny"  # an explicit replace still works


def test_a_prepared_run_that_cannot_run_says_why_in_its_status(tmp_path: Path, registry: ModelRegistry, pairs: Path, capsys) -> None:
    cfg = RewardRunConfig(data=str(pairs), base_model="tiny-enc")
    run = RunDir.create(tmp_path / "runs", "reward", config_to_dict(cfg))
    save_config(cfg, run.config_path)
    pairs.unlink()  # the data went away between preparing the run and starting it
    assert main(["train", "reward", "--resume", str(run.path)]) == 2
    assert "pairs.jsonl not found" in capsys.readouterr().err
    assert run.status()["state"] == "failed" and "pairs.jsonl not found" in run.status()["error"]


# -- resume ------------------------------------------------------------------------------------------
def test_trim_events_keeps_up_to_the_checkpoint(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "runs", "demo", {})
    for step in (0, 1, 2, 3, 4, 5):
        run.append_event({"step": step, "loss": 1.0 / (step + 1)})
    run.append_event({"step": 5, "final": True, "stopped_early": True})
    with run.events_path.open("a") as handle:
        handle.write('{"step": 6, "lo')  # killed mid-line
    assert run.trim_events(3) == 4
    assert [e["step"] for e in run.events()] == [0, 1, 2, 3]
    assert stat.S_IMODE(run.events_path.stat().st_mode) == 0o600
    assert checkpoint_step(Path("trainer/checkpoint-12")) == 12 and checkpoint_step(Path("checkpoint-x")) is None


def test_resume_does_not_log_a_step_twice(tmp_path: Path, registry: ModelRegistry, pairs: Path, capsys) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"data: {pairs}\nbase_model: tiny-enc\nmethod: full\nbatch_size: 4\nmax_length: 16\nlogging_steps: 1\nsave_steps: 3\n"
    )
    assert main(["train", "reward", "--config", str(config), "--runs-dir", str(tmp_path / "runs")]) == 0, capsys.readouterr().err
    [path] = (tmp_path / "runs").iterdir()
    run = RunDir(path)
    last = max(e["step"] for e in run.events())
    # As if the process had been killed after its last step: only an early checkpoint survives.
    checkpoints = sorted(run.trainer_dir.glob("checkpoint-*"), key=checkpoint_step)
    for extra in checkpoints[1:]:
        shutil.rmtree(extra)
    if checkpoint_step(checkpoints[0]) > 3:
        checkpoints[0].rename(run.trainer_dir / "checkpoint-3")
    run.set_status(state="failed", error="killed")
    assert main(["train", "reward", "--resume", str(run.path)]) == 0, capsys.readouterr().err
    steps = [e["step"] for e in run.events() if "loss" in e]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and steps[-1] == last  # no zig-zag
    assert sum(bool(e.get("final")) for e in run.events()) == 1
    assert run.status()["state"] == "finished"


# -- owner-only files ------------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_run_folders_and_the_model_cache_are_owner_only(tmp_path: Path, monkeypatch, pairs: Path, tiny_encoder_dir: Path, capsys) -> None:
    home = tmp_path / "new" / "home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    before = os.umask(0o022)
    try:
        assert main(["models", "add", str(tiny_encoder_dir), "--name", "tiny-enc"]) == 0
        assert _mode(home) == 0o700 and _mode(home / "models.json") == 0o600
        config = tmp_path / "run.yaml"
        config.write_text(f"data: {pairs}\nbase_model: tiny-enc\nmethod: full\nbatch_size: 16\nmax_length: 16\nsave_steps: 2\n")
        runs = tmp_path / "runs"
        assert main(["train", "reward", "--config", str(config), "--runs-dir", str(runs)]) == 0, capsys.readouterr().err
        assert os.umask(0o022) == 0o022  # the command's umask was put back
    finally:
        os.umask(before)
    [run] = runs.iterdir()
    assert _mode(runs) == 0o700 and _mode(run) == 0o700
    for name in ("config.yaml", "status.json", "events.jsonl", "run.log", "metrics.json"):
        assert _mode(run / name) == 0o600, name
    saved = [p for p in (run / "checkpoint").rglob("*") if p.is_file()] + [p for p in (run / "trainer").rglob("*") if p.is_file()]
    assert saved and all(_mode(p) & 0o077 == 0 for p in saved)
    assert all(_mode(p) & 0o077 == 0 for p in (run / "trainer").rglob("*") if p.is_dir())
    # A fresh model cache folder is owner-only too.
    from rlhf.paths import private_dir

    cache = private_dir(home / "models" / "x")
    assert _mode(home / "models") == 0o700 and _mode(cache) == 0o700
