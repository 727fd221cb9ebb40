"""Records of the studio's background jobs (candidate generation, uncertainty scoring), so a failure keeps its reason.

A job is a row of the ``jobs`` table (schema v4): kind, project, owner, state (queued, running,
done, failed, lost), a JSON detail (models, sampling, progress), the error, the pid of the studio
process that ran it, and when it started and ended. The studio writes them as the job goes;
when a studio starts, rows left queued or running by a process that is gone become ``lost``,
so a job that died with its studio says so instead of running forever in the admin console.

    job_id = create_job(store, "candidates", project_id, "boss", {"models": ["tiny"]})
    job_id = create_exclusive_job(store, "uncertainty", project_id, "boss")   # one at a time per project
    update_job(store, job_id, state="failed", error="MemoryError: ...", ended=True)
    mark_lost(store)                          # at start-up
    rows = recent_jobs(store, limit=20)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from annotations.store import Store, StoreError

STATES = ("queued", "running", "done", "failed", "lost")


@dataclass(frozen=True)
class JobRecord:
    id: int
    kind: str
    project_id: int | None
    owner: str
    state: str
    detail: dict
    error: str
    pid: int | None
    started: datetime
    ended: datetime | None


def create_job(store: Store, kind: str, project_id: int | None, owner: str = "", detail: dict | None = None, pid: int | None = None) -> int:
    """A new queued job of this process (or ``pid``); returns its id."""
    with store.transaction() as cur:
        return cur.execute(
            "INSERT INTO jobs (kind, project_id, owner, state, detail, pid) VALUES (?, ?, ?, 'queued', ?, ?) RETURNING id",
            [kind, project_id, owner, json.dumps(detail or {}), os.getpid() if pid is None else pid],
        ).fetchone()[0]


def create_exclusive_job(store: Store, kind: str, project_id: int, owner: str = "", detail: dict | None = None) -> int:
    """A new queued job unless one of this kind is queued or running for the project (StoreError then).

    The check and the insert are one transaction, so a double click starts one job.
    """
    with store.transaction() as cur:
        busy = cur.execute(
            "SELECT id FROM jobs WHERE kind = ? AND project_id = ? AND state IN ('queued', 'running') ORDER BY id LIMIT 1",
            [kind, project_id],
        ).fetchone()
        if busy:
            raise StoreError(f"job {busy[0]} is still working on this project; wait for it to finish")
        return cur.execute(
            "INSERT INTO jobs (kind, project_id, owner, state, detail, pid) VALUES (?, ?, ?, 'queued', ?, ?) RETURNING id",
            [kind, project_id, owner, json.dumps(detail or {}), os.getpid()],
        ).fetchone()[0]


def update_job(
    store: Store, job_id: int, *, state: str | None = None, detail: dict | None = None, error: str | None = None, ended: bool = False
) -> None:
    """Change a job's state, detail (replaced whole) or error; ``ended`` stamps its end time."""
    if state is not None and state not in STATES:
        raise ValueError(f"job state must be one of {', '.join(STATES)}, got {state!r}")
    sets, params = [], []
    for column, value in (("state", state), ("detail", None if detail is None else json.dumps(detail)), ("error", error)):
        if value is not None:
            sets.append(f"{column} = ?")
            params.append(value)
    if ended:
        sets.append("ended = current_timestamp")
    if not sets:
        return
    with store.transaction() as cur:
        cur.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", [*params, job_id])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True  # someone else's process: alive, but not ours
    return True


def mark_lost(store: Store, alive: Callable[[int], bool] = _alive) -> list[int]:
    """Mark queued / running jobs whose process is gone (or is this one, starting afresh) as lost.

    A studio calls this as it starts: only one process can write the database, so a job that a
    process of this pid started earlier cannot still be running in it. Returns the ids marked.
    """
    me = os.getpid()
    rows = store.query("SELECT id, pid FROM jobs WHERE state IN ('queued', 'running')")
    gone = [(job_id, pid) for job_id, pid in rows if pid is None or pid == me or not alive(int(pid))]
    with store.transaction() as cur:
        for job_id, pid in gone:
            cur.execute(
                "UPDATE jobs SET state = 'lost', error = ?, ended = current_timestamp WHERE id = ? AND state IN ('queued', 'running')",
                [f"the studio stopped while this job ran (pid {pid})", job_id],
            )
    return [job_id for job_id, _ in gone]


def _record(row: tuple) -> JobRecord:
    job_id, kind, project_id, owner, state, detail, error, pid, started, ended = row
    return JobRecord(job_id, kind, project_id, owner, state, json.loads(detail) if detail else {}, error, pid, started, ended)


COLUMNS = "id, kind, project_id, owner, state, detail, error, pid, started, ended"


def get_job(store: Store, job_id: int) -> JobRecord | None:
    rows = store.query(f"SELECT {COLUMNS} FROM jobs WHERE id = ?", [job_id])
    return _record(rows[0]) if rows else None


def recent_jobs(store: Store, limit: int = 20, kind: str | None = None) -> list[JobRecord]:
    """The newest jobs first (optionally of one kind)."""
    where, params = ("WHERE kind = ?", [kind]) if kind else ("", [])
    rows = store.query(f"SELECT {COLUMNS} FROM jobs {where} ORDER BY id DESC LIMIT ?", [*params, limit])
    return [_record(r) for r in rows]
