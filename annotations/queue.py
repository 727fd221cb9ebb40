"""The ranking queue: which prompt an annotator sees next, drafts, submissions and skips.

Rules:
- a prompt is offered when it has the project's k replies, still needs rankings (fewer than
  ``min_submitted`` submitted), and this annotator has not submitted or skipped it;
- the annotator's own draft comes back first (a page reload loses nothing), then prompts
  nearest completion, then the oldest;
- serving a prompt claims it with a draft for ``LEASE`` so that two annotators are not sent
  to the last open slot of the same prompt; an abandoned claim expires;
- a submission is idempotent on its key: a double click stores one ranking.

    item = next_prompt(store, project_id, annotator_id)
    submit_ranking(store, annotator_id, item.prompt.id, {r.id: rank for ...}, key="uuid")
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from annotations.store import Project, Prompt, Reply, Store, StoreError, _prompt

LEASE = timedelta(minutes=30)


@dataclass(frozen=True)
class QueueItem:
    project: Project
    prompt: Prompt
    replies: list[Reply]
    draft_ranks: dict[int, int]
    draft_rationale: str


@dataclass(frozen=True)
class Submission:
    ranking_id: int
    duplicate: bool  # True when this idempotency key had already been stored


@dataclass(frozen=True)
class Progress:
    done: int  # prompts this annotator has submitted or skipped in the project
    left: int  # prompts the queue could still offer this annotator
    prompts: int  # prompts in the project
    complete: int  # prompts with min_submitted submitted rankings


def _now() -> datetime:
    return datetime.now(UTC)


def _shown_replies(cur: duckdb.DuckDBPyConnection, prompt_id: int, k: int) -> list[Reply]:
    """The first k replies of a prompt, the ones an annotator ranks."""
    # Sorted here: ORDER BY + LIMIT costs DuckDB a top-N operator, twice this whole lookup.
    rows = sorted(
        cur.execute("SELECT id, prompt_id, text, model, checkpoint, sampling FROM replies WHERE prompt_id = ?", [prompt_id]).fetchall()
    )
    return [Reply(*r[:5], json.loads(r[5]) if r[5] else None) for r in rows[:k]]


def _project_of(cur: duckdb.DuckDBPyConnection, prompt_id: int) -> Project:
    row = cur.execute(
        "SELECT pr.id, pr.name, pr.guidelines, pr.k, pr.min_submitted, pr.mode FROM prompts p JOIN projects pr ON pr.id = p.project_id "
        "WHERE p.id = ?",
        [prompt_id],
    ).fetchone()
    if not row:
        raise StoreError(f"no prompt with id {prompt_id}")
    return Project(*row)


def _check_annotator(cur: duckdb.DuckDBPyConnection, annotator_id: int) -> None:
    row = cur.execute("SELECT active, role FROM annotators WHERE id = ?", [annotator_id]).fetchone()
    if not row:
        raise StoreError(f"no annotator with id {annotator_id}")
    if not row[0]:
        raise StoreError("this account is deactivated; ask an admin")


def validate_ranks(ranks: Mapping, replies: list[Reply], complete: bool = True, compact: bool = True) -> dict[int, int]:
    """Check a ranking against the replies shown; return it with dense ranks (1 = best).

    Ties are equal ranks. Ranks are compacted ({a: 1, b: 3} becomes {a: 1, b: 2}) so the stored
    order is what the annotator meant whatever numbers they used.
    """
    k = len(replies)
    ids = {r.id for r in replies}
    parsed: dict[int, int] = {}
    for key, value in ranks.items():
        try:
            rid = int(key)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"{key!r} is not a reply id") from exc
        if rid not in ids:
            raise StoreError(f"reply {rid} is not one of this prompt's replies")
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or not 1 <= value <= k:
            raise StoreError(f"rank {value!r} for reply {rid} is invalid: ranks are whole numbers from 1 (best) to {k}")
        parsed[rid] = int(value)
    missing = [r.id for r in replies if r.id not in parsed]
    if complete and missing:
        shown = [n for n, r in enumerate(replies, 1) if r.id in missing]
        raise StoreError(f"rank every reply before submitting: reply {', '.join(map(str, shown))} has no rank")
    if not compact:  # a draft keeps the numbers the annotator typed
        return parsed
    levels = {v: n for n, v in enumerate(sorted(set(parsed.values())), 1)}
    return {rid: levels[v] for rid, v in parsed.items()}


def next_prompt(store: Store, project_id: int, annotator_id: int, claim: bool = True) -> QueueItem | None:
    """The next prompt for this annotator in this project, or None when nothing is left."""
    cutoff = _now() - LEASE
    with store.transaction() as cur:
        _check_annotator(cur, annotator_id)
        project = cur.execute("SELECT id, name, guidelines, k, min_submitted, mode FROM projects WHERE id = ?", [project_id]).fetchone()
        if not project:
            raise StoreError(f"no project with id {project_id}")
        project = Project(*project)
        row = cur.execute(
            """
            WITH eligible AS (
                SELECT p.id FROM prompts p JOIN replies r ON r.prompt_id = p.id
                WHERE p.project_id = $project GROUP BY p.id HAVING count(*) >= $k
            ), stats AS (
                SELECT prompt_id,
                       count(*) FILTER (WHERE status = 'submitted') AS n_sub,
                       count(*) FILTER (WHERE status = 'draft' AND annotator_id <> $ann AND updated > $cutoff) AS n_claimed,
                       max(CASE WHEN annotator_id = $ann THEN status END) AS mine
                FROM rankings WHERE prompt_id IN (SELECT id FROM eligible) GROUP BY prompt_id
            ), pick AS (
                SELECT e.id FROM eligible e LEFT JOIN stats s ON s.prompt_id = e.id
                WHERE (s.mine IS NULL OR s.mine = 'draft')
                  AND (s.mine = 'draft' OR coalesce(s.n_sub, 0) + coalesce(s.n_claimed, 0) < $min)
                ORDER BY (s.mine = 'draft') DESC NULLS LAST, coalesce(s.n_sub, 0) DESC, e.id
                LIMIT 1
            )
            SELECT p.id, p.project_id, p.text, p.messages, p.source, p.category, p.metadata, d.id, d.ranks, d.rationale
            FROM pick JOIN prompts p ON p.id = pick.id
            LEFT JOIN rankings d ON d.prompt_id = p.id AND d.annotator_id = $ann
            """,
            {"project": project_id, "k": project.k, "ann": annotator_id, "cutoff": cutoff, "min": project.min_submitted},
        ).fetchone()
        if not row:
            return None
        prompt = _prompt(row[:7])
        draft_id, draft_ranks, rationale = row[7:]
        if claim and draft_id is None:
            cur.execute("INSERT INTO rankings (prompt_id, annotator_id, status) VALUES (?, ?, 'draft')", [prompt.id, annotator_id])
        elif claim:
            cur.execute("UPDATE rankings SET updated = current_timestamp WHERE id = ?", [draft_id])
        ranks = {int(k): v for k, v in json.loads(draft_ranks).items()} if draft_ranks else {}
        return QueueItem(project, prompt, _shown_replies(cur, prompt.id, project.k), ranks, rationale or "")


def save_draft(store: Store, annotator_id: int, prompt_id: int, ranks: Mapping, rationale: str = "") -> None:
    """Keep a half-finished ranking (partial ranks allowed) so a reload restores it."""
    with store.transaction() as cur:
        _check_annotator(cur, annotator_id)
        project = _project_of(cur, prompt_id)
        clean = validate_ranks(ranks, _shown_replies(cur, prompt_id, project.k), complete=False, compact=False) if ranks else {}
        row = cur.execute("SELECT id, status FROM rankings WHERE prompt_id = ? AND annotator_id = ?", [prompt_id, annotator_id]).fetchone()
        if row and row[1] != "draft":
            raise StoreError(f"this prompt is already {row[1]}; the draft was not saved")
        payload = json.dumps({str(k): v for k, v in clean.items()})
        if row:
            cur.execute(
                "UPDATE rankings SET ranks = ?, rationale = ?, updated = current_timestamp WHERE id = ?", [payload, rationale, row[0]]
            )
        else:
            cur.execute(
                "INSERT INTO rankings (prompt_id, annotator_id, status, ranks, rationale) VALUES (?, ?, 'draft', ?, ?)",
                [prompt_id, annotator_id, payload, rationale],
            )


def _existing_by_key(cur: duckdb.DuckDBPyConnection, key: str | None, annotator_id: int, prompt_id: int) -> Submission | None:
    if not key:
        return None
    row = cur.execute("SELECT id, annotator_id, prompt_id FROM rankings WHERE idempotency_key = ?", [key]).fetchone()
    if not row:
        return None
    if (row[1], row[2]) != (annotator_id, prompt_id):
        raise StoreError("this submission key was already used for another prompt; reload the page")
    return Submission(row[0], duplicate=True)


def _finish(
    cur: duckdb.DuckDBPyConnection,
    annotator_id: int,
    prompt_id: int,
    status: str,
    key: str | None,
    values: dict,
) -> Submission:
    row = cur.execute(
        "SELECT id, status, created FROM rankings WHERE prompt_id = ? AND annotator_id = ?", [prompt_id, annotator_id]
    ).fetchone()
    if row and row[1] != "draft":
        raise StoreError(f"you already {row[1]} this prompt; it was not changed")
    if values.get("seconds_spent") is None and row:
        values["seconds_spent"] = max(0.0, (_now() - row[2]).total_seconds())
    columns = {"status": status, "idempotency_key": key, **values}
    if row:
        sets = ", ".join(f"{c} = ?" for c in columns)
        cur.execute(
            f"UPDATE rankings SET {sets}, updated = current_timestamp, submitted = current_timestamp WHERE id = ?",
            [*columns.values(), row[0]],
        )
        return Submission(row[0], duplicate=False)
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    new_id = cur.execute(
        f"INSERT INTO rankings (prompt_id, annotator_id, {names}, submitted) VALUES (?, ?, {marks}, current_timestamp) RETURNING id",
        [prompt_id, annotator_id, *columns.values()],
    ).fetchone()[0]
    return Submission(new_id, duplicate=False)


def submit_ranking(
    store: Store,
    annotator_id: int,
    prompt_id: int,
    ranks: Mapping,
    rationale: str = "",
    key: str | None = None,
    seconds_spent: float | None = None,
    both_bad: bool = False,
) -> Submission:
    """Store a complete ranking (ties allowed). Invalid or repeated input changes nothing."""
    with store.transaction() as cur:
        existing = _existing_by_key(cur, key, annotator_id, prompt_id)
        if existing:
            return existing
        _check_annotator(cur, annotator_id)
        project = _project_of(cur, prompt_id)
        replies = _shown_replies(cur, prompt_id, project.k)
        if len(replies) < project.k:
            raise StoreError(f"this prompt has {len(replies)} of its {project.k} replies; it cannot be ranked yet")
        clean = validate_ranks(ranks, replies)
        payload = json.dumps({str(k): v for k, v in clean.items()})
        values = {"ranks": payload, "rationale": rationale.strip(), "seconds_spent": seconds_spent, "both_bad": both_bad}
        return _finish(cur, annotator_id, prompt_id, "submitted", key, values)


def skip_prompt(store: Store, annotator_id: int, prompt_id: int, reason: str, key: str | None = None) -> Submission:
    """Skip a prompt with a reason; it is not offered to this annotator again."""
    if not reason or not reason.strip():
        raise StoreError("say why you skip this prompt (for example: replies unreadable, prompt unclear)")
    with store.transaction() as cur:
        existing = _existing_by_key(cur, key, annotator_id, prompt_id)
        if existing:
            return existing
        _check_annotator(cur, annotator_id)
        _project_of(cur, prompt_id)
        return _finish(cur, annotator_id, prompt_id, "skipped", key, {"skip_reason": reason.strip()})


def progress(store: Store, project_id: int, annotator_id: int) -> Progress:
    """How far this annotator and the project are."""
    project = store.project(project_id)
    row = store.query(
        """
        WITH eligible AS (
            SELECT p.id FROM prompts p JOIN replies r ON r.prompt_id = p.id
            WHERE p.project_id = $project GROUP BY p.id HAVING count(*) >= $k
        ), stats AS (
            SELECT prompt_id, count(*) FILTER (WHERE status = 'submitted') AS n_sub,
                   max(CASE WHEN annotator_id = $ann THEN status END) AS mine
            FROM rankings GROUP BY prompt_id
        )
        SELECT
            (SELECT count(*) FROM rankings r JOIN prompts p ON p.id = r.prompt_id
             WHERE p.project_id = $project AND r.annotator_id = $ann AND r.status <> 'draft'),
            (SELECT count(*) FROM eligible e LEFT JOIN stats s ON s.prompt_id = e.id
             WHERE (s.mine IS NULL OR s.mine = 'draft') AND coalesce(s.n_sub, 0) < $min),
            (SELECT count(*) FROM prompts WHERE project_id = $project),
            (SELECT count(*) FROM prompts p JOIN stats s ON s.prompt_id = p.id WHERE p.project_id = $project AND s.n_sub >= $min)
        """,
        {"project": project_id, "k": project.k, "ann": annotator_id, "min": project.min_submitted},
    )[0]
    return Progress(*map(int, row))
