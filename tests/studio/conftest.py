"""A studio context on a fresh database, with accounts and a tiny model registered."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from annotations.accounts import add_annotator
from annotations.store import PromptRecord, ReplyRecord
from studio.context import StudioContext


def as_user(name: str) -> SimpleNamespace:
    """What handlers read off gr.Request: the logged-in username."""
    return SimpleNamespace(username=name)


@pytest.fixture
def ctx(tmp_path: Path, studio_home: Path, tiny_lm_dir: Path):
    context = StudioContext.open(tmp_path / "s.duckdb", device="cpu")
    context.registry.add(tiny_lm_dir, name="tiny")
    add_annotator(context.store, "boss", "boss-password", role="admin")
    add_annotator(context.store, "ana", "ana-password")
    yield context
    context.close()


def fill(ctx: StudioContext, name: str = "p", k: int = 3, prompts: int = 2, min_submitted: int = 1) -> int:
    pid = ctx.store.create_project(name, k=k, min_submitted=min_submitted, guidelines="Be fair.")
    for prompt_id in ctx.store.add_prompts(pid, [PromptRecord(f"question {i}") for i in range(prompts)]):
        ctx.store.add_replies(prompt_id, [ReplyRecord(f"reply {prompt_id}.{j} <b>bold</b>") for j in range(k)])
    return pid
