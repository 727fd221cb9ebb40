"""The permission module: the rules, the README's table, data paths."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from annotations.accounts import Annotator
from studio import permissions
from studio.permissions import RULES, allowed, data_path, default_data_roots, markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_shows_the_table_the_code_enforces() -> None:
    assert markdown_table() in (ROOT / "README.md").read_text()


def test_annotators_may_rank_chat_and_battle_only() -> None:
    ana, boss = Annotator(1, "ana", "annotator", True), Annotator(2, "boss", "admin", True)
    assert {r.action for r in RULES if allowed(ana, r.action)} == {
        permissions.RANK,
        permissions.CHAT,
        permissions.ARENA,
        permissions.FEEDBACK,
    }
    assert all(allowed(boss, r.action) for r in RULES)
    assert not allowed(Annotator(3, "old", "admin", False), permissions.TRAIN)  # deactivated
    assert not allowed(Annotator(4, "import", "import", True), permissions.RANK)
    assert not allowed(boss, "launch-missiles")  # unknown actions are refused


def test_data_paths(tmp_path: Path, monkeypatch) -> None:
    extra = tmp_path / "shared-data"
    extra.mkdir()
    monkeypatch.setenv("STUDIO_DATA_DIRS", str(extra))
    roots = default_data_roots(tmp_path / "home", tmp_path / "db")
    assert roots[0] == (tmp_path / "home" / "data").resolve() and extra.resolve() in roots
    assert data_path(roots, "a/b.jsonl") == roots[0] / "a" / "b.jsonl"
    assert data_path(roots, str(extra / "x.csv")) == extra.resolve() / "x.csv"
    assert data_path(roots, str(tmp_path / "db" / "snapshots" / "snap-1")).name == "snap-1"
    for bad in ("", "   ", "../outside.jsonl", "/etc/passwd", str(tmp_path / "home" / "models.json"), "a\x00b"):
        with pytest.raises(gr.Error):
            data_path(roots, bad)
