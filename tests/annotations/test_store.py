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


def test_a_new_database_is_owner_only_and_an_existing_one_keeps_its_mode(tmp_path: Path) -> None:
    import os
    import stat

    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.create_project("p")  # a write, so the write-ahead log exists
        for f in (path, Path(f"{path}.wal")):
            if f.exists():
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    os.chmod(path, 0o640)  # the owner's choice for an existing file is left alone
    Store(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_bulk_insert_takes_ids_from_the_sequence(tmp_path: Path) -> None:
    from annotations.store import bulk_insert

    with Store(tmp_path / "s.duckdb") as store:
        pid = store.create_project("p")
        [first] = store.add_prompts(pid, [PromptRecord("before")])
        with store.transaction() as cur:
            ids = bulk_insert(cur, "prompts", "prompt_id_seq", {"project_id": [pid, pid], "text": ["a", "b"]})
            assert bulk_insert(cur, "prompts", "prompt_id_seq", {"project_id": [], "text": []}) == []
        [after] = store.add_prompts(pid, [PromptRecord("after")])
        assert first < min(ids) and max(ids) < after
        assert [p.text for p in store.prompts(pid)] == ["before", "a", "b", "after"]


def test_project_and_template_names_hold_no_markup(store: Store) -> None:
    from annotations.templates import save_template

    assert store.project(store.create_project("  Team A (v2), #3  ")).name == "Team A (v2), #3"
    for bad in (
        "![x](https://evil.invalid/b.png)",
        "[phish](https://evil.invalid)",
        "<img src=x>",
        "see https://evil.invalid",
        "www.evil.invalid",
        "`code`",
        "a\u202eb",
        "x" * 101,
        "   ",
    ):
        with pytest.raises(StoreError):
            store.create_project(bad)
        with pytest.raises(StoreError):
            save_template(store, bad, {"template": "{input}"})
    assert [p.name for p in store.projects()] == ["Team A (v2), #3"]
