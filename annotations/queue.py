"""The ranking queue: which prompt an annotator sees next, drafts, submissions, skips and undo.

Rules:
- a prompt is offered when it has the project's k replies, still needs rankings (fewer than
  ``min_submitted`` submitted), and this annotator has not submitted or skipped it;
- the annotator's own draft comes back first (a page reload loses nothing), then prompts
  nearest completion, then the oldest;
- active learning: a project whose ``queue_order`` is ``'uncertain first'`` (an admin's choice,
  :func:`set_queue_order`) serves, after the annotator's own draft, the prompts a reward model is
  least sure of (highest ``uncertainty``, written by :func:`write_uncertainties`), then the
  unscored ones in the order above; every other rule is the same;
- serving a prompt claims it with a draft for ``LEASE`` so that two annotators are not sent
  to the last open slot of the same prompt; an abandoned claim expires;
- a submission is idempotent on its key: a double click stores one ranking;
- an annotator can take back their own last submission or skip in a project within
  ``UNDO_WINDOW``: it becomes a draft again (ranks and rationale kept);
- every read and write is scoped to one annotator: nobody sees or changes another's drafts.
  The screens pass ``served_in=project_id``: then the prompt must belong to that project and
  have been served to this annotator, whatever the browser claims.

    item = next_prompt(store, project_id, annotator_id)
    submit_ranking(store, annotator_id, item.prompt.id, {r.id: rank for ...}, key="uuid", served_in=project_id)
    undo_last(store, annotator_id, project_id)          # the last submission is a draft again

    set_queue_order(store, project_id, "uncertain first", by=admin_id)
    write_uncertainties(store, project_id, {prompt_id: 0.41, ...}, model="rm-ensemble", by=admin_id)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from annotations.limits import Limits
from annotations.membership import may_rank, open_projects
from annotations.store import Project, Prompt, Reply, Store, StoreError, _prompt, check_name

LEASE = timedelta(minutes=30)
# Long enough to notice a slip of the finger, short enough that an admin's snapshot of the
# last hour does not keep changing under them.
UNDO_WINDOW = timedelta(minutes=5)


class NotADraft(StoreError):
    """A draft save for a prompt this annotator has already submitted or skipped."""


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
class Undone:
    item: QueueItem  # the prompt taken back, with its ranks and rationale as a draft
    was: str | None  # "submitted" or "skipped"; None when it had already been taken back


@dataclass(frozen=True)
class Progress:
    ranked: int  # prompts this annotator has submitted a ranking for in the project
    skipped: int  # prompts this annotator has skipped
    left: int  # prompts the queue could still offer this annotator (their drafts included)
    held: int  # prompts still open that other annotators' live claims keep from this one
    prompts: int  # prompts in the project
    complete: int  # prompts with min_submitted submitted rankings

    @property
    def done(self) -> int:
        """Prompts this annotator has finished with (ranked or skipped)."""
        return self.ranked + self.skipped


@dataclass(frozen=True)
class ProjectWork:
    """One project as an annotator's home view shows it."""

    project: Project
    progress: Progress

    @property
    def has_work(self) -> bool:
        return self.progress.left > 0


def _now() -> datetime:
    return datetime.now(UTC)


def _shown_replies(cur: duckdb.DuckDBPyConnection, prompt_id: int, k: int) -> list[Reply]:
    """The first k replies of a prompt, the ones an annotator ranks."""
    # Sorted here: ORDER BY + LIMIT costs DuckDB a top-N operator, twice this whole lookup.
    rows = sorted(
        cur.execute("SELECT id, prompt_id, text, model, checkpoint, sampling FROM replies WHERE prompt_id = ?", [prompt_id]).fetchall()
    )
    return [Reply(*r[:5], json.loads(r[5]) if r[5] else None) for r in rows[:k]]


def _project(cur: duckdb.DuckDBPyConnection, project_id: int) -> Project:
    row = cur.execute("SELECT id, name, guidelines, k, min_submitted, mode FROM projects WHERE id = ?", [project_id]).fetchone()
    if not row:
        raise StoreError(f"no project with id {project_id}")
    return Project(*row)


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


def _check_served(cur: duckdb.DuckDBPyConnection, annotator_id: int, prompt_id: int, project_id: int | None) -> Project:
    """The prompt's project; with ``project_id``, the prompt must be in it and served to this annotator.

    A prompt was served when the annotator holds a ranking row for it (the queue's claim, a draft,
    or what they finished). One message for every refusal: it tells nothing about other people's prompts.
    """
    if project_id is not None:
        # The check and the project in one statement: every submission and draft save passes here.
        served = cur.execute(
            "SELECT pr.id, pr.name, pr.guidelines, pr.k, pr.min_submitted, pr.mode FROM rankings r "
            "JOIN prompts p ON p.id = r.prompt_id JOIN projects pr ON pr.id = p.project_id "
            "WHERE r.prompt_id = ? AND r.annotator_id = ? AND p.project_id = ?",
            [prompt_id, annotator_id, project_id],
        ).fetchone()
        if not served:
            raise StoreError("this prompt was not given to you in this project; reload the page to get your next prompt")
        return Project(*served)
    return _project_of(cur, prompt_id)


def _prompt_by_id(cur: duckdb.DuckDBPyConnection, prompt_id: int) -> Prompt:
    row = cur.execute("SELECT id, project_id, text, messages, source, category, metadata FROM prompts WHERE id = ?", [prompt_id]).fetchone()
    if not row:
        raise StoreError(f"no prompt with id {prompt_id}")
    return _prompt(row)


def _check_text(what: str, text: str) -> None:
    Limits.from_env().check("rationale", text, what)


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


def _item(cur: duckdb.DuckDBPyConnection, project: Project, prompt: Prompt, annotator_id: int) -> QueueItem:
    """A prompt with its replies and this annotator's own draft (never anyone else's)."""
    row = cur.execute(
        "SELECT ranks, rationale FROM rankings WHERE prompt_id = ? AND annotator_id = ? AND status = 'draft'", [prompt.id, annotator_id]
    ).fetchone()
    ranks = {int(k): v for k, v in json.loads(row[0]).items()} if row and row[0] else {}
    return QueueItem(project, prompt, _shown_replies(cur, prompt.id, project.k), ranks, (row[1] if row else "") or "")


# The queue's pick and this annotator's progress in one statement: they rest on the same counts
# per prompt, and the ranking screen shows both after every submission (two statements cost twice
# as much). Claiming the pick does not change this annotator's counts: the prompt was "left" as a
# free prompt and stays "left" as their draft.
_NEXT_SQL = """
WITH counted AS (
    -- The uncertainty counts only when the project asks for it ('uncertain first'); otherwise
    -- it is NULL for every prompt and the order is the default one.
    SELECT id, CASE WHEN (SELECT queue_order FROM projects WHERE id = $project) = 'uncertain first' THEN uncertainty END AS u
    FROM prompts WHERE project_id = $project
), eligible AS (
    SELECT prompt_id AS id FROM replies WHERE prompt_id IN (SELECT id FROM counted) GROUP BY prompt_id HAVING count(*) >= $k
), stats AS (
    SELECT prompt_id,
           count(*) FILTER (WHERE status = 'submitted') AS n_sub,
           count(*) FILTER (WHERE status = 'draft' AND annotator_id <> $ann AND updated > $cutoff) AS n_claimed,
           max(CASE WHEN annotator_id = $ann THEN status END) AS mine
    FROM rankings WHERE prompt_id IN (SELECT id FROM counted) GROUP BY prompt_id
), per_prompt AS (
    SELECT c.id, c.u, e.id IS NOT NULL AS ready, coalesce(s.n_sub, 0) AS n_sub, coalesce(s.n_claimed, 0) AS n_claimed, s.mine
    FROM counted c LEFT JOIN eligible e ON e.id = c.id LEFT JOIN stats s ON s.prompt_id = c.id
), pick AS (
    SELECT id FROM per_prompt
    WHERE ready AND (mine = 'draft' OR (mine IS NULL AND n_sub + n_claimed < $min))
    ORDER BY (mine = 'draft') DESC NULLS LAST, u DESC NULLS LAST, n_sub DESC, id
    LIMIT 1
), counts AS (
    SELECT count(*) FILTER (WHERE mine = 'submitted') AS ranked,
           count(*) FILTER (WHERE mine = 'skipped') AS skipped,
           count(*) FILTER (WHERE ready AND (mine = 'draft' OR (mine IS NULL AND n_sub + n_claimed < $min))) AS n_left,
           count(*) FILTER (WHERE ready AND mine IS NULL AND n_sub < $min AND n_sub + n_claimed >= $min) AS held,
           count(*) AS prompts,
           count(*) FILTER (WHERE n_sub >= $min) AS complete
    FROM per_prompt
)
SELECT c.ranked, c.skipped, c.n_left, c.held, c.prompts, c.complete,
       p.id, p.project_id, p.text, p.messages, p.source, p.category, p.metadata, d.id, d.ranks, d.rationale
FROM counts c LEFT JOIN pick ON true LEFT JOIN prompts p ON p.id = pick.id
LEFT JOIN rankings d ON d.prompt_id = p.id AND d.annotator_id = $ann
"""


def next_prompt(store: Store, project_id: int, annotator_id: int, claim: bool = True) -> QueueItem | None:
    """The next prompt for this annotator in this project, or None when nothing is left.

    Refused (StoreError) for a project that lists its members and not this annotator.
    """
    return next_with_progress(store, project_id, annotator_id, claim)[0]


def next_with_progress(store: Store, project_id: int, annotator_id: int, claim: bool = True) -> tuple[QueueItem | None, Progress]:
    """:func:`next_prompt` and this annotator's :func:`progress` in the project (as it is after the claim)."""
    if not may_rank(store, project_id, annotator_id):
        raise StoreError("this project is not open to you; ask an admin to add you to it")
    cutoff = _now() - LEASE
    with store.transaction() as cur:
        _check_annotator(cur, annotator_id)
        project = _project(cur, project_id)
        row = cur.execute(
            _NEXT_SQL, {"project": project_id, "k": project.k, "ann": annotator_id, "cutoff": cutoff, "min": project.min_submitted}
        ).fetchone()
        counts = Progress(*map(int, row[:6]))
        if row[6] is None:
            return None, counts
        prompt = _prompt(row[6:13])
        draft_id, draft_ranks, rationale = row[13:]
        if claim and draft_id is None:
            cur.execute("INSERT INTO rankings (prompt_id, annotator_id, status) VALUES (?, ?, 'draft')", [prompt.id, annotator_id])
        elif claim:
            cur.execute("UPDATE rankings SET updated = current_timestamp WHERE id = ?", [draft_id])
        ranks = {int(k): v for k, v in json.loads(draft_ranks).items()} if draft_ranks else {}
        return QueueItem(project, prompt, _shown_replies(cur, prompt.id, project.k), ranks, rationale or ""), counts


def served_prompt(store: Store, annotator_id: int, project_id: int, prompt_id: int) -> QueueItem:
    """A prompt the queue gave this annotator in this project, with their own draft; StoreError otherwise.

    The screens keep (project, prompt) in per-page state that a client can tamper with; this
    re-derives the replies from the store instead of trusting the ids the page sends back.
    """
    with store.transaction() as cur:
        _check_annotator(cur, annotator_id)
        project = _check_served(cur, annotator_id, prompt_id, project_id)
        prompt = _prompt_by_id(cur, prompt_id)
        return _item(cur, project, prompt, annotator_id)


def save_draft(store: Store, annotator_id: int, prompt_id: int, ranks: Mapping, rationale: str = "", served_in: int | None = None) -> None:
    """Keep a half-finished ranking (partial ranks allowed) so a reload restores it."""
    _check_text("rationale", rationale or "")
    with store.transaction() as cur:
        _check_annotator(cur, annotator_id)
        project = _check_served(cur, annotator_id, prompt_id, served_in)
        clean = validate_ranks(ranks, _shown_replies(cur, prompt_id, project.k), complete=False, compact=False) if ranks else {}
        row = cur.execute("SELECT id, status FROM rankings WHERE prompt_id = ? AND annotator_id = ?", [prompt_id, annotator_id]).fetchone()
        if row and row[1] != "draft":
            raise NotADraft(f"this prompt is already {row[1]}; the draft was not saved")
        payload = json.dumps({str(k): v for k, v in clean.items()})
        if row:
            cur.execute(
                "UPDATE rankings SET ranks = ?, rationale = ?, updated = current_timestamp WHERE id = ? AND annotator_id = ?",
                [payload, rationale, row[0], annotator_id],
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
            f"UPDATE rankings SET {sets}, updated = current_timestamp, submitted = current_timestamp WHERE id = ? AND annotator_id = ?",
            [*columns.values(), row[0], annotator_id],
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
    served_in: int | None = None,
) -> Submission:
    """Store a complete ranking (ties allowed). Invalid or repeated input changes nothing.

    With ``served_in``, the prompt must belong to that project and have been served to this
    annotator (the screens always pass it).
    """
    _check_text("rationale", rationale or "")
    with store.transaction() as cur:
        existing = _existing_by_key(cur, key, annotator_id, prompt_id)
        if existing:
            return existing
        _check_annotator(cur, annotator_id)
        project = _check_served(cur, annotator_id, prompt_id, served_in)
        replies = _shown_replies(cur, prompt_id, project.k)
        if len(replies) < project.k:
            raise StoreError(f"this prompt has {len(replies)} of its {project.k} replies; it cannot be ranked yet")
        clean = validate_ranks(ranks, replies)
        payload = json.dumps({str(k): v for k, v in clean.items()})
        values = {"ranks": payload, "rationale": (rationale or "").strip(), "seconds_spent": seconds_spent, "both_bad": both_bad}
        return _finish(cur, annotator_id, prompt_id, "submitted", key, values)


def skip_prompt(
    store: Store, annotator_id: int, prompt_id: int, reason: str, key: str | None = None, served_in: int | None = None
) -> Submission:
    """Skip a prompt with a reason; it is not offered to this annotator again."""
    if not reason or not reason.strip():
        raise StoreError("say why you skip this prompt (for example: replies unreadable, prompt unclear)")
    _check_text("skip reason", reason)
    with store.transaction() as cur:
        existing = _existing_by_key(cur, key, annotator_id, prompt_id)
        if existing:
            return existing
        _check_annotator(cur, annotator_id)
        _check_served(cur, annotator_id, prompt_id, served_in)
        return _finish(cur, annotator_id, prompt_id, "skipped", key, {"skip_reason": reason.strip()})


def undo_last(store: Store, annotator_id: int, project_id: int, window: timedelta = UNDO_WINDOW) -> Undone:
    """Take back this annotator's last submission or skip in a project: it becomes their draft again.

    Ranks and rationale are kept, so they can change one thing and submit again. Refused after
    ``window`` (the ranking may already be in a snapshot) and when there is nothing of theirs to
    take back. One level only: while a taken-back draft is open, undoing again returns that same
    draft and changes nothing, so a double click never reaches the submission before it.
    A taken-back draft is a draft that keeps its ``submitted`` time.
    """
    with store.transaction() as cur:
        _check_annotator(cur, annotator_id)
        project = _project(cur, project_id)
        mine = """SELECT r.id, r.prompt_id, r.status, r.submitted FROM rankings r JOIN prompts p ON p.id = r.prompt_id
                  WHERE r.annotator_id = ? AND p.project_id = ? AND {} ORDER BY r.submitted DESC, r.id DESC LIMIT 1"""
        again = cur.execute(mine.format("r.status = 'draft' AND r.submitted IS NOT NULL"), [annotator_id, project_id]).fetchone()
        last = again or cur.execute(mine.format("r.status <> 'draft'"), [annotator_id, project_id]).fetchone()
        if not last:
            raise StoreError("you have nothing to undo in this project")
        ranking_id, prompt_id, status, submitted = last
        if not again:
            age = _now() - submitted if submitted else window * 2
            if age > window:
                minutes = int(window.total_seconds() // 60)
                raise StoreError(
                    f"your last submission here was {int(age.total_seconds() // 60)} minutes ago; only the last {minutes} minutes "
                    "can be undone (ask an admin if it must change)"
                )
            cur.execute(
                "UPDATE rankings SET status = 'draft', idempotency_key = NULL, skip_reason = '', both_bad = false, "
                "updated = current_timestamp WHERE id = ? AND annotator_id = ?",
                [ranking_id, annotator_id],
            )
        prompt = _prompt_by_id(cur, prompt_id)
        return Undone(_item(cur, project, prompt, annotator_id), None if again else status)


_PROGRESS_SQL = """
WITH scope AS (
    SELECT id, k, min_submitted FROM projects WHERE $project IS NULL OR id = $project
), counted AS (
    SELECT p.id, p.project_id, s.min_submitted FROM prompts p JOIN scope s ON s.id = p.project_id
), eligible AS (
    SELECT c.id FROM counted c JOIN replies r ON r.prompt_id = c.id JOIN scope s ON s.id = c.project_id
    GROUP BY c.id, s.k HAVING count(*) >= s.k
), stats AS (
    SELECT r.prompt_id,
           count(*) FILTER (WHERE r.status = 'submitted') AS n_sub,
           count(*) FILTER (WHERE r.status = 'draft' AND r.annotator_id <> $ann AND r.updated > $cutoff) AS n_claimed,
           max(CASE WHEN r.annotator_id = $ann THEN r.status END) AS mine
    FROM rankings r JOIN counted c ON c.id = r.prompt_id GROUP BY r.prompt_id
), per_prompt AS (
    SELECT c.id, c.project_id, c.min_submitted AS need, e.id IS NOT NULL AS ready,
           coalesce(s.n_sub, 0) AS n_sub, coalesce(s.n_claimed, 0) AS n_claimed, s.mine
    FROM counted c LEFT JOIN eligible e ON e.id = c.id LEFT JOIN stats s ON s.prompt_id = c.id
)
SELECT s.id,
       count(pp.id) FILTER (WHERE pp.mine = 'submitted'),
       count(pp.id) FILTER (WHERE pp.mine = 'skipped'),
       count(pp.id) FILTER (WHERE pp.ready AND (pp.mine = 'draft' OR (pp.mine IS NULL AND pp.n_sub + pp.n_claimed < pp.need))),
       count(pp.id) FILTER (WHERE pp.ready AND pp.mine IS NULL AND pp.n_sub < pp.need AND pp.n_sub + pp.n_claimed >= pp.need),
       count(pp.id),
       count(pp.id) FILTER (WHERE pp.n_sub >= pp.need)
FROM scope s LEFT JOIN per_prompt pp ON pp.project_id = s.id
GROUP BY s.id
"""


def _progress_rows(store: Store, annotator_id: int, project_id: int | None) -> dict[int, Progress]:
    rows = store.query(_PROGRESS_SQL, {"project": project_id, "ann": annotator_id, "cutoff": _now() - LEASE})
    return {row[0]: Progress(*map(int, row[1:])) for row in rows}


def progress(store: Store, project_id: int, annotator_id: int) -> Progress:
    """How far this annotator and the project are: the same rules as :func:`next_prompt`, without claiming."""
    store.project(project_id)  # a clear error for an unknown project
    return _progress_rows(store, annotator_id, project_id)[project_id]


def overview(store: Store, annotator_id: int) -> list[ProjectWork]:
    """Every project with this annotator's progress in it; projects with work for them first, then by name."""
    stats = _progress_rows(store, annotator_id, None)
    work = [ProjectWork(p, stats[p.id]) for p in open_projects(store, annotator_id) if p.id in stats]
    return sorted(work, key=lambda w: (not w.has_work, w.project.name.lower()))


# -- active learning: the project's queue order and its prompts' uncertainty ------------------------
QUEUE_ORDERS = ("default", "uncertain first")


@dataclass(frozen=True)
class QueueSettings:
    """A project's queue order and what its uncertainty figures are (for the admin console)."""

    order: str  # one of QUEUE_ORDERS
    model: str | None  # the reward model the stored figures came from; None before any scoring
    prompts: int  # prompts in the project
    scored: int  # prompts with a figure
    open: int  # prompts the queue still serves: k replies and fewer than min_submitted rankings
    open_scored: int  # open prompts with a figure
    last_scored: datetime | None  # when the newest figure was written


def _check_admin(cur: duckdb.DuckDBPyConnection, annotator_id: int) -> None:
    row = cur.execute("SELECT active, role FROM annotators WHERE id = ?", [annotator_id]).fetchone()
    if not row or not row[0] or row[1] != "admin":
        raise StoreError("only an active admin can change a project's queue order or its uncertainty figures; nothing was changed")


# Open prompts (the project's k replies, fewer than min_submitted submitted rankings) and their
# first k replies, the ones an annotator ranks and so the ones a reward model should be unsure about.
_OPEN_SQL = """
WITH proj AS (
    SELECT k, min_submitted FROM projects WHERE id = $project
), shown AS (
    SELECT prompt_id, list(text ORDER BY id) AS texts FROM (
        SELECT r.prompt_id, r.id, r.text, row_number() OVER (PARTITION BY r.prompt_id ORDER BY r.id) AS n
        FROM replies r JOIN prompts p ON p.id = r.prompt_id WHERE p.project_id = $project
    ) WHERE n <= (SELECT k FROM proj) GROUP BY prompt_id HAVING count(*) >= (SELECT k FROM proj)
), submitted AS (
    SELECT r.prompt_id, count(*) AS n_sub FROM rankings r JOIN prompts p ON p.id = r.prompt_id
    WHERE p.project_id = $project AND r.status = 'submitted' GROUP BY r.prompt_id
)
SELECT p.id, p.text, s.texts, p.uncertainty FROM prompts p JOIN shown s ON s.prompt_id = p.id
LEFT JOIN submitted d ON d.prompt_id = p.id
WHERE p.project_id = $project AND coalesce(d.n_sub, 0) < (SELECT min_submitted FROM proj)
ORDER BY p.id
"""


def open_prompts(store: Store, project_id: int) -> list[tuple[int, str, list[str]]]:
    """(prompt id, prompt text, its first k reply texts) for every prompt the queue still serves.

    These are what a reward model scores for active learning; the text is the prompt's text, as
    snapshots give it to reward training.
    """
    store.project(project_id)  # a clear error for an unknown project
    return [(int(pid), text, list(texts)) for pid, text, texts, _ in store.query(_OPEN_SQL, {"project": project_id})]


def queue_settings(store: Store, project_id: int) -> QueueSettings:
    """A project's queue order, the model of its uncertainty figures and how many prompts have one."""
    rows = store.query("SELECT coalesce(queue_order, 'default'), uncertainty_model FROM projects WHERE id = ?", [project_id])
    if not rows:
        raise StoreError(f"no project with id {project_id}")
    order, model = rows[0]
    [(prompts, scored, last)] = store.query(
        "SELECT count(*), count(uncertainty), max(uncertainty_scored) FROM prompts WHERE project_id = ?", [project_id]
    )
    [(still_open, open_scored)] = store.query(f"SELECT count(*), count(uncertainty) FROM ({_OPEN_SQL})", {"project": project_id})
    return QueueSettings(order, model, int(prompts), int(scored), int(still_open), int(open_scored), last)


def set_queue_order(store: Store, project_id: int, order: str, by: int) -> None:
    """Set a project's queue order (one of :data:`QUEUE_ORDERS`); ``by`` must be an active admin."""
    if order not in QUEUE_ORDERS:
        raise StoreError(f"the queue order must be one of {', '.join(repr(o) for o in QUEUE_ORDERS)}, got {order!r}; nothing was changed")
    with store.transaction() as cur:
        _check_admin(cur, by)
        _project(cur, project_id)
        cur.execute("UPDATE projects SET queue_order = ? WHERE id = ?", [order, project_id])


def write_uncertainties(store: Store, project_id: int, values: Mapping[int, float], model: str, by: int) -> int:
    """Store one batch of prompt uncertainties from the reward model ``model``, in one transaction.

    Every prompt id must be one of this project's prompts, at most once, and every figure a finite
    number (higher = the model is less sure); ``by`` must be an active admin. Anything wrong
    refuses the whole batch and changes nothing. Figures of different models are not comparable,
    so a batch from another model than the project's stored figures clears those first: one
    project's figures always come from one model. Returns the number of prompts written.
    """
    model = check_name(model, "a reward model")
    if not values:
        raise StoreError("no uncertainty figures to write; score some open prompts first")
    ids, figures = [], []
    for key, value in values.items():
        if isinstance(key, bool) or not isinstance(key, int):
            raise StoreError(f"{key!r} is not a prompt id; nothing was written")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise StoreError(f"the uncertainty of prompt {key} must be a finite number, got {value!r}; nothing was written")
        ids.append(key)
        figures.append(float(value))
    with store.transaction() as cur:
        _check_admin(cur, by)
        project = _project(cur, project_id)
        foreign = [
            pid
            for (pid,) in cur.execute(
                "SELECT t.id FROM unnest(?::BIGINT[]) t(id) WHERE t.id NOT IN (SELECT id FROM prompts WHERE project_id = ?) ORDER BY t.id",
                [ids, project_id],
            ).fetchall()
        ]
        if foreign:
            shown = ", ".join(map(str, foreign[:5])) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise StoreError(f"prompt ids {shown} are not prompts of the project {project.name!r}; nothing was written")
        [(stored,)] = cur.execute("SELECT uncertainty_model FROM projects WHERE id = ?", [project_id]).fetchall()
        if stored != model:
            cur.execute("UPDATE prompts SET uncertainty = NULL, uncertainty_scored = NULL WHERE project_id = ?", [project_id])
        cur.execute(
            "UPDATE prompts SET uncertainty = v.u, uncertainty_scored = current_timestamp "
            "FROM (SELECT unnest(?::BIGINT[]) AS id, unnest(?::DOUBLE[]) AS u) v WHERE prompts.id = v.id",
            [ids, figures],
        )
        cur.execute("UPDATE projects SET uncertainty_model = ? WHERE id = ?", [model, project_id])
    return len(ids)
