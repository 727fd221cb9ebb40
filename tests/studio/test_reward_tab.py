"""The Reward model screen's handlers and the run launcher, with real training subprocesses.

The loop of the issue: rankings made in the studio -> a snapshot -> a reward run launched from
the screen (a subprocess) -> the registered model scores replies in the "try it" box.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path

import gradio as gr
import pytest

from annotations.accounts import get_annotator
from annotations.queue import next_prompt, submit_ranking
from annotations.store import PromptRecord, ReplyRecord
from rlhf.reward import RewardRunConfig
from studio import admin, reward_tab
from studio.context import StudioContext
from studio.launcher import RunLauncher
from studio.run_monitor import runs_frame
from tests.studio.conftest import as_user

BOSS, ANA = as_user("boss"), as_user("ana")
WORDS = ["capital", "France", "Paris", "reward", "model", "policy", "sea", "light"]


def data_folder(ctx: StudioContext) -> Path:
    """The first data folder ($STUDIO_HOME/data): where an admin's typed paths may point."""
    folder = ctx.data_roots[0]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def wait_for(predicate, timeout: float = 240.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def rank_in_studio(ctx: StudioContext, prompts: int = 48) -> None:
    """An annotator ranks pairs where the reply ending in 'good good' is always better."""
    pid = ctx.store.create_project("rm", k=2, min_submitted=1)
    records = [PromptRecord(f"{WORDS[i % 8]} {WORDS[(i * 3) % 8]} ?") for i in range(prompts)]
    for i, prompt_id in enumerate(ctx.store.add_prompts(pid, records)):
        filler = f"{WORDS[(i * 5) % 8]} {WORDS[(i * 7) % 8]}"
        ctx.store.add_replies(prompt_id, [ReplyRecord(f"{filler} bad bad"), ReplyRecord(f"{filler} good good")])
    ana = get_annotator(ctx.store, "ana").id
    while (item := next_prompt(ctx.store, pid, ana)) is not None:
        ranks = {r.id: (1 if r.text.endswith("good good") else 2) for r in item.replies}
        submit_ranking(ctx.store, ana, item.prompt.id, ranks)


@pytest.fixture
def rm_ctx(ctx: StudioContext, tiny_encoder_dir: Path) -> StudioContext:
    ctx.registry.add(tiny_encoder_dir, name="tiny-enc")
    return ctx


SETTINGS = {"method": "full", "learning_rate": 3e-3, "epochs": 6.0, "batch_size": 8, "max_length": 32, "register_as": "studio-rm"}


def test_rankings_to_reward_model_to_try_it(rm_ctx: StudioContext) -> None:
    ctx = rm_ctx
    rank_in_studio(ctx)
    snap = admin.make_snapshot(ctx, "rm", "all_pairs", "majority", False, False, BOSS)
    [(label, folder)] = reward_tab.data_choices(ctx)
    assert folder == snap["folder"] and "48 pairs" in label

    yaml_text, command = reward_tab.preview(ctx, folder, "tiny-enc", SETTINGS)
    assert "learning_rate: 0.003" in yaml_text and "# peak learning rate" in yaml_text
    assert "rlhf-studio train reward --config run.yaml" in command

    run_id = reward_tab.launch(ctx, folder, "tiny-enc", SETTINGS, BOSS)
    run = ctx.launcher.get(run_id)
    wait_for(lambda: not ctx.launcher.state(run).alive, what="the reward run to end")
    assert ctx.launcher.state(run).state == "finished", run.tail_log()
    assert (run.path / "config.yaml").read_text().count("register_as: studio-rm") == 1
    # Owner-only: the runs folder and the run's folder 0700, what the studio and the trainer wrote 0600.
    assert {stat.S_IMODE(p.stat().st_mode) for p in (ctx.launcher.root, run.path)} == {0o700}
    written = [p for p in run.path.rglob("*") if p.is_file()]
    assert {"config.yaml", "status.json", "run.log", "events.jsonl", "metrics.json"} <= {p.name for p in written}
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in written)
    metrics = run.metrics()
    assert metrics["eval_accuracy"] >= 0.9 and metrics["registered_as"] == "studio-rm"
    losses = [e["loss"] for e in run.events() if "loss" in e]
    assert losses[-1] < losses[0]
    frame = runs_frame(ctx.launcher, "reward", reward_tab.METRICS)
    assert frame.iloc[0]["run"] == run_id and frame.iloc[0]["state"] == "finished"
    entry = ctx.registry.get("studio-rm")
    assert entry.kind == "reward-model" and entry.lineage["data"] == folder

    verdict = reward_tab.try_it(ctx, "studio-rm", "Paris sea ?", "light model bad bad", "light model good good", BOSS)
    assert "prefers reply B" in verdict


def test_bad_launches_are_refused_and_make_no_run(rm_ctx: StudioContext) -> None:
    ctx = rm_ctx
    data = data_folder(ctx)
    with pytest.raises(gr.Error, match="Choose a snapshot"):
        reward_tab.launch(ctx, None, "tiny-enc", SETTINGS, BOSS)
    with pytest.raises(gr.Error, match="does not exist"):
        reward_tab.launch(ctx, str(data / "nope.jsonl"), "tiny-enc", SETTINGS, BOSS)
    (data / "pairs.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(gr.Error, match="unknown model"):
        reward_tab.launch(ctx, "pairs.jsonl", "no-such-model", SETTINGS, BOSS)  # relative: inside the first data folder
    with pytest.raises(gr.Error, match="method must be"):
        reward_tab.launch(ctx, str(data / "pairs.jsonl"), "tiny-enc", {**SETTINGS, "method": "magic"}, BOSS)
    with pytest.raises(gr.Error, match="admin"):
        reward_tab.launch(ctx, str(data / "pairs.jsonl"), "tiny-enc", SETTINGS, ANA)
    # Checked before a run folder exists: the data's records, the held-out file, register_as.
    (data / "bad.jsonl").write_text('{"prompt": "p", "chosen": "a"}\n')
    with pytest.raises(gr.Error, match="bad.jsonl line 1: needs 'chosen' and 'rejected'"):
        reward_tab.launch(ctx, str(data / "bad.jsonl"), "tiny-enc", SETTINGS, BOSS)
    with pytest.raises(gr.Error, match="eval_data: .*gone.jsonl not found"):
        reward_tab.launch(ctx, str(data / "pairs.jsonl"), "tiny-enc", {**SETTINGS, "eval_data": str(data / "gone.jsonl")}, BOSS)
    with pytest.raises(gr.Error, match="register_as: 'minilm-l6' is a built-in model name"):
        reward_tab.launch(ctx, str(data / "pairs.jsonl"), "tiny-enc", {**SETTINGS, "register_as": "minilm-l6"}, BOSS)
    with pytest.raises(gr.Error, match="register_as: a model called 'tiny' is already registered"):
        reward_tab.launch(ctx, str(data / "pairs.jsonl"), "tiny-enc", {**SETTINGS, "register_as": "tiny"}, BOSS)
    assert ctx.launcher.runs() == [] and not ctx.launcher.root.exists()
    with pytest.raises(gr.Error, match="Choose a reward model"):
        reward_tab.try_it(ctx, None, "p", "a", "b", BOSS)
    with pytest.raises(gr.Error, match="not a reward model"):
        reward_tab.try_it(ctx, "tiny", "p", "a", "b", BOSS)


def _long_run_config(tmp_path: Path) -> RewardRunConfig:
    rows = [f'{{"prompt": "q{i}", "chosen": "good {i}", "rejected": "bad {i}"}}' for i in range(64)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(rows) + "\n")
    return RewardRunConfig(
        data=str(tmp_path / "pairs.jsonl"), base_model="tiny-enc", method="full", epochs=400, batch_size=4, max_length=16, save_steps=5
    )


def test_cancel_stops_and_saves_and_a_restarted_studio_reattaches(rm_ctx: StudioContext, tmp_path: Path) -> None:
    ctx = rm_ctx
    run = ctx.launcher.start("reward", _long_run_config(tmp_path))
    wait_for(lambda: any("loss" in e for e in run.events()), what="the first logged step")
    # A studio restarted on the same folder (a new launcher, no child handles) sees the run going.
    restarted = RunLauncher(ctx.launcher.root)
    assert restarted.state(run).alive and restarted.state(run).state == "running"
    assert runs_frame(restarted, "reward", reward_tab.METRICS).iloc[0]["state"] == "running"
    assert "Asked run" in restarted.cancel(run.id)
    wait_for(lambda: not ctx.launcher.state(run).alive, what="the run to stop")
    assert ctx.launcher.state(run).state == "cancelled", run.tail_log()
    assert run.last_checkpoint() is not None and (run.checkpoint_dir / "config.json").is_file()
    assert run.metrics()["stopped_early"] is True
    with pytest.raises(ValueError, match="not running"):
        ctx.launcher.cancel(run.id)


def test_a_process_that_dies_without_reporting_is_shown_as_failed(rm_ctx: StudioContext, tmp_path: Path) -> None:
    import os
    import signal

    ctx = rm_ctx
    run = ctx.launcher.start("reward", _long_run_config(tmp_path))
    wait_for(lambda: run.status().get("state") == "running", what="the run to start")
    os.kill(run.status()["pid"], signal.SIGKILL)  # no chance to write its status
    wait_for(lambda: ctx.launcher.state(run).state != "running", what="the launcher to notice")
    assert ctx.launcher.state(run).state == "failed"
    assert "exited with status -9" in run.status()["error"]
    row = runs_frame(ctx.launcher, "reward", reward_tab.METRICS).iloc[0]
    assert row["state"] == "failed" and "exited with status -9" in row["error"]  # the runs table says why
    # A studio that did not start a run whose process vanished calls it lost, not running.
    run.set_status(state="running", error=None)
    restarted = RunLauncher(ctx.launcher.root)
    lost = restarted.state(run)
    assert lost.state == "lost" and not lost.alive and "gone" in lost.error
    row = runs_frame(restarted, "reward", reward_tab.METRICS).iloc[0]
    assert row["state"] == "lost" and "gone without reporting" in row["error"]
