"""Thumbs up/down on replies the studio showed: one verdict per account and reply, changeable.

The chat, the prompt lab and the arena make a :class:`ShownReply` on the server when they show a
reply (a fresh ``key``, the prompt it answered, the text, the model and its settings) and keep it
in the session's server-side state. A thumb click names the reply by index only; the screen looks
the ShownReply up and calls :func:`record_feedback`. Nothing in a ShownReply comes from the client.

    shown = ShownReply(key=new_key("chat"), surface="chat", prompt="Hi", reply="Hello!", model="smollm2-135m-instruct",
                       settings={"temperature": 0.0})
    record_feedback(store, "ana", shown, +1)        # 'stored'
    record_feedback(store, "ana", shown, -1)        # 'changed' (updated time moves)
    record_feedback(store, "ana", shown, -1)        # 'unchanged' (a no-op)
    clear_feedback(store, "ana", shown.key)         # True: the verdict is gone
    my_verdicts(store, "ana")                       # {key: verdict} of ana's own replies only
    feedback_counts(store)                          # per model and surface (for admins)
    kto_thumb_rows(store, models=["smollm2-135m-instruct"])   # kto.parquet rows (annotations.snapshot)

The prompt follows the snapshot's convention (``preference.parquet``'s ``prompt``): a single
user message is its text, a longer conversation its transcript (:func:`prompt_text`, the same
rule as :func:`annotations.importers.prompt_from_messages`).

Rankings convert to KTO rows too (:func:`kto_ranking_rows`): see :data:`KTO_RULES`.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from annotations.importers import prompt_from_messages
from annotations.store import Store, StoreError, check_text

SURFACES = ("chat", "lab", "arena")
VERDICTS = (1, -1)
MAX_KEY_CHARS = 200  # keys are made by new_key; anything much longer is not one of ours
MAX_SETTINGS_CHARS = 50_000  # settings are made by the server too; this only stops a runaway dict
KTO_AGGREGATES = ("majority", "per_annotator")
# How rankings become KTO rows, as the snapshot's manifest states it (keyed by the snapshot's
# aggregation across annotators).
KTO_RULES = {
    "per_annotator": (
        "Each submitted ranking gives rows of its own (annotator = who ranked): the replies at its best rank (ties included) "
        "are desirable, those at its worst rank (ties included) undesirable, the ranks between are left out; a ranking whose "
        "replies all share one rank gives nothing. The same reply may appear once per annotator, with different labels."
    ),
    "majority": (
        "One row per reply: of the annotators whose submitted ranking includes the reply (a ranking that ties every reply "
        "counts as a vote for neither), more than half put it at their best rank (ties included) -> desirable; more than "
        "half at their worst rank -> undesirable; otherwise, and for the ranks between, it is left out. agreement is the "
        "share who voted for the row's label."
    ),
}


@dataclass(frozen=True)
class ShownReply:
    """A reply as the server showed it to one user; made by the server, never from a request."""

    key: str
    surface: str
    prompt: str
    reply: str
    model: str
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FeedbackCount:
    model: str
    surface: str
    up: int
    down: int


def new_key(surface: str) -> str:
    """A fresh, unguessable reply key for ``surface``."""
    return f"{surface}-{secrets.token_hex(16)}"


def prompt_text(messages: Sequence[Mapping]) -> str:
    """The prompt of a reply that answered ``messages`` (the preference.parquet convention)."""
    turns = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    if not turns:
        raise StoreError("a reply answers at least one message; there is none")
    return prompt_from_messages(turns, source="").text


def _check(store: Store, shown: ShownReply) -> str:
    """ShownReply's settings as JSON after checking every field; StoreError says what is wrong."""
    if not isinstance(shown.key, str) or not shown.key.strip() or len(shown.key) > MAX_KEY_CHARS:
        raise StoreError(f"the reply key must be non-empty text of at most {MAX_KEY_CHARS} characters; reload the page")
    check_text(store.limits, "reply", shown.key, "the reply key")
    if shown.surface not in SURFACES:
        raise StoreError(f"the surface must be one of {', '.join(SURFACES)}, got {shown.surface!r}")
    if not isinstance(shown.reply, str) or not shown.reply.strip():
        raise StoreError("this reply is empty; there is nothing to give a thumb to")
    if not isinstance(shown.prompt, str) or not shown.prompt.strip():
        raise StoreError("the reply has no prompt; there is nothing to store")
    if not isinstance(shown.model, str) or not shown.model.strip():
        raise StoreError("the reply names no model; it cannot be stored")
    check_text(store.limits, "prompt", shown.prompt, "the reply's prompt")
    check_text(store.limits, "reply", shown.reply, "the reply")
    check_text(store.limits, "reply", shown.model, "the model name")
    try:
        # ASCII: a lone surrogate in a setting becomes an escape, not text DuckDB would refuse.
        settings = json.dumps(shown.settings, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"the reply's settings are not plain JSON: {exc}") from exc
    if not isinstance(shown.settings, dict) or len(settings) > MAX_SETTINGS_CHARS:
        raise StoreError(f"the reply's settings must be a JSON object of at most {MAX_SETTINGS_CHARS:,} characters")
    return settings


def _account(cur, user: str) -> int:
    row = cur.execute("SELECT id, active, role FROM annotators WHERE name = ?", [user]).fetchone()
    if not row or row[2] == "import":
        raise StoreError(f"no annotator {user!r}; the thumb was not stored")
    if not row[1]:
        raise StoreError("this account is deactivated; ask an admin. The thumb was not stored")
    return int(row[0])


def record_feedback(store: Store, user: str, shown: ShownReply, verdict: int) -> str:
    """Store ``user``'s verdict (+1 up, -1 down) on ``shown``, in one transaction.

    Returns 'stored' (first verdict on this reply), 'changed' (the other verdict than before;
    the updated time moves) or 'unchanged' (the same verdict and reply again: nothing is written).
    """
    if isinstance(verdict, bool) or verdict not in VERDICTS:
        raise StoreError(f"a verdict is +1 (thumb up) or -1 (thumb down), got {verdict!r}")
    settings = _check(store, shown)
    with store.transaction() as cur:
        account = _account(cur, user)
        row = cur.execute(
            "SELECT id, verdict, reply, prompt FROM feedback WHERE annotator_id = ? AND reply_key = ?", [account, shown.key]
        ).fetchone()
        if row is None:
            cur.execute(
                "INSERT INTO feedback (annotator_id, reply_key, surface, prompt, reply, model, settings, verdict) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [account, shown.key, shown.surface, shown.prompt, shown.reply, shown.model, settings, verdict],
            )
            return "stored"
        if (row[1], row[2], row[3]) == (verdict, shown.reply, shown.prompt):
            return "unchanged"
        # The same key with other text: a reply thumbed while it streamed, clicked again later (the
        # end of the stream also brings the row up to date, finish_reply).
        cur.execute(
            "UPDATE feedback SET verdict = ?, reply = ?, prompt = ?, settings = ?, updated = current_timestamp WHERE id = ?",
            [verdict, shown.reply, shown.prompt, settings, row[0]],
        )
        return "changed"


def finish_reply(store: Store, key: str, reply: str) -> int:
    """A streamed reply has ended: every verdict given on it while it streamed now holds its whole text.

    A thumb clicked mid-stream stored the text shown at that moment; KTO must learn from the reply the
    model gave. Nothing is written when no verdict names ``key`` (the usual case). Returns the rows updated.
    """
    if not store.query("SELECT 1 FROM feedback WHERE reply_key = ? AND reply <> ? LIMIT 1", [key, reply]):
        return 0
    with store.transaction() as cur:
        return cur.execute("UPDATE feedback SET reply = ? WHERE reply_key = ? AND reply <> ?", [reply, key, reply]).fetchone()[0]


def clear_feedback(store: Store, user: str, key: str) -> bool:
    """Remove ``user``'s verdict on the reply ``key``; False when there was none."""
    with store.transaction() as cur:
        account = _account(cur, user)
        found = cur.execute("SELECT id FROM feedback WHERE annotator_id = ? AND reply_key = ?", [account, key]).fetchone()
        if found:
            cur.execute("DELETE FROM feedback WHERE id = ?", [found[0]])
        return found is not None


def my_verdicts(store: Store, user: str, keys: Iterable[str] | None = None) -> dict[str, int]:
    """``user``'s own verdicts by reply key (only theirs; optionally only these keys)."""
    sql = "SELECT f.reply_key, f.verdict FROM feedback f JOIN annotators a ON a.id = f.annotator_id WHERE a.name = ?"
    params: list = [user]
    if keys is not None:
        keys = list(keys)
        if not keys:
            return {}
        sql += " AND f.reply_key IN (SELECT unnest(?::VARCHAR[]))"
        params.append(keys)
    return {k: int(v) for k, v in store.query(sql, params)}


def feedback_counts(store: Store) -> list[FeedbackCount]:
    """Thumbs up and down per model and surface, most thumbs first (for admins)."""
    rows = store.query(
        "SELECT model, surface, count(*) FILTER (WHERE verdict = 1), count(*) FILTER (WHERE verdict = -1) FROM feedback "
        "GROUP BY model, surface ORDER BY count(*) DESC, model, surface"
    )
    return [FeedbackCount(m, s, int(u), int(d)) for m, s, u, d in rows]


def thumb_selection(models: Sequence[str] | None = None, surfaces: Sequence[str] | None = None) -> dict:
    """The normalised thumbs selection of a snapshot (None = all); StoreError for an unknown surface."""
    picked_models = sorted({m.strip() for m in models or [] if m and m.strip()}) or None
    picked_surfaces = sorted(set(surfaces or [])) or None
    for s in picked_surfaces or []:
        if s not in SURFACES:
            raise StoreError(f"unknown surface {s!r}; choose from {', '.join(SURFACES)}")
    return {"models": picked_models, "surfaces": picked_surfaces}


def kto_thumb_rows(store: Store, models: Sequence[str] | None = None, surfaces: Sequence[str] | None = None) -> list[dict]:
    """Every stored thumb (optionally of these models and surfaces) as a kto.parquet row, oldest first."""
    selection = thumb_selection(models, surfaces)
    sql = (
        "SELECT f.prompt, f.reply, f.verdict, a.name, f.model, f.surface, f.reply_key FROM feedback f "
        "JOIN annotators a ON a.id = f.annotator_id WHERE true"
    )
    params: list = []
    if selection["models"]:
        sql += " AND f.model IN (SELECT unnest(?::VARCHAR[]))"
        params.append(selection["models"])
    if selection["surfaces"]:
        sql += " AND f.surface IN (SELECT unnest(?::VARCHAR[]))"
        params.append(selection["surfaces"])
    return [
        _kto_row(prompt, reply, verdict > 0, "thumbs", who, model, surface=surface, reply_key=key)
        for prompt, reply, verdict, who, model, surface, key in store.query(sql + " ORDER BY f.id", params)
    ]


def _kto_row(
    prompt: str,
    completion: str,
    label: bool,
    source: str,
    annotator: str | None,
    model: str | None,
    *,
    surface: str | None = None,
    reply_key: str | None = None,
    prompt_id: int | None = None,
    reply_id: int | None = None,
    n_annotators: int = 1,
    agreement: float = 1.0,
) -> dict:
    return {
        "prompt": prompt,
        "completion": completion,
        "label": bool(label),
        "source": source,
        "annotator": annotator,
        "model": model or None,
        "surface": surface,
        "reply_key": reply_key,
        "prompt_id": prompt_id,
        "reply_id": reply_id,
        "n_annotators": n_annotators,
        "agreement": agreement,
    }


def ranking_labels(ranks: Mapping[int, int]) -> dict[int, bool]:
    """One ranking's KTO labels: best rank (ties included) True, worst rank False, the rest absent."""
    levels = sorted(set(ranks.values()))
    if len(levels) < 2:
        return {}
    return {reply: value == levels[0] for reply, value in ranks.items() if value in (levels[0], levels[-1])}


def kto_ranking_rows(
    rankings: Sequence[tuple[int, str, Mapping[int, int]]],
    aggregate_by: str,
    prompts: Mapping[int, str],
    replies: Mapping[int, tuple[str, str]],
) -> list[dict]:
    """kto.parquet rows from submitted rankings ((prompt id, annotator, ranks) triples), by :data:`KTO_RULES`.

    ``prompts`` maps prompt ids to their text; ``replies`` maps reply ids to (text, model).
    Rows come sorted by prompt, then reply (then annotator).
    """
    if aggregate_by not in KTO_AGGREGATES:
        raise StoreError(f"unknown aggregation {aggregate_by!r}; choose one of {', '.join(KTO_AGGREGATES)}")
    out: list[dict] = []
    if aggregate_by == "per_annotator":
        for pid, who, ranks in sorted(rankings, key=lambda r: (r[0], r[1])):
            for reply, label in sorted(ranking_labels(ranks).items()):
                text, model = replies[reply]
                out.append(_kto_row(prompts[pid], text, label, "ranking", who, model, prompt_id=pid, reply_id=reply))
        return out
    votes: dict[tuple[int, int], list[bool | None]] = defaultdict(list)
    for pid, _, ranks in rankings:
        labels = ranking_labels(ranks)
        for reply in ranks:
            votes[(pid, reply)].append(labels.get(reply))
    for (pid, reply), cast in sorted(votes.items()):
        n = len(cast)
        for label in (True, False):
            agreeing = sum(1 for v in cast if v is label)
            if 2 * agreeing > n:
                text, model = replies[reply]
                out.append(
                    _kto_row(
                        prompts[pid], text, label, "ranking", None, model, prompt_id=pid, reply_id=reply, n_annotators=n,
                        agreement=agreeing / n,
                    )
                )  # fmt: skip
    return out
