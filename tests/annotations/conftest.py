"""Store fixtures: a fresh DuckDB file in tmp_path, a project with replies, annotators."""

from __future__ import annotations

from pathlib import Path

import pytest

from annotations.accounts import add_annotator
from annotations.store import PromptRecord, ReplyRecord, Store


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "studio.duckdb")
    yield s
    s.close()


def fill_project(store: Store, name: str = "p", prompts: int = 3, k: int = 3, min_submitted: int = 2) -> int:
    """A project whose prompts each have k replies."""
    pid = store.create_project(name, k=k, min_submitted=min_submitted)
    for prompt_id in store.add_prompts(pid, [PromptRecord(f"question {i}") for i in range(prompts)]):
        store.add_replies(prompt_id, [ReplyRecord(f"answer {prompt_id}.{j}", model="m", sampling={"temperature": 0.7}) for j in range(k)])
    return pid


@pytest.fixture
def project(store: Store) -> int:
    return fill_project(store)


@pytest.fixture
def people(store: Store) -> dict[str, int]:
    return {name: add_annotator(store, name, "correct-horse") for name in ("ana", "bob", "cy")}
