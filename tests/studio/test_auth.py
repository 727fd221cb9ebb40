"""Logins, roles and the first admin."""

from __future__ import annotations

import gradio as gr
import pytest

from annotations.accounts import annotators, authenticate, set_active
from studio.auth import ensure_admin
from studio.context import StudioContext
from studio.permissions import current_user, require_admin
from tests.studio.conftest import as_user


def test_gradio_auth_uses_the_store(ctx: StudioContext) -> None:
    check = ctx.logins.attempt
    assert check("ana", "ana-password").ok and not check("ana", "wrong-password").ok and not check("nobody", "ana-password").ok


def test_roles_are_checked_on_the_server(ctx: StudioContext) -> None:
    assert require_admin(ctx.store, as_user("boss")).name == "boss"
    with pytest.raises(gr.Error, match="Only admins"):
        require_admin(ctx.store, as_user("ana"))
    with pytest.raises(gr.Error, match="Log in"):
        current_user(ctx.store, None)
    set_active(ctx.store, "ana", False)
    with pytest.raises(gr.Error, match="deactivated"):
        current_user(ctx.store, as_user("ana"))


def test_first_admin_gets_a_random_password_shown_once(tmp_path, studio_home, monkeypatch) -> None:
    monkeypatch.delenv("STUDIO_ADMIN_PASSWORD", raising=False)
    said: list[str] = []
    context = StudioContext.open(tmp_path / "s.duckdb")
    try:
        password = ensure_admin(context.store, said.append)
        assert password and len(password) >= 12 and password in said[0]
        assert authenticate(context.store, "admin", password) is not None
        assert ensure_admin(context.store, said.append) is None and len(said) == 1  # never again
    finally:
        context.close()


def test_first_admin_password_from_the_environment(tmp_path, studio_home, monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_ADMIN_PASSWORD", "from-the-env-123")
    said: list[str] = []
    context = StudioContext.open(tmp_path / "s.duckdb")
    try:
        assert ensure_admin(context.store, said.append) is None
        assert "from-the-env-123" not in said[0] and authenticate(context.store, "admin", "from-the-env-123")
        assert [a.role for a in annotators(context.store)] == ["admin"]
    finally:
        context.close()


def test_init_creates_the_admin_and_the_demo(tmp_path, studio_home, monkeypatch, capsys) -> None:
    from studio.cli import main

    monkeypatch.delenv("STUDIO_ADMIN_PASSWORD", raising=False)
    db = str(tmp_path / "s.duckdb")
    assert main(["init", "--db", db, "--skip-models"]) == 0
    first = capsys.readouterr().out
    assert "created the first admin: user 'admin', password '" in first and "demo project created" in first
    assert main(["init", "--db", db, "--skip-models"]) == 0
    assert "password" not in capsys.readouterr().out
