"""The one object that owns the studio's DuckDB file.

DuckDB lets one process write a file, and a second process cannot open it while the first
holds it. The running studio is therefore the single writer: it holds one ``Store``, and every
public write is one transaction, serialised by a lock so Gradio's worker threads can share it.
A second process that finds the file held gets :class:`StoreLocked` with what to do.

Every path that writes user text checks it against :class:`annotations.limits.Limits` (read
from the environment once per store: ``store.limits``) and refuses lone surrogates, which are
not text and which DuckDB cannot store. A new database file is made owner-only (0600); the
command-line entry points also set the umask to 077, so the write-ahead log is too.

    store = Store("studio.duckdb")
    pid = store.create_project("demo", guidelines="Prefer helpful, honest replies.", k=2)
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from annotations.schema import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from annotations.limits import Limits

DB_FILE_MODE = 0o600  # the database holds password hashes and unpublished data
_SURROGATE = re.compile("[\ud800-\udfff]")


class StoreError(Exception):
    """Something a user asked of the store cannot be done; the message says why."""


class StoreLocked(StoreError):
    """Another process holds the database file."""


def check_text(limits: Limits, what: str, text: str, where: str = "") -> None:
    """Refuse ``text`` longer than the limit for ``what``, or holding a lone surrogate.

    A lone surrogate (``"\\ud800"`` in JSON, or undecodable bytes smuggled through Python's
    surrogateescape) is not Unicode text: DuckDB refuses it with an unhelpful error.
    """
    bad = _SURROGATE.search(text)
    if bad:
        place = f"{where}: " if where else ""
        raise StoreError(
            f"{place}the {what} holds a lone surrogate (U+{ord(bad.group()):04X}) at character {bad.start() + 1:,}, "
            "which is not valid Unicode text; remove it or fix the encoding"
        )
    limits.check(what, text, where)


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    guidelines: str
    k: int
    min_submitted: int
    mode: str


@dataclass(frozen=True)
class ReplyRecord:
    """A candidate reply and the agent that wrote it (model, checkpoint, sampling settings)."""

    text: str
    model: str = ""
    checkpoint: str = ""
    sampling: dict | None = None


@dataclass(frozen=True)
class Prompt:
    id: int
    project_id: int
    text: str
    messages: list[dict] | None
    source: str
    category: str
    metadata: dict | None

    @property
    def conversation(self) -> list[dict]:
        """The prompt as chat messages (a plain prompt is one user message)."""
        return self.messages or [{"role": "user", "content": self.text}]


@dataclass(frozen=True)
class Reply:
    id: int
    prompt_id: int
    text: str
    model: str
    checkpoint: str
    sampling: dict | None


@dataclass(frozen=True)
class PromptRecord:
    """A prompt as it goes into the store: plain text or a conversation."""

    text: str
    messages: list[dict] | None = None
    source: str = ""
    category: str = ""
    metadata: dict | None = None


def _locked_message(path: Path, exc: Exception) -> str:
    pid = re.search(r"PID (\d+)", str(exc))
    holder = f"process {pid.group(1)}" if pid else "another process"
    return (
        f"the database {path} is in use by {holder} (probably a running studio). DuckDB lets only one "
        "process open the file: stop that process, or make the change from the studio's screens, "
        "or point this command at another file with --db"
    )


class Store:
    """Thread-safe access to one DuckDB file; creates or upgrades it on open."""

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        from annotations.limits import Limits  # here: limits.py imports StoreError from this module

        self.path = Path(path)
        self.limits = Limits.from_env()
        self._lock = threading.RLock()
        # Reads that must not wait behind a long write (a login during a 50,000-line import)
        # go through their own cursor: DuckDB's MVCC shows them the last committed state.
        self._read_lock = threading.Lock()
        if read_only and not self.path.exists():
            raise StoreError(f"the database {self.path} does not exist")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        creating = not self.path.exists()
        try:
            self._con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(_locked_message(self.path, exc)) from exc
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc
        if creating:
            _owner_only(self.path)
        if not read_only:
            self._migrate()
            if creating:
                _owner_only(self.path.with_name(self.path.name + ".wal"))
        self._reader = self._con.cursor()

    # -- connection and transactions --------------------------------------------------------
    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One serialised transaction: all of it lands, or none of it."""
        with self._lock:
            cur = self._con.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def query(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        """Read rows (serialised with the writes, so a reader never sees half a write)."""
        with self._lock:
            cur = self._con.cursor()
            try:
                return cur.execute(sql, params or []).fetchall()
            finally:
                cur.close()

    def read(self, sql: str, params: Sequence | None = None) -> list[tuple]:
        """Read committed rows without waiting for the write lock (logins, permission checks).

        Each call is its own transaction on a dedicated cursor, so it sees every write that
        committed before it and nothing of one still running.
        """
        with self._read_lock:
            return self._reader.execute(sql, params or []).fetchall()

    def schema_version(self) -> int:
        with self._lock:
            exists = self._con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta'").fetchone()[0]
            if not exists:
                return 0
            row = self._con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            return int(row[0]) if row else 0

    def _migrate(self) -> None:
        current = self.schema_version()
        if current > LATEST_VERSION:
            raise StoreError(
                f"the database {self.path} has schema version {current}, newer than this studio knows "
                f"({LATEST_VERSION}); upgrade RLHF Studio"
            )
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            with self.transaction() as cur:
                for statement in migration.statements:
                    cur.execute(statement)
                cur.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(migration.version)])

    # -- projects ----------------------------------------------------------------------------
    def create_project(self, name: str, guidelines: str = "", k: int = 2, min_submitted: int = 1, mode: str | None = None) -> int:
        """Create a project; returns its id. Pairwise mode needs k = 2."""
        name = check_name(name, "a project")
        if k < 2:
            raise StoreError(f"a project needs at least 2 replies per prompt to rank, got k={k}")
        if min_submitted < 1:
            raise StoreError(f"min_submitted must be at least 1, got {min_submitted}")
        check_text(self.limits, "guidelines", guidelines)
        mode = mode or ("pairwise" if k == 2 else "ranking")
        if mode not in ("ranking", "pairwise"):
            raise StoreError(f"mode must be 'ranking' or 'pairwise', got {mode!r}")
        if mode == "pairwise" and k != 2:
            raise StoreError(f"pairwise mode compares exactly 2 replies; this project has k={k}")
        with self.transaction() as cur:
            if cur.execute("SELECT 1 FROM projects WHERE name = ?", [name]).fetchone():
                raise StoreError(f"a project called {name!r} already exists; choose another name")
            return cur.execute(
                "INSERT INTO projects (name, guidelines, k, min_submitted, mode) VALUES (?, ?, ?, ?, ?) RETURNING id",
                [name, guidelines, k, min_submitted, mode],
            ).fetchone()[0]

    def projects(self) -> list[Project]:
        rows = self.query("SELECT id, name, guidelines, k, min_submitted, mode FROM projects ORDER BY id")
        return [Project(*row) for row in rows]

    def project(self, name_or_id: str | int) -> Project:
        column = "id" if isinstance(name_or_id, int) else "name"
        rows = self.query(f"SELECT id, name, guidelines, k, min_submitted, mode FROM projects WHERE {column} = ?", [name_or_id])
        if not rows:
            known = ", ".join(p.name for p in self.projects()) or "none yet"
            raise StoreError(f"no project {name_or_id!r}; projects: {known}")
        return Project(*rows[0])

    # -- prompts -----------------------------------------------------------------------------
    def add_prompts(self, project_id: int, records: Sequence[PromptRecord]) -> list[int]:
        """Insert prompts in one transaction; returns their ids in order."""
        for n, rec in enumerate(records, 1):
            if not rec.text.strip():
                raise StoreError(f"prompt {n} is empty")
            check_prompt(self.limits, rec, f"prompt {n}")
        with self.transaction() as cur:
            if not cur.execute("SELECT 1 FROM projects WHERE id = ?", [project_id]).fetchone():
                raise StoreError(f"no project with id {project_id}")
            return [insert_prompt(cur, project_id, rec) for rec in records]

    def count_prompts(self, project_id: int) -> int:
        return self.query("SELECT count(*) FROM prompts WHERE project_id = ?", [project_id])[0][0]

    def prompt(self, prompt_id: int) -> Prompt:
        rows = self.query("SELECT id, project_id, text, messages, source, category, metadata FROM prompts WHERE id = ?", [prompt_id])
        if not rows:
            raise StoreError(f"no prompt with id {prompt_id}")
        return _prompt(rows[0])

    def prompts(self, project_id: int, limit: int | None = None, offset: int = 0) -> list[Prompt]:
        sql = "SELECT id, project_id, text, messages, source, category, metadata FROM prompts WHERE project_id = ? ORDER BY id"
        params: list = [project_id]
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return [_prompt(r) for r in self.query(sql, params)]

    # -- replies -----------------------------------------------------------------------------
    def add_replies(self, prompt_id: int, replies: Sequence[ReplyRecord]) -> list[int]:
        """Insert candidate replies for one prompt in one transaction; returns their ids."""
        for n, reply in enumerate(replies, 1):
            if not reply.text.strip():
                raise StoreError(f"reply {n} for prompt {prompt_id} is empty")
            check_text(self.limits, "reply", reply.text, f"reply {n} for prompt {prompt_id}")
        with self.transaction() as cur:
            if not cur.execute("SELECT 1 FROM prompts WHERE id = ?", [prompt_id]).fetchone():
                raise StoreError(f"no prompt with id {prompt_id}")
            return [insert_reply(cur, prompt_id, r) for r in replies]

    def replies(self, prompt_id: int) -> list[Reply]:
        rows = self.query(
            "SELECT id, prompt_id, text, model, checkpoint, sampling FROM replies WHERE prompt_id = ? ORDER BY id", [prompt_id]
        )
        return [Reply(*r[:5], json.loads(r[5]) if r[5] else None) for r in rows]

    def prompts_needing_replies(self, project_id: int) -> list[tuple[int, int]]:
        """(prompt id, replies still missing) for prompts with fewer than the project's k replies."""
        k = self.project(project_id).k
        rows = self.query(
            "SELECT p.id, ? - count(r.id) FROM prompts p LEFT JOIN replies r ON r.prompt_id = p.id "
            "WHERE p.project_id = ? GROUP BY p.id HAVING count(r.id) < ? ORDER BY p.id",
            [k, project_id, k],
        )
        return [(int(a), int(b)) for a, b in rows]


def check_prompt(limits: Limits, rec: PromptRecord, where: str = "") -> None:
    """Refuse a prompt over the size limit (its text: all turns of a conversation together) or not valid text."""
    check_text(limits, "prompt", rec.text, where)
    for m in rec.messages or ():
        check_text(limits, "prompt", m.get("content") or "", where)
    for value in (rec.source, rec.category, json.dumps(rec.metadata, ensure_ascii=False) if rec.metadata else ""):
        if _SURROGATE.search(value):
            check_text(limits, "prompt", value, where)


def bulk_insert(
    cur: duckdb.DuckDBPyConnection, table: str, sequence: str, columns: dict[str, Sequence], constants: dict[str, str] | None = None
) -> list[int]:
    """Insert rows given as equal-length columns inside an open transaction; returns their new ids in order.

    ``constants`` maps further columns to one SQL expression for every row (``current_timestamp``).

    The ids come from ``sequence`` in one query and the rows go in as one Arrow table, so
    50,000 rows take a few statements (a fraction of a second) instead of one statement each:
    an import holds the store's write lock only that long.
    """
    import pyarrow as pa

    n = len(next(iter(columns.values())))
    if n == 0:
        return []
    ids = cur.execute(f"SELECT nextval('{sequence}') AS id FROM range(?)", [n]).fetchnumpy()["id"]
    data = pa.table({"id": pa.array(ids, pa.int64()), **columns})
    view = f"bulk_{table}_{threading.get_ident()}"
    names = ", ".join([*columns, *(constants or {})])
    values = ", ".join([*columns, *(constants or {}).values()])
    cur.register(view, data)
    try:
        cur.execute(f"INSERT INTO {table} (id, {names}) SELECT id, {values} FROM {view}")
    finally:
        cur.unregister(view)
    return ids.tolist()


def _owner_only(path: Path) -> None:
    """Make a file the store created readable and writable by its owner only (if it exists)."""
    try:
        os.chmod(path, DB_FILE_MODE)
    except FileNotFoundError:
        pass


# Names are shown in messages, lists and Markdown: no markup ([ ] make links and images, < >
# tags and autolinks, ` code, a scheme or www. a bare link), no control or bidi characters.
_NAME_FORBIDDEN = re.compile(r"[\[\]<>`\\\x00-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]|://|www\.", re.I)


def check_name(name: str, what: str) -> str:
    """A project or template name, stripped; StoreError when it is empty, too long or holds markup."""
    name = (name or "").strip()
    if not name:
        raise StoreError(f"{what} needs a name")
    if len(name) > 100:
        raise StoreError(f"{what} name has at most 100 characters")
    bad = _NAME_FORBIDDEN.search(name)
    if bad:
        raise StoreError(f"{what} name cannot contain {bad.group()!r}: use letters, digits, spaces and simple punctuation")
    return name


def insert_prompt(cur: duckdb.DuckDBPyConnection, project_id: int, rec: PromptRecord) -> int:
    """Insert one prompt inside an open transaction (for the store and the importers)."""
    return cur.execute(
        "INSERT INTO prompts (project_id, text, messages, source, category, metadata) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        [
            project_id,
            rec.text,
            json.dumps(rec.messages) if rec.messages else None,
            rec.source,
            rec.category,
            json.dumps(rec.metadata) if rec.metadata else None,
        ],
    ).fetchone()[0]


def insert_reply(cur: duckdb.DuckDBPyConnection, prompt_id: int, reply: ReplyRecord) -> int:
    """Insert one reply inside an open transaction."""
    return cur.execute(
        "INSERT INTO replies (prompt_id, text, model, checkpoint, sampling) VALUES (?, ?, ?, ?, ?) RETURNING id",
        [prompt_id, reply.text, reply.model, reply.checkpoint, json.dumps(reply.sampling) if reply.sampling else None],
    ).fetchone()[0]


def _prompt(row: tuple) -> Prompt:
    pid, project_id, text, messages, source, category, metadata = row
    return Prompt(
        pid, project_id, text, json.loads(messages) if messages else None, source, category, json.loads(metadata) if metadata else None
    )
