"""The DuckDB store: creation, migrations, single writer, transactional writes, demo seed."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from annotations.demo import DEMO_PROJECT, demo_prompts, seed_demo
from annotations.schema import LATEST_VERSION
from annotations.store import PromptRecord, Store, StoreError, StoreLocked
from tests.helpers import database_held_by_another_process


def test_new_file_gets_the_latest_schema(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        assert store.schema_version() == LATEST_VERSION
    with Store(tmp_path / "s.duckdb") as store:  # reopening migrates nothing and loses nothing
        assert store.schema_version() == LATEST_VERSION


def test_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(StoreError, match="newer than this studio knows"):
        Store(path)


def test_project_rules(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        pid = store.create_project("p", guidelines="be kind", k=2)
        assert store.project("p").mode == "pairwise" and store.project(pid).guidelines == "be kind"
        assert store.project(store.create_project("q", k=4, min_submitted=3)).mode == "ranking"
        for kwargs, message in [
            ({"name": "p"}, "already exists"),
            ({"name": " "}, "needs a name"),
            ({"name": "r", "k": 1}, "at least 2 replies"),
            ({"name": "r", "min_submitted": 0}, "min_submitted"),
            ({"name": "r", "k": 3, "mode": "pairwise"}, "exactly 2"),
        ]:
            with pytest.raises(StoreError, match=message):
                store.create_project(**kwargs)
        assert [p.name for p in store.projects()] == ["p", "q"]
        with pytest.raises(StoreError, match="no project 'zzz'; projects: p, q"):
            store.project("zzz")


def test_add_prompts_is_all_or_nothing(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        pid = store.create_project("p")
        good = [PromptRecord("one"), PromptRecord("two", messages=[{"role": "user", "content": "two"}], metadata={"x": 1})]
        assert len(store.add_prompts(pid, good)) == 2
        with pytest.raises(StoreError, match="prompt 2 is empty"):
            store.add_prompts(pid, [PromptRecord("three"), PromptRecord("  ")])
        with pytest.raises(StoreError, match="no project with id 99"):
            store.add_prompts(99, [PromptRecord("x")])
        assert store.count_prompts(pid) == 2


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        pid = store.create_project("p")
        with pytest.raises(RuntimeError):
            with store.transaction() as cur:
                cur.execute("INSERT INTO prompts (project_id, text) VALUES (?, 'x')", [pid])
                raise RuntimeError("crash in the middle")
        assert store.count_prompts(pid) == 0


def test_second_process_gets_a_clear_locked_error(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with database_held_by_another_process(path) as pid:
        with pytest.raises(StoreLocked, match=rf"in use by process {pid}.*--db"):
            Store(path)
    with Store(path) as store:  # free again once the holder exits
        assert store.schema_version() == LATEST_VERSION


def test_demo_seed_is_idempotent(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        assert seed_demo(store) is True
        assert seed_demo(store) is False
        project = store.project(DEMO_PROJECT)
        assert store.count_prompts(project.id) == len(demo_prompts()) >= 20
        assert "Rank the replies" in project.guidelines
