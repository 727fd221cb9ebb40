"""Active learning from the admin console: a tiny random reward model scores the open prompts in a
background job, the figures land in the store, and the queue then serves the most uncertain first."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import gradio as gr
import pytest
import torch

from annotations.accounts import get_annotator
from annotations.jobs import create_exclusive_job, get_job
from annotations.queue import next_prompt, open_prompts, queue_settings, set_queue_order, submit_ranking
from rlhf.scoring import RewardScorer, write_format
from rlhf.uncertainty import uncertainties
from studio import active_learning, admin
from studio.context import StudioContext
from tests.studio.conftest import as_user, fill

BOSS, ANA, NOBODY = as_user("boss"), as_user("ana"), as_user(None)


def make_reward_model(folder: Path, encoder_dir: Path, heads: int, seed: int = 0) -> Path:
    """A random BERT classifier saved as a reward model: one head, or an ensemble of ``heads``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    # Weights drawn wide (initializer_range 1): with the usual 0.02 a random body reads every text
    # alike, every pair is a coin flip for every head, and every prompt's figure is the same.
    config = AutoConfig.from_pretrained(encoder_dir, num_labels=heads, initializer_range=1.0)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(encoder_dir).save_pretrained(folder)
    write_format(folder, 32, **({"heads": heads, "head_offsets": [0.0] * heads} if heads > 1 else {}))
    return folder


@pytest.fixture(scope="module")
def reward_dirs(tmp_path_factory: pytest.TempPathFactory, tiny_encoder_dir: Path) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("reward-models")
    return {heads: make_reward_model(root / f"rm-{heads}", tiny_encoder_dir, heads) for heads in (1, 3)}


@pytest.fixture
def models(ctx: StudioContext, reward_dirs: dict[int, Path]) -> dict[int, str]:
    names = {1: "rm-one", 3: "rm-ens"}
    for heads, name in names.items():
        assert ctx.registry.add(reward_dirs[heads], name=name).kind == "reward-model"
    return names


def _served_order(ctx: StudioContext, pid: int, who: int) -> list[int]:
    served = []
    while (item := next_prompt(ctx.store, pid, who)) is not None:
        submit_ranking(ctx.store, who, item.prompt.id, {r.id: n for n, r in enumerate(item.replies, 1)}, served_in=pid)
        served.append(item.prompt.id)
    return served


@pytest.mark.parametrize("heads", [3, 1])
def test_scoring_writes_each_open_prompts_uncertainty_and_the_queue_follows_it(
    ctx: StudioContext, models: dict[int, str], reward_dirs: dict[int, Path], heads: int
) -> None:
    pid = fill(ctx, "al", k=3, prompts=8, min_submitted=1)  # 8 prompts: an order found by chance is 1 in 40,320
    boss = get_annotator(ctx.store, "boss")
    written = active_learning.score_open_prompts(ctx.store, ctx.registry, pid, models[heads], boss.id, device="cpu")
    assert written == 8
    # the figures are the ones rlhf.uncertainty gives for each prompt and its shown replies
    items = open_prompts(ctx.store, pid)
    expected = uncertainties(RewardScorer.load(reward_dirs[heads], device="cpu"), [(text, replies) for _, text, replies in items])
    stored = dict(ctx.store.query("SELECT id, uncertainty FROM prompts WHERE project_id = ?", [pid]))
    assert [stored[i] for i, _, _ in items] == pytest.approx(expected, abs=1e-5)
    assert all(0 <= u <= 0.6932 for u in expected) and len({round(u, 6) for u in expected}) == 8
    settings = queue_settings(ctx.store, pid)
    assert (settings.model, settings.scored, settings.open_scored) == (models[heads], 8, 8)
    by_figure = sorted(stored, key=lambda i: -stored[i])
    assert by_figure != sorted(stored)  # the test means something: uncertainty is not the default order
    set_queue_order(ctx.store, pid, "uncertain first", by=boss.id)
    ana = get_annotator(ctx.store, "ana").id
    assert next_prompt(ctx.store, pid, ana, claim=False).prompt.id == by_figure[0]
    assert _served_order(ctx, pid, ana) == by_figure


def test_the_console_scores_in_a_worker_thread_and_shows_the_result(
    ctx: StudioContext, models: dict[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(ctx, "al", k=2, prompts=3)
    threads = []
    real = active_learning.write_uncertainties

    def spy(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(active_learning, "write_uncertainties", spy)
    order, model, line = admin.queue_order_options(ctx, "al", BOSS)
    assert (order, model) == ("default", None) and "No prompt scored yet" in line
    assert "Queue order: uncertain first." in admin.save_queue_order(ctx, "al", "uncertain first", BOSS)
    job_id = admin.score_open_prompts(ctx, "al", models[3], BOSS)
    job = active_learning.wait(ctx.store, job_id)
    assert job.state == "done", job.error
    assert job.kind == "uncertainty" and job.owner == "boss" and job.detail["written"] == 3
    assert threads and threads[0] is not threading.main_thread() and threads[0].name == f"uncertainty-{job_id}"
    bar, running, line = admin.scoring_status(ctx, job_id, "al", BOSS)
    assert not running and "3 prompts scored" in bar
    assert "Queue order: uncertain first. 3 of 3 open prompts scored (3 of 3 prompts in all) with rm-ens, last on" in line
    assert admin.queue_order_options(ctx, "al", BOSS)[:2] == ("uncertain first", "rm-ens")


def test_the_console_refuses_annotators_and_bad_requests_changing_nothing(ctx: StudioContext, models: dict[int, str]) -> None:
    pid = fill(ctx, "al", k=2, prompts=2)
    calls = [
        lambda who: admin.queue_order_options(ctx, "al", who),
        lambda who: admin.save_queue_order(ctx, "al", "uncertain first", who),
        lambda who: admin.score_open_prompts(ctx, "al", models[3], who),
        lambda who: admin.scoring_status(ctx, None, "al", who),
    ]
    for call in calls:
        with pytest.raises(gr.Error, match="Not allowed: only admins"):
            call(ANA)
        with pytest.raises(gr.Error, match="Log in first"):
            call(NOBODY)
    bad = [
        (lambda: admin.save_queue_order(ctx, "al", "random", BOSS), "queue order must be one of"),
        (lambda: admin.save_queue_order(ctx, None, "default", BOSS), "Choose a project"),
        (lambda: admin.score_open_prompts(ctx, "al", None, BOSS), "choose a reward model"),
        (lambda: admin.score_open_prompts(ctx, "al", "tiny", BOSS), "tiny is a causal-lm model, not a reward model"),
        (lambda: admin.score_open_prompts(ctx, "al", "no-such-model", BOSS), "unknown model"),
        (lambda: admin.score_open_prompts(ctx, "nowhere", models[3], BOSS), "no project"),
    ]
    for call, message in bad:
        with pytest.raises(gr.Error, match=message):
            call()
    empty = ctx.store.create_project("empty")
    with pytest.raises(gr.Error, match="no open prompts to score"):
        admin.score_open_prompts(ctx, "empty", models[3], BOSS)
    busy = create_exclusive_job(ctx.store, active_learning.KIND, pid, "boss")
    with pytest.raises(gr.Error, match=f"job {busy} is still working on this project"):
        admin.score_open_prompts(ctx, "al", models[3], BOSS)
    assert [j for (j,) in ctx.store.query("SELECT id FROM jobs")] == [busy]
    for project in (pid, empty):
        s = queue_settings(ctx.store, project)
        assert (s.order, s.model, s.scored) == ("default", None, 0)


def test_a_failed_scoring_job_keeps_its_reason_and_writes_nothing(ctx: StudioContext, reward_dirs: dict[int, Path], tmp_path: Path) -> None:
    pid = fill(ctx, "al", k=2, prompts=2)
    folder = shutil.copytree(reward_dirs[1], tmp_path / "broken-rm")
    ctx.registry.add(folder, name="broken-rm")
    (folder / "model.safetensors").write_bytes(b"not weights")  # damaged after it was registered
    job_id = admin.score_open_prompts(ctx, "al", "broken-rm", BOSS)
    job = active_learning.wait(ctx.store, job_id)
    assert job.state == "failed" and job.error
    bar, running, _ = admin.scoring_status(ctx, job_id, "al", BOSS)
    assert not running and "failed" in bar
    assert queue_settings(ctx.store, pid).scored == 0
    assert get_job(ctx.store, job_id).ended is not None
