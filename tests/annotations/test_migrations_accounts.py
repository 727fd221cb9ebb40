"""Opening an older file upgrades it in place; accounts hash passwords and guard roles."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from annotations.accounts import (
    add_annotator,
    annotators,
    authenticate,
    get_annotator,
    hash_password,
    import_annotator,
    reset_password,
    set_active,
    verify_password,
)
from annotations.schema import LATEST_VERSION, MIGRATIONS
from annotations.store import Store, StoreError


def test_a_version_1_file_is_upgraded_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))  # build a file exactly as version 1 left it
    for statement in MIGRATIONS[0].statements:
        con.execute(statement)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.execute("INSERT INTO projects (name) VALUES ('legacy')")
    con.execute("INSERT INTO prompts (project_id, text) VALUES (1, 'old prompt')")
    con.close()
    with Store(path) as store:
        assert store.schema_version() == LATEST_VERSION >= 2
        assert [p.text for p in store.prompts(store.project("legacy").id)] == ["old prompt"]
        store.add_replies(1, [__import__("annotations.store", fromlist=["ReplyRecord"]).ReplyRecord("new table works")])


def test_passwords_are_salted_scrypt(tmp_path: Path) -> None:
    h1, h2 = hash_password("correct-horse"), hash_password("correct-horse")
    assert h1 != h2 and h1.startswith("scrypt$") and "correct-horse" not in h1
    assert verify_password("correct-horse", h1) and not verify_password("wrong-horse", h1)
    assert not verify_password("x", None) and not verify_password("x", "md5$abc")


def test_accounts_lifecycle(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        add_annotator(store, "root", "correct-horse", role="admin")
        add_annotator(store, "ana", "correct-horse")
        assert authenticate(store, "ana", "correct-horse").role == "annotator"
        assert authenticate(store, "ana", "nope-nope") is None and authenticate(store, "ghost", "correct-horse") is None
        with pytest.raises(StoreError, match="at least 8"):
            add_annotator(store, "bob", "short")
        with pytest.raises(StoreError, match="already exists"):
            add_annotator(store, "ana", "correct-horse")
        with pytest.raises(StoreError, match="not allowed"):
            add_annotator(store, "a b", "correct-horse")
        set_active(store, "ana", False)
        assert authenticate(store, "ana", "correct-horse") is None and not get_annotator(store, "ana").active
        with pytest.raises(StoreError, match="last active admin"):
            set_active(store, "root", False)
        reset_password(store, "ana", "battery-staple")
        set_active(store, "ana", True)
        assert authenticate(store, "ana", "battery-staple") is not None
        imp = import_annotator(store)
        assert import_annotator(store) == imp and authenticate(store, "import", "") is None
        with pytest.raises(StoreError, match="cannot log in"):
            reset_password(store, "import", "whatever-long")
        with pytest.raises(StoreError, match="real annotator"):
            import_annotator(store, "ana")
        assert [a.name for a in annotators(store)] == ["root", "ana"]
