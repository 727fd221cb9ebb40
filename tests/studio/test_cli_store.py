"""The store commands of rlhf-studio: projects, import, snapshot, a database held by a studio,
a database that does not exist (a typo in --db), owner-only files, and import messages phrased
for the command line or the browser."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

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
    assert main(["projects", "create", "prefs", "--db", db, "--create", "--guidelines", str(guidelines)]) == 0
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
    # --kto: each pairwise ranking's better reply desirable, the worse undesirable (no thumbs given yet)
    assert main(["snapshot", "--project", "prefs", "--db", db, "--kto"]) == 0
    out = capsys.readouterr().out
    assert "new snapshot" in out and "KTO data: 5 desirable, 5 undesirable replies (0 from thumbs, 10 from rankings" in out
    kto_folder = Path(out.split("folder: ")[1].strip())
    from rlhf.kto_data import read_kto_examples

    examples = read_kto_examples(kto_folder)
    assert sorted(e.label for e in examples) == [False] * 5 + [True] * 5
    assert {(e.completion, e.label) for e in examples} >= {(PAIRS[0]["chosen"], True), (PAIRS[0]["rejected"], False)}


def test_bad_import_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = str(tmp_path / "s.duckdb")
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps(PAIRS[0]) + "\n" + '{"prompt": "x", "chosen": "y", "rejected": 3}\n')
    assert main(["projects", "create", "prefs", "--db", db, "--create"]) == 0
    assert main(["import", str(data), "--project", "prefs", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "pairs.jsonl line 2: field 'rejected' must be text" in err and "Nothing was imported" in err
    assert "rerun with --skip-invalid" in err and "tick" not in err
    assert main(["import", str(data), "--project", "nope", "--db", db]) == 2
    assert "no project 'nope'" in capsys.readouterr().err
    assert main(["snapshot", "--project", "prefs", "--db", db]) == 2
    assert "no submitted rankings" in capsys.readouterr().err


def test_cli_refuses_a_database_held_by_a_running_studio(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "s.duckdb"
    with database_held_by_another_process(db) as pid:
        assert main(["projects", "create", "x", "--db", str(db), "--create"]) == 2
        err = capsys.readouterr().err
        assert f"in use by process {pid}" in err and "studio" in err


COMMANDS = [
    ["projects", "list"],
    ["projects", "create", "x"],
    ["import", "FILE", "--project", "x"],
    ["snapshot"],
    ["serve"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_database_that_does_not_exist_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture, command: list[str]) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps(PAIRS[0]))
    typo = tmp_path / "typo.duckdb"
    argv = [str(data) if a == "FILE" else a for a in command]
    assert main([*argv, "--db", str(typo)]) == 2
    err = capsys.readouterr().err
    assert f"the database {typo} does not exist" in err and "--create" in err and "rlhf-studio init" in err
    assert not typo.exists()


def test_studio_db_naming_a_missing_file_is_refused_too(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_DB", str(tmp_path / "typo.duckdb"))
    assert main(["projects", "list"]) == 2
    assert "typo.duckdb does not exist" in capsys.readouterr().err


def test_create_makes_the_database_and_serve_accepts_it(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    import studio.app

    served: list[str] = []
    monkeypatch.setattr(studio.app, "serve", lambda args: served.append(args.db) or 0)
    db = tmp_path / "new.duckdb"
    assert main(["serve", "--db", str(db)]) == 2 and not served
    assert main(["serve", "--db", str(db), "--create"]) == 0 and served == [str(db)]
    assert main(["projects", "list", "--db", str(db), "--create"]) == 0 and db.exists()
    assert main(["projects", "list", "--db", str(db)]) == 0  # exists now


def test_init_still_creates_the_database(tmp_path: Path, capsys: pytest.CaptureFixture, studio_home) -> None:
    db = tmp_path / "fresh.duckdb"
    assert main(["init", "--db", str(db), "--skip-models"]) == 0 and db.exists()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_commands_restore_the_umask_for_in_process_callers(tmp_path: Path) -> None:
    before = _umask()
    main(["projects", "list", "--db", str(tmp_path / "s.duckdb"), "--create"])
    assert _umask() == before


def test_the_database_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    """The real command in a fresh process with a permissive umask: both files come out 0600."""
    script = textwrap.dedent("""
        import json, os, stat, sys
        os.umask(0o022)
        from annotations import store as st
        modes = {}
        real_close = st.Store.close
        def close(self):  # look while the database is open: closing checkpoints and removes the WAL
            for name in (self.path, self.path.with_name(self.path.name + ".wal")):
                if name.exists():
                    modes[name.suffix] = oct(stat.S_IMODE(name.stat().st_mode))
            real_close(self)
        st.Store.close = close
        from studio.cli import main
        rc = main(sys.argv[1:])
        print(json.dumps({"rc": rc, "modes": modes}))
    """)
    db = tmp_path / "s.duckdb"
    data = tmp_path / "p.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in PAIRS))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    results = []
    for argv in (["projects", "create", "p", "--db", str(db), "--create"], ["import", str(data), "--project", "p", "--db", str(db)]):
        out = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert out.returncode == 0, out.stderr
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    # The import opened an existing file: its new WAL is owner-only because of the umask alone.
    assert results[1]["modes"] == {".duckdb": "0o600", ".wal": "0o600"}
    assert results[0]["modes"][".duckdb"] == "0o600" and stat.S_IMODE(db.stat().st_mode) == 0o600


def test_launch_py_creates_a_missing_database_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    import launch

    seen: list[int] = []
    monkeypatch.setattr(launch, "serve", lambda args: seen.append(_umask()) or 0)
    before = _umask()
    try:
        assert launch.main(["--db", str(tmp_path / "team.duckdb")]) == 0
    finally:
        os.umask(before)
    assert seen == [0o077]
    assert "No database at" in capsys.readouterr().err


def test_import_reports_duplicates_and_left_out_records(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = str(tmp_path / "s.duckdb")
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join([json.dumps(PAIRS[0]), "{broken", json.dumps(PAIRS[0]), json.dumps(PAIRS[1])]))
    assert main(["projects", "create", "prefs", "--db", db, "--create"]) == 0
    assert main(["import", str(data), "--project", "prefs", "--db", db, "--skip-invalid"]) == 0
    out = capsys.readouterr().out
    assert "imported 2 prompts, 4 replies, 2 rankings" in out
    assert "Skipped 1 duplicate record" in out and "pairs.jsonl line 3." in out
    assert "skipped: pairs.jsonl line 2: not valid JSON" in out
    assert main(["import", str(data), "--project", "prefs", "--db", db, "--skip-invalid"]) == 0
    assert "imported 0 prompts, 0 replies, 0 rankings into prefs (nothing new)" in capsys.readouterr().out


def test_the_admin_screen_phrases_the_hint_in_its_own_words(tmp_path: Path) -> None:
    from annotations.accounts import add_annotator
    from annotations.store import Store
    from studio import admin

    with Store(tmp_path / "s.duckdb") as store:
        store.create_project("p")
        add_annotator(store, "boss", "boss-password", role="admin")
        ctx = SimpleNamespace(store=store)
        boss = SimpleNamespace(username="boss")
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": "ok"}\n{"prompt": "ok"}\n{"prompt": \n')
        text = admin.import_upload(ctx, "p", str(bad), "auto", False, boss)
        assert "nothing was written" in text and "bad.jsonl line 3: not valid JSON" in text
        assert "tick &#x27;Leave bad records out&#x27;" in text and "--skip-invalid" not in text
        text = admin.import_upload(ctx, "p", str(bad), "auto", True, boss)
        assert "Imported **1** prompts" in text and "Skipped 1 duplicate record" in text and "bad.jsonl line 3" in text
