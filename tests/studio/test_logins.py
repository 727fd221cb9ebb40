"""Logins that cannot hurt the server: lockout with back-off, attempts in the store, no event-loop work."""

from __future__ import annotations

import asyncio
import threading

import pytest

from annotations.accounts import add_annotator
from studio.context import StudioContext
from studio.login_guard import ADDRESS_FREE_FAILURES, FREE_FAILURES, LoginGuard, backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_and_is_capped() -> None:
    assert backoff(FREE_FAILURES - 1, FREE_FAILURES) == 0
    assert backoff(FREE_FAILURES + 1, FREE_FAILURES) == 2 * backoff(FREE_FAILURES, FREE_FAILURES) > 0
    assert backoff(1000, FREE_FAILURES) == 15 * 60


def test_wrong_passwords_lock_the_account_then_the_right_one_waits(ctx: StudioContext) -> None:
    clock = Clock()
    guard = LoginGuard(ctx.store, clock=clock)
    try:
        for _ in range(200):  # the attack of the issue: 200 guesses, then the right password
            guard.attempt("ana", "guess-guess", "10.0.0.9")
        verdict = guard.attempt("ana", "ana-password", "10.0.0.9")
        assert not verdict.ok and verdict.reason == "locked" and verdict.retry_after > 0
        # Another account from another address is not affected by ana's lockout.
        assert guard.attempt("boss", "boss-password", "10.0.0.7").ok
        clock.now += 16 * 60  # past the longest back-off
        assert guard.attempt("ana", "ana-password", "10.0.0.8").ok
        assert guard.failures("ana") == 0  # a success resets the account's count
    finally:
        guard.close()


def test_locked_attempts_do_not_check_the_password(ctx: StudioContext, monkeypatch) -> None:
    import studio.login_guard as lg

    guard = LoginGuard(ctx.store, clock=Clock())
    checks = []
    real = lg.authenticate
    monkeypatch.setattr(lg, "authenticate", lambda *a: checks.append(a) or real(*a))
    try:
        for _ in range(50):
            guard.attempt("ana", "nope-nope", "10.0.0.9")
        assert len(checks) == FREE_FAILURES  # after that, refused without a scrypt
    finally:
        guard.close()


def test_one_address_guessing_many_accounts_is_locked(ctx: StudioContext) -> None:
    clock = Clock()
    guard = LoginGuard(ctx.store, clock=clock)
    try:
        for n in range(ADDRESS_FREE_FAILURES + 1):
            guard.attempt(f"user{n}", "whatever-1", "10.9.9.9")
        assert guard.attempt("ana", "ana-password", "10.9.9.9").reason == "locked"
        assert guard.attempt("ana", "ana-password", "10.1.1.1").ok  # the account itself is fine
    finally:
        guard.close()


def test_attempts_are_recorded_and_a_restart_keeps_the_lockout(ctx: StudioContext) -> None:
    first = LoginGuard(ctx.store)
    for _ in range(FREE_FAILURES + 2):
        first.attempt("ana", "wrong-wrong", "10.0.0.5")
    first.flush()
    first.close()
    rows = ctx.store.query("SELECT count(*) FILTER (WHERE NOT ok), count(*) FILTER (WHERE ok) FROM login_attempts WHERE name = 'ana'")
    assert rows == [(FREE_FAILURES, 0)]  # locked attempts are refused before they count again
    second = LoginGuard(ctx.store)
    try:
        assert second.attempt("ana", "ana-password", "10.0.0.6").reason == "locked"
    finally:
        second.close()


def test_login_does_not_wait_for_a_long_write(ctx: StudioContext) -> None:
    """An import holding the write lock must not hold up a login (the check reads committed state)."""
    guard = ctx.logins
    holding, release = threading.Event(), threading.Event()

    def long_write() -> None:
        with ctx.store.transaction() as cur:
            cur.execute("INSERT INTO projects (name) VALUES ('being-imported')")
            holding.set()
            release.wait(30)

    writer = threading.Thread(target=long_write)
    writer.start()
    try:
        assert holding.wait(10)
        verdict = guard.attempt("ana", "ana-password", "127.0.0.1")
        assert verdict.ok and writer.is_alive()  # answered while the write still held the lock
    finally:
        release.set()
        writer.join()


def test_the_auth_function_checks_off_the_event_loop(ctx: StudioContext, monkeypatch) -> None:
    import studio.login_guard as lg

    threads = []
    real = lg.authenticate
    monkeypatch.setattr(lg, "authenticate", lambda *a: threads.append(threading.current_thread()) or real(*a))
    check = ctx.logins.auth_function()
    assert asyncio.iscoroutinefunction(check)

    async def main() -> tuple[bool, bool]:
        loop_thread = threading.current_thread()
        ok = await check("ana", "ana-password")
        return ok, threads[-1] is not loop_thread

    # In a thread of its own: another test's event loop (Playwright's) may run in this one.
    results: list = []
    runner = threading.Thread(target=lambda: results.append(asyncio.run(main())))
    runner.start()
    runner.join(30)
    assert results == [(True, True)]


def test_new_accounts_can_log_in_at_once(ctx: StudioContext) -> None:
    add_annotator(ctx.store, "newcomer", "newcomer-pass")
    assert ctx.logins.attempt("newcomer", "newcomer-pass", "127.0.0.1").ok


# -- through a served studio ------------------------------------------------------------------------
def test_served_lockout_and_sessions_ended_by_reset_and_deactivation(ctx: StudioContext) -> None:
    from studio import admin
    from tests.studio.conftest import as_user, fill
    from tests.studio.live import LoginRefused, RawClient, serve

    fill(ctx, "team", k=2, prompts=2)
    with serve(ctx) as served:
        ana = RawClient(served.url, "ana", "ana-password")
        fns = served.blocks.fns
        rank_load = next(d["id"] for d in ana.config()["dependencies"] if getattr(fns[d["id"]].fn, "__module__", "") == "studio.ranking")
        assert "status" not in ana.call(rank_load, [None])  # logged in: the server answers

        # Deactivation ends the session at its next request; so does a password reset.
        admin.set_active(ctx, "ana", False, as_user("boss"))
        assert ana.call(rank_load, [None]).get("status") == 401
        admin.set_active(ctx, "ana", True, as_user("boss"))
        ana = RawClient(served.url, "ana", "ana-password")
        assert "status" not in ana.call(rank_load, [None])
        admin.reset_password(ctx, "ana", "a-new-password", as_user("boss"))
        assert ana.call(rank_load, [None]).get("status") == 401
        with pytest.raises(LoginRefused):
            RawClient(served.url, "ana", "ana-password")
        RawClient(served.url, "ana", "a-new-password").close()

        # Guessing: after a few wrong passwords even the right one is refused for a while.
        for _ in range(FREE_FAILURES + 3):
            with pytest.raises(LoginRefused):
                RawClient(served.url, "boss", "guess-guess")
        with pytest.raises(LoginRefused):
            RawClient(served.url, "boss", "boss-password")
        ctx.logins.flush()
        [(failures,)] = ctx.store.query("SELECT count(*) FROM login_attempts WHERE name = 'boss' AND NOT ok")
        assert failures == FREE_FAILURES and ctx.logins.locked_for("boss", "127.0.0.1") > 0
        frame = admin.failed_logins_frame(ctx)
        assert frame.iloc[0]["name"] == "boss" and frame.iloc[0]["address"] == "127.0.0.1"
