"""The run system: config round trip, events, stop-and-save, resume, crash reports, SIGTERM."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlhf.config import ConfigError, config_from_dict, load_config, save_config
from rlhf.runs import RunDir, StopRequest, list_runs, run_callback, run_guard
from tests.tiny import tiny_lm_trainer

HERE = Path(__file__).resolve().parent


@dataclasses.dataclass
class DemoConfig:
    base_model: str = dataclasses.field(default="minilm-l6", metadata={"help": "registered model to start from"})
    learning_rate: float = dataclasses.field(default=5e-5, metadata={"help": "peak learning rate"})
    epochs: int = dataclasses.field(default=1, metadata={"help": "passes over the data"})
    lora: bool = dataclasses.field(default=True, metadata={"help": "train LoRA adapters"})
    target_modules: list[str] = dataclasses.field(default_factory=lambda: ["query", "value"], metadata={"help": "LoRA targets"})
    eval_file: str | None = dataclasses.field(default=None, metadata={"help": "held-out pairs"})


def test_config_round_trip_with_help_comments(tmp_path: Path) -> None:
    cfg = DemoConfig(learning_rate=1e-4, epochs=3, target_modules=["q"], eval_file="dev.jsonl")
    path = save_config(cfg, tmp_path / "run.yaml")
    text = path.read_text()
    assert "# peak learning rate\nlearning_rate: 0.0001" in text
    assert load_config(DemoConfig, path) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"learning_rat": 1e-4}, "unknown key\\(s\\) learning_rat for DemoConfig; allowed: base_model, learning_rate"),
        ({"epochs": "three"}, "epochs: expected a whole number"),
        ({"epochs": 1.5}, "epochs: expected a whole number"),
        ({"lora": "yes"}, "lora: expected true or false"),
        ({"target_modules": "q"}, "target_modules: expected a list"),
        ({"learning_rate": True}, "learning_rate: expected a number"),
    ],
)
def test_bad_config_values_are_named(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(DemoConfig, data)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(DemoConfig, tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(DemoConfig, tmp_path / "none.yaml")
    assert config_from_dict(DemoConfig, {"learning_rate": 1}).learning_rate == 1.0


def test_training_writes_events_and_learns(tmp_path: Path, tiny_lm_dir: Path) -> None:
    run = RunDir.create(tmp_path / "runs", "demo", {"steps": 12})
    with run_guard(run) as stop:
        trainer = tiny_lm_trainer(tiny_lm_dir, run.trainer_dir, 12, [run_callback(run, stop)])
        before = [p.detach().clone() for p in trainer.model.parameters()]
        trainer.train()
        run.write_metrics({"final_loss": run.events()[-2]["loss"]})
    status = run.status()
    assert status["state"] == "finished" and status["pid"] == os.getpid() and status["ended"]
    losses = [e["loss"] for e in run.events() if "loss" in e]
    assert len(losses) == 12 and losses[-1] < losses[0]  # the metric moved the right way
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert run.metrics()["final_loss"] == losses[-1]
    assert [r.id for r in list_runs(tmp_path / "runs")] == [run.id] and run.config() == {"steps": 12}


def test_stop_request_saves_and_resume_continues(tmp_path: Path, tiny_lm_dir: Path) -> None:
    run = RunDir.create(tmp_path / "runs", "demo", {})
    stop_after = 3

    class StopSoon(__import__("transformers").TrainerCallback):
        def __init__(self, stop: StopRequest) -> None:
            self.stop = stop

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step >= stop_after:
                self.stop.set()

    with run_guard(run, handle_sigterm=False) as stop:
        trainer = tiny_lm_trainer(tiny_lm_dir, run.trainer_dir, 10, [StopSoon(stop), run_callback(run, stop)])
        trainer.train()
    assert run.status()["state"] == "cancelled"
    saved = run.last_checkpoint()
    assert saved is not None and saved.name == f"checkpoint-{stop_after + 1}"

    with run_guard(run, handle_sigterm=False) as stop:
        trainer = tiny_lm_trainer(tiny_lm_dir, run.trainer_dir, 10, [run_callback(run, stop)])
        trainer.train(resume_from_checkpoint=str(saved))
    assert run.status()["state"] == "finished"
    steps = [e["step"] for e in run.events() if "loss" in e]
    assert steps[: stop_after + 1] == list(range(1, stop_after + 2)) and steps[-1] == 10
    assert len(steps) == 10  # resumed where it stopped: no step trained twice


def test_a_crash_is_recorded_with_its_traceback(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "runs", "demo", {})
    with pytest.raises(RuntimeError, match="disk on fire"):
        with run_guard(run, handle_sigterm=False):
            raise RuntimeError("disk on fire")
    status = run.status()
    assert status["state"] == "failed" and status["error"] == "RuntimeError: disk on fire"
    assert "Traceback" in status["traceback"] and "disk on fire" in status["traceback"]


def test_half_written_event_lines_are_skipped(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "runs", "demo", {})
    run.append_event({"step": 1, "loss": 2.0})
    with run.events_path.open("a") as handle:
        handle.write('{"step": 2, "lo')  # the trainer is mid-write while the studio polls
    assert [e["step"] for e in run.events()] == [1]
    assert run.last_event()["step"] == 1
    assert RunDir.create(tmp_path / "runs", "empty", {}).last_event() is None
    with pytest.raises(FileExistsError):
        RunDir.create(tmp_path / "runs", "demo", {}, run_id=run.id)
    with pytest.raises(ValueError, match="run kind"):
        RunDir.create(tmp_path / "runs", "Bad Kind", {})


def test_sigterm_stops_at_the_next_step_and_saves(tmp_path: Path, tiny_lm_dir: Path) -> None:
    run = RunDir.create(tmp_path / "runs", "demo", {})
    with run.log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "run_tiny_training.py"), str(run.path), str(tiny_lm_dir), "200"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while not run.events() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.events(), run.tail_log()
    assert run.is_alive()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, run.tail_log()
    status = run.status()
    assert status["state"] == "cancelled" and not run.is_alive()
    last = run.last_checkpoint()
    assert last is not None and int(last.name.split("-")[1]) < 200  # stopped early, with a checkpoint
    assert (run.checkpoint_dir / "config.json").is_file()  # and the model it had so far


def test_a_run_killed_unseen_is_lost_for_every_reader(tmp_path: Path, tiny_lm_dir: Path, capsys) -> None:
    from rlhf.cli import main

    run = RunDir.create(tmp_path / "runs", "sft", {})
    with run.log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "run_tiny_training.py"), str(run.path), str(tiny_lm_dir), "200"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 120
    while not run.events() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.effective_state() == "running"
    assert main(["runs", "list", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "running" in capsys.readouterr().out
    proc.kill()  # SIGKILL: no chance to write how it ended
    proc.wait(timeout=30)
    assert run.status()["state"] == "running"  # the file still says so ...
    assert run.effective_state() == "lost"  # ... every reader knows better
    assert main(["runs", "list", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert run.id in out and "lost" in out and "is gone without reporting" in out
    assert main(["runs", "list", "--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    (row,) = __import__("json").loads(capsys.readouterr().out)
    assert row["state"] == "lost" and row["kind"] == "sft" and row["step"]


def test_a_reused_pid_is_not_taken_for_the_run(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "runs", "ppo", {})
    # the pid is alive (this test's own process), but it started at another time: not our run
    run.set_status(state="running", pid=os.getpid(), pid_started=1.0)
    assert not run.is_alive() and run.effective_state() == "lost"
    with run_guard(run, handle_sigterm=False):
        assert run.is_alive() and run.effective_state() == "running"
    assert run.effective_state() == "finished"
