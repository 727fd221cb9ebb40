"""Candidate replies generated in the background, and the chat's send-to-queue."""

from __future__ import annotations

import gradio as gr
import pytest

from annotations.store import PromptRecord
from rlhf.generation import SamplingParams
from studio import chat
from studio.candidates import plan
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
