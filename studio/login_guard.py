"""Logins that cannot hurt the server: checks off the event loop, lockout with back-off, sessions ended.

Gradio calls the studio's auth function inside its async ``/login`` route. A scrypt check
(~50 ms of CPU) or a wait on the store's write lock there would stall every user of the server,
so :class:`LoginGuard` runs the check in a worker thread (one check at a time, so a flood of
guesses cannot take both cores), reads the account through the store's lock-free reader, and
records the attempt in the store from a background writer (a login never waits for an import).

Lockout: after ``FREE_FAILURES`` consecutive failures for an account name, or
``ADDRESS_FREE_FAILURES`` failures from one client address within ``WINDOW``, further attempts
are refused without checking the password for a back-off that doubles with each failure
(``BASE_DELAY`` up to ``MAX_DELAY``). The attempts live in the store (``login_attempts``), so a
restart does not reset the count; an admin sees them in Admin > Annotators.

:class:`Sessions` ends every session of an account (Gradio's login tokens) when an admin
deactivates it or resets its password: the next request of that browser or client is refused.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import anyio
import gradio as gr

from annotations.accounts import authenticate
from annotations.store import Store

FREE_FAILURES = 5
ADDRESS_FREE_FAILURES = 20
BASE_DELAY = 1.0  # seconds after the first failure past the free ones; doubles each time
MAX_DELAY = 15 * 60.0
WINDOW = timedelta(hours=1)

# The client address of the request being served; set by ClientAddressMiddleware for the
# login route (Gradio passes only the name and password to the auth function).
CLIENT_ADDRESS: contextvars.ContextVar[str] = contextvars.ContextVar("client_address", default="unknown")


class ClientAddressMiddleware:
    """ASGI middleware: remembers the client's address for the auth function of this request."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") == "http":
            client = scope.get("client")
            CLIENT_ADDRESS.set(client[0] if client else "unknown")
        await self.app(scope, receive, send)


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    times: list[float] = field(default_factory=list)


def backoff(failures: int, free: int) -> float:
    """Seconds an account or address stays locked after ``failures`` failures."""
    if failures < free:
        return 0.0
    return min(MAX_DELAY, BASE_DELAY * 2 ** (failures - free))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # "ok" | "wrong" | "locked"
    retry_after: float = 0.0


class LoginGuard:
    """Password checks with per-account and per-address lockout, recorded in the store."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._by_name: dict[str, _Failures] = {}
        self._by_address: dict[str, _Failures] = {}
        self._writes: queue.Queue = queue.Queue()
        self._load()
        self._writer = threading.Thread(target=self._write_loop, name="login-attempts", daemon=True)
        self._writer.start()

    # -- state --------------------------------------------------------------------------------
    def _load(self) -> None:
        """Rebuild the counters from the attempts of the last WINDOW (a restart keeps a lockout)."""
        since = datetime.now(UTC) - WINDOW
        rows = self.store.read(
            "SELECT name, address, ok, epoch(attempted) FROM login_attempts WHERE attempted >= ? ORDER BY attempted", [since]
        )
        for name, address, ok, at in rows:
            self._note(name, address, bool(ok), float(at))

    def _note(self, name: str, address: str, ok: bool, at: float) -> None:
        entry = self._by_name.setdefault(name, _Failures())
        if ok:
            entry.count = 0
        else:
            entry.count += 1
            entry.last = at
        if not ok:
            per_address = self._by_address.setdefault(address, _Failures())
            cutoff = at - WINDOW.total_seconds()
            per_address.times = [t for t in per_address.times if t >= cutoff] + [at]
            per_address.count = len(per_address.times)
            per_address.last = at

    def locked_for(self, name: str, address: str) -> float:
        """Seconds until this account name / address may try again (0 when it may now)."""
        now = self.clock()
        with self._lock:
            waits = [0.0]
            entry = self._by_name.get(name)
            if entry and entry.count:
                waits.append(entry.last + backoff(entry.count, FREE_FAILURES) - now)
            per_address = self._by_address.get(address)
            if per_address and per_address.count:
                waits.append(per_address.last + backoff(per_address.count, ADDRESS_FREE_FAILURES) - now)
        return max(waits)

    def failures(self, name: str) -> int:
        with self._lock:
            entry = self._by_name.get(name)
            return entry.count if entry else 0

    # -- the check ----------------------------------------------------------------------------
    def attempt(self, name: str, password: str, address: str = "unknown") -> Verdict:
        """Check a password unless locked out; record the attempt. Blocking: call it off the event loop."""
        name = (name or "").strip()[:64]
        wait = self.locked_for(name, address)
        if wait > 0:
            return Verdict(False, "locked", wait)
        ok = authenticate(self.store, name, password or "") is not None
        at = self.clock()
        with self._lock:
            self._note(name, address, ok, at)
        self._writes.put((name, address, ok, datetime.fromtimestamp(at, UTC)))
        return Verdict(ok, "ok" if ok else "wrong")

    def auth_function(self) -> Callable[[str, str], Awaitable[bool]]:
        """The async callable Gradio awaits at login: the check runs in a worker thread."""
        limiter: list[anyio.CapacityLimiter] = []

        async def check(username: str, password: str) -> bool:
            if not limiter:  # made inside the running event loop, once
                limiter.append(anyio.CapacityLimiter(1))
            address = CLIENT_ADDRESS.get()
            verdict = await anyio.to_thread.run_sync(self.attempt, username, password, address, limiter=limiter[0])
            return verdict.ok

        return check

    # -- the record ---------------------------------------------------------------------------
    def _write_loop(self) -> None:
        while True:
            item = self._writes.get()
            if item is None:
                return
            batch = [item]
            while not self._writes.empty():
                nxt = self._writes.get_nowait()
                if nxt is None:
                    self._flush(batch)
                    return
                batch.append(nxt)
            self._flush(batch)

    def _flush(self, batch: list[tuple]) -> None:
        try:
            with self.store.transaction() as cur:
                cur.executemany("INSERT INTO login_attempts (name, address, ok, attempted) VALUES (?, ?, ?, ?)", batch)
        except Exception:  # noqa: BLE001 - a closed store at shutdown; the counters in memory still hold
            pass

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every recorded attempt is in the store (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while not self._writes.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        # The writer may hold the last batch; a transaction after it orders us behind it.
        with self.store.transaction():
            pass

    def close(self) -> None:
        self._writes.put(None)
        self._writer.join(timeout=10)


def recent_failures(store: Store, limit: int = 20) -> list[tuple]:
    """(name, address, failures, last attempt) of the last WINDOW, most failures first."""
    since = datetime.now(UTC) - WINDOW
    return store.read(
        "SELECT name, address, count(*) AS failures, max(attempted) FROM login_attempts "
        "WHERE NOT ok AND attempted >= ? GROUP BY name, address ORDER BY failures DESC, max(attempted) DESC LIMIT ?",
        [since, limit],
    )


class Sessions:
    """Ends an account's sessions in the running Gradio server (its login tokens)."""

    def __init__(self) -> None:
        self._blocks: list[gr.Blocks] = []

    def attach(self, blocks: gr.Blocks) -> None:
        """Remember the served app (called once at launch)."""
        self._blocks.append(blocks)

    def end(self, name: str) -> int:
        """Drop every login token of ``name``; returns how many sessions ended."""
        ended = 0
        for blocks in self._blocks:
            app = getattr(blocks, "server_app", None)
            tokens = getattr(app, "tokens", None)
            if not isinstance(tokens, dict):
                continue
            for token, user in list(tokens.items()):
                if user == name:
                    tokens.pop(token, None)
                    ended += 1
        return ended
