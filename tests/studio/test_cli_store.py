"""The store commands of rlhf-studio: projects, import, snapshot, and a database held by a studio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.cli import main
from tests.helpers import database_held_by_another_process

PAIRS = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(5)]


def test_projects_import_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = str(tmp_path / "s.duckdb")
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in PAIRS))
    guidelines = tmp_path / "g.md"
    guidelines.write_text("# Be kind")
    assert main(["projects", "create", "prefs", "--db", db, "--guidelines", str(guidelines)]) == 0
    assert main(["import", str(data), "--project", "prefs", "--db", db]) == 0
    assert "imported 5 prompts, 10 replies, 5 rankings into prefs (5 preference)" in capsys.readouterr().out
    assert main(["projects", "list", "--db", db]) == 0
    assert "prefs  2  1    pairwise  5" in capsys.readouterr().out
    assert main(["snapshot", "--project", "prefs", "--db", db, "--margin"]) == 0
    out = capsys.readouterr().out
    assert "new snapshot snap-" in out and "5 pairs from 5 rankings" in out
    folder = Path(out.split("folder: ")[1].strip())
    assert folder.parent == tmp_path / "snapshots" and (folder / "manifest.json").is_file()
    assert main(["snapshot", "--project", "prefs", "--db", db, "--margin"]) == 0
    assert "unchanged since snapshot" in capsys.readouterr().out


def test_bad_import_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = str(tmp_path / "s.duckdb")
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps(PAIRS[0]) + "\n" + '{"prompt": "x", "chosen": "y", "rejected": 3}\n')
    assert main(["projects", "create", "prefs", "--db", db]) == 0
    assert main(["import", str(data), "--project", "prefs", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "pairs.jsonl line 2: field 'rejected' must be text" in err and "--skip-invalid" in err
    assert main(["import", str(data), "--project", "nope", "--db", db]) == 2
    assert "no project 'nope'" in capsys.readouterr().err
    assert main(["snapshot", "--project", "prefs", "--db", db]) == 2
    assert "no submitted rankings" in capsys.readouterr().err


def test_cli_refuses_a_database_held_by_a_running_studio(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "s.duckdb"
    with database_held_by_another_process(db) as pid:
        assert main(["projects", "create", "x", "--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert f"in use by process {pid}" in err and "studio" in err
