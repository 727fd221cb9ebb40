"""Candidate replies generated in the background, and the chat's send-to-queue."""

from __future__ import annotations

import gradio as gr
import pytest

from annotations.store import PromptRecord
from rlhf.generation import SamplingParams
from studio import chat
from studio.candidates import jobs_frame, plan
from studio.context import StudioContext
from tests.studio.conftest import as_user


def test_plan_alternates_models() -> None:
    work = plan([(1, 0, 3), (2, 1, 2)], ["a", "b"])
    assert work == {"a": [1, 1, 2], "b": [1, 2]}  # prompt 2 already has one reply, so it starts at b
    assert plan([(1, 0, 2)], ["solo"]) == {"solo": [1, 1]}


def test_job_fills_prompts_up_to_k_with_agents(ctx: StudioContext) -> None:
    pid = ctx.store.create_project("p", k=3)
    ids = ctx.store.add_prompts(pid, [PromptRecord(f"question {i}") for i in range(3)])
    job = ctx.jobs.start(pid, ["tiny"], SamplingParams(temperature=1.0, max_new_tokens=6, seed=1))
    ctx.jobs.wait(job)
    assert job.state == "done" and job.total == 9 and job.done == 9 and ctx.jobs.latest(pid) is job
    replies = [r for prompt_id in ids for r in ctx.store.replies(prompt_id)]
    assert len(replies) == 9 - job.empty  # an empty generation is left for a later run
    assert all(r.model == "tiny" and r.sampling["temperature"] == 1.0 and r.checkpoint for r in replies)
    assert "9 of 9 replies, finished" in job.summary()


def test_jobs_refuse_what_cannot_work(ctx: StudioContext) -> None:
    pid = ctx.store.create_project("p", k=2)
    ctx.store.add_prompts(pid, [PromptRecord("q")])
    with pytest.raises(ValueError, match="temperature 0 writes the same reply"):
        ctx.jobs.start(pid, ["tiny"], SamplingParams(temperature=0))
    with pytest.raises(ValueError, match="at least one model"):
        ctx.jobs.start(pid, [], SamplingParams())
    with pytest.raises(ValueError, match="minilm-l6 is not a model that writes replies"):
        ctx.jobs.start(pid, ["minilm-l6"], SamplingParams())


def test_a_failing_job_says_why(ctx: StudioContext, monkeypatch) -> None:
    pid = ctx.store.create_project("p", k=2)
    ctx.store.add_prompts(pid, [PromptRecord("q")])

    def broken(name):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ctx.engines, "get", broken)
    job = ctx.jobs.wait(ctx.jobs.start(pid, ["tiny"], SamplingParams(temperature=1.0)))
    assert job.state == "failed" and "out of memory" in job.summary()


def test_chat_sends_the_last_question_with_its_answer(ctx: StudioContext) -> None:
    pid = ctx.store.create_project("from-chat", k=3)
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": "what is DuckDB?"}]},
        {"role": "assistant", "content": "An embedded database."},
    ]
    # An annotator's history is whatever their browser sends: they may not write prompts or replies.
    with pytest.raises(gr.Error, match="Not allowed"):
        chat.send_to_queue(ctx, history, "from-chat", "tiny", 0.0, 0.95, 8, as_user("ana"))
    assert ctx.store.prompts(pid) == []
    message = chat.send_to_queue(ctx, history, "from-chat", "tiny", 0.0, 0.95, 8, as_user("boss"))
    assert "generating 2 more replies with tiny" in message
    ctx.jobs.wait(ctx.jobs.latest(pid))
    [prompt] = ctx.store.prompts(pid)
    assert [m["role"] for m in prompt.messages] == ["user", "assistant", "user"] and prompt.source == "chat"
    replies = ctx.store.replies(prompt.id)
    assert replies[0].text == "An embedded database." and replies[0].model == "tiny"
    assert 1 <= len(replies) <= 3
    with pytest.raises(gr.Error, match="Ask something first"):
        chat.send_to_queue(ctx, [], "from-chat", "tiny", 0.7, 0.95, 8, as_user("boss"))
    with pytest.raises(gr.Error, match="Choose the project"):
        chat.send_to_queue(ctx, history, None, "tiny", 0.7, 0.95, 8, as_user("boss"))


# -- job records ----------------------------------------------------------------------------------
def test_jobs_are_recorded_with_their_progress(ctx: StudioContext) -> None:
    import os

    from annotations.jobs import get_job

    pid = ctx.store.create_project("p", k=2)
    ctx.store.add_prompts(pid, [PromptRecord("q1"), PromptRecord("q2")])
    job = ctx.jobs.wait(ctx.jobs.start(pid, ["tiny"], SamplingParams(temperature=1.0, max_new_tokens=4, seed=3), owner="boss"))
    record = get_job(ctx.store, job.id)
    assert record.state == "done" and record.kind == "candidates" and record.owner == "boss" and record.pid == os.getpid()
    assert record.detail["models"] == ["tiny"] and record.detail["done"] == record.detail["total"] == 4
    assert record.detail["sampling"]["max_new_tokens"] == 4 and record.ended is not None and record.error == ""


@pytest.mark.parametrize(
    "error, reason",
    [
        (RuntimeError("the weights are corrupt"), "RuntimeError: the weights are corrupt"),
        (MemoryError(), "out of memory while generating (MemoryError); lower max new tokens"),
    ],
)
def test_a_failed_job_keeps_its_reason(ctx: StudioContext, monkeypatch, error: Exception, reason: str) -> None:
    from annotations.jobs import get_job

    pid = ctx.store.create_project("p", k=2)
    ctx.store.add_prompts(pid, [PromptRecord("q")])
    engine = ctx.engines.get("tiny")

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(engine, "generate", broken)
    job = ctx.jobs.wait(ctx.jobs.start(pid, ["tiny"], SamplingParams(temperature=1.0)))
    record = get_job(ctx.store, job.id)
    assert job.state == "failed" and record.state == "failed" and record.error.startswith(reason) and record.ended is not None
    frame = jobs_frame(ctx.jobs)
    assert frame.iloc[0]["state"] == "failed" and frame.iloc[0]["reason"].startswith(reason) and frame.iloc[0]["project"] == "p"


def test_jobs_left_running_by_a_stopped_studio_become_lost(ctx: StudioContext) -> None:
    import subprocess
    import sys

    from annotations.jobs import create_job, get_job, update_job
    from studio.candidates import CandidateJobs

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    running = create_job(ctx.store, "candidates", None, "boss", {"models": ["tiny"]}, pid=int(gone))
    update_job(ctx.store, running, state="running")
    queued = create_job(ctx.store, "candidates", None, "boss", {}, pid=int(gone))
    finished = create_job(ctx.store, "candidates", None, "boss", {}, pid=int(gone))
    update_job(ctx.store, finished, state="done", ended=True)
    elsewhere = create_job(ctx.store, "candidates", None, "boss", {}, pid=1)  # a live process that is not this studio
    restarted = CandidateJobs(ctx.store, ctx.engines, ctx.registry)  # what a new studio does as it starts
    assert sorted(restarted.lost) == sorted([running, queued])
    for job_id in (running, queued):
        record = get_job(ctx.store, job_id)
        assert record.state == "lost" and record.error == f"the studio stopped while this job ran (pid {gone})" and record.ended
    assert get_job(ctx.store, finished).state == "done" and get_job(ctx.store, elsewhere).state == "queued"
    assert "lost" in set(jobs_frame(restarted)["state"])


def test_replies_to_cut_prompts_say_so(ctx: StudioContext) -> None:
    pid = ctx.store.create_project("long", k=2)
    [long_id, short_id] = ctx.store.add_prompts(pid, [PromptRecord("tell me about the sea " * 120), PromptRecord("hi")])
    job = ctx.jobs.wait(ctx.jobs.start(pid, ["tiny"], SamplingParams(temperature=1.0, max_new_tokens=4, seed=5)))
    assert job.state == "done", job.error
    assert job.truncated == 2 and "cut to the model's context" in job.summary()  # the long prompt's 2 replies
    cut = [r.sampling.get("truncated_tokens", 0) for r in ctx.store.replies(long_id)]
    assert cut and all(n > 0 for n in cut)
    assert all("truncated_tokens" not in r.sampling for r in ctx.store.replies(short_id))
