"""The arena's storage: blind battles between two models, their votes, and the admin's arena settings.

In the arena a user sees one prompt answered by two anonymous contenders side by side, may go on
for a few turns, votes (A better, B better, tie, both bad) and only then sees their names. A battle
is stored once, with its vote, in one transaction (schema v5, ``arena_battles``); the votes feed
the leaderboard (a Bradley-Terry fit over :func:`battle_outcomes`) and training
(:func:`export_preference_pairs` writes a snapshot folder of preference pairs).

    save_settings(store, ArenaSettings(contenders=(Contender("base", "smollm2-135m-instruct"),
                                                   Contender("terse", "smollm2-135m-instruct", template="terse"))))
    settings = load_settings(store)
    battle_id, created = record_vote(store, key=battle_key, annotator="ana", contender_a="base", contender_b="terse",
                                     conversation_a=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
                                     conversation_b=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hi."}],
                                     vote="a", prompt_source="typed",
                                     sampling={"a": {"temperature": 0.7}, "b": {"temperature": 0.7}},
                                     lineage={"a": {"base_model": "..."}, "b": {"base_model": "..."}})
    info = export_preference_pairs(store, Path("snapshots"))     # a SnapshotInfo, like create_snapshot's

What a battle holds:

- ``conversation_a`` / ``conversation_b``: the messages as the user saw them on each side, optional
  leading ``system`` messages, then ``user`` / ``assistant`` turns in alternation, ending with an
  assistant reply. The user turns are the same on both sides (the user types once for both).
  What a template added for a side (demonstrations, a rewritten question) is not part of the
  conversation: it belongs in that side's ``sampling`` / ``lineage``.
- ``sampling`` and ``lineage``: ``{"a": {...}, "b": {...}}``, one dict per side (other keys allowed).
- ``prompt``: the first user message; ``prompt_source``: ``"typed"`` or ``"project:NAME"``.

Votes cannot be changed: the same battle key again with the same vote (a double click, a retried
request) stores nothing and returns the stored battle; with another vote it is refused.

Export rule for battles of several turns: they give no preference pair (counted in the manifest
as ``multi_turn_left_out``). A vote judges a whole conversation, not its last reply, and each
side's last reply answers a different history (its own earlier replies), so any single
prompt/chosen/rejected triple cut from it would pair a reply with a context it never saw or
credit the last turn with a verdict on all of them. Single-turn battles give clean pairs: the
prompt is the user's message (a side's system message is left out: the sides may differ there,
and the user judged the replies to their message), chosen and rejected are the two replies.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from annotations.snapshot import CONVERSATIONAL, MANIFEST, PLAIN, SnapshotInfo, _freeze, _remove, _sha256
from annotations.store import Store, StoreError, check_name, check_text

VOTES = ("a", "b", "tie", "both_bad")
PAIR_SAMPLING = ("uncertain", "uniform")
# The same ceilings as the chat's controls (studio/chat.py: temperature slider 0-2, at most
# 1024 new tokens): the arena should not let an admin ask for more than the chat allows.
MAX_TEMPERATURE = 2.0
MAX_NEW_TOKENS = 1024
MAX_TURNS = 10
# Keys are made by the server (a UUID); anything much longer is not one of ours.
MAX_KEY_CHARS = 200
# sampling and lineage are made by the server too; this only stops a runaway dict.
MAX_JSON_CHARS = 50_000
PAIR_STRATEGY = "arena"


class ArenaSettingsError(StoreError, ValueError):
    """Arena settings that cannot be used; a StoreError and a ValueError, so either catch works."""


@dataclass(frozen=True)
class Contender:
    label: str  # shown after the vote; unique within the settings
    model: str  # registered model name
    template: str = ""  # name of a saved prompt-lab template ("" = none): L1 variants take part


@dataclass(frozen=True)
class ArenaSettings:
    contenders: tuple[Contender, ...] = ()
    prompt_project: str = ""  # project whose prompts are the arena prompt set; "" = none
    allow_typed: bool = True  # users may type their own prompt
    pair_sampling: str = "uncertain"  # "uncertain" (pairs whose order is least certain more often) | "uniform"
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 160
    max_turns: int = 3  # user turns allowed before voting

    def check(self) -> None:
        """ArenaSettingsError saying what to fix when these settings cannot run an arena."""
        if not isinstance(self.contenders, tuple) or not all(isinstance(c, Contender) for c in self.contenders):
            raise ArenaSettingsError("contenders must be a tuple of Contender")
        if len(self.contenders) < 2:
            raise ArenaSettingsError(f"the arena needs at least 2 contenders to pair, got {len(self.contenders)}; add another model")
        seen: set[str] = set()
        for n, c in enumerate(self.contenders, 1):
            if not all(isinstance(v, str) for v in (c.label, c.model, c.template)):
                raise ArenaSettingsError(f"contender {n}: label, model and template are text")
            try:
                for value in (c.label, c.model, c.template):
                    _check_encodable(f"contender {n}", value)  # check_name lets lone surrogates through
                label = check_name(c.label, f"contender {n}")
                check_name(c.model, f"contender {label!r}: the model")
                if c.template:
                    check_name(c.template, f"contender {label!r}: the template")
            except StoreError as exc:
                raise ArenaSettingsError(str(exc)) from None
            if label != c.label:
                raise ArenaSettingsError(f"contender label {c.label!r} has spaces at its ends; use {label!r}")
            if label in seen:
                raise ArenaSettingsError(f"two contenders are labelled {label!r}; labels are shown after the vote and must differ")
            seen.add(label)
        if not isinstance(self.prompt_project, str):
            raise ArenaSettingsError(f"the arena's prompt project must be a project name, got {self.prompt_project!r}")
        if self.prompt_project:
            try:
                _check_encodable("the arena's prompt project", self.prompt_project)
                check_name(self.prompt_project, "the arena's prompt project")
            except StoreError as exc:
                raise ArenaSettingsError(str(exc)) from None
        if not isinstance(self.allow_typed, bool):
            raise ArenaSettingsError(f"allow_typed must be true or false, got {self.allow_typed!r}")
        if not self.allow_typed and not self.prompt_project:
            raise ArenaSettingsError("with typed prompts off the arena needs a prompt project; choose one or allow typed prompts")
        if self.pair_sampling not in PAIR_SAMPLING:
            raise ArenaSettingsError(f"pair sampling must be one of {', '.join(PAIR_SAMPLING)}, got {self.pair_sampling!r}")
        if not _number(self.temperature) or not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise ArenaSettingsError(f"temperature must be between 0 (greedy) and {MAX_TEMPERATURE:g}, got {self.temperature!r}")
        if not _number(self.top_p) or not 0 < self.top_p <= 1:
            raise ArenaSettingsError(f"top_p must be above 0 and at most 1, got {self.top_p!r}")
        if not _whole(self.max_new_tokens) or not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise ArenaSettingsError(f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS}, got {self.max_new_tokens!r}")
        if not _whole(self.max_turns) or not 1 <= self.max_turns <= MAX_TURNS:
            raise ArenaSettingsError(f"max_turns must be a whole number from 1 to {MAX_TURNS}, got {self.max_turns!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ArenaSettings:
        """Settings from their JSON form; keys this version does not know are ignored."""
        known = {f.name for f in fields(cls)} - {"contenders"}
        contenders = tuple(
            Contender(str(c.get("label", "")), str(c.get("model", "")), str(c.get("template", "") or ""))
            for c in data.get("contenders", ())
        )
        return cls(contenders=contenders, **{k: v for k, v in data.items() if k in known})


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def load_settings(store: Store) -> ArenaSettings:
    """The saved arena settings, or the defaults (no contenders) when none were saved."""
    # Every arena page load asks: the committed state, without waiting behind a long write.
    rows = store.read("SELECT body FROM arena_settings WHERE id = 1")
    return ArenaSettings.from_dict(json.loads(rows[0][0])) if rows else ArenaSettings()


def save_settings(store: Store, settings: ArenaSettings) -> None:
    """Check and save the arena settings in one transaction; a refusal changes nothing.

    A named prompt project must exist, and so must each contender's template. Whether each
    model is registered is for the caller to check (the registry lives in ``rlhf``).
    """
    settings.check()
    with store.transaction() as cur:
        if settings.prompt_project and not cur.execute("SELECT 1 FROM projects WHERE name = ?", [settings.prompt_project]).fetchone():
            raise ArenaSettingsError(f"no project {settings.prompt_project!r} for the arena's prompts; create it first or choose another")
        for c in settings.contenders:
            if c.template and not cur.execute("SELECT 1 FROM prompt_templates WHERE name = ?", [c.template]).fetchone():
                raise ArenaSettingsError(f"contender {c.label!r}: no saved template {c.template!r}; save it in the prompt lab first")
        cur.execute(
            "INSERT INTO arena_settings (id, body) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated = now()",
            [json.dumps(settings.as_dict())],
        )


# -- battles --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Battle:
    id: int
    key: str
    annotator: str
    contender_a: str
    contender_b: str
    vote: str
    prompt: str
    prompt_source: str
    conversation_a: list[dict]
    conversation_b: list[dict]
    sampling: dict
    lineage: dict
    seconds: float | None
    created: datetime

    @property
    def turns(self) -> int:
        """User turns in the battle (the same on both sides)."""
        return sum(1 for m in self.conversation_a if m["role"] == "user")


def _check_conversation(store: Store, side: str, conversation: object) -> list[dict]:
    """The conversation as plain {"role", "content"} messages; StoreError naming the side and message if it is malformed."""
    where = f"side {side.upper()}"
    if not isinstance(conversation, list) or not conversation:
        raise StoreError(f"{where}: the conversation must be a non-empty list of messages")
    clean = []
    for n, m in enumerate(conversation, 1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise StoreError(f"{where}, message {n}: a message is {{'role': ..., 'content': text}}")
        clean.append({"role": m["role"], "content": m["content"]})
    start = 0
    while start < len(clean) and clean[start]["role"] == "system":
        start += 1
    turns = clean[start:]
    if not turns or len(turns) % 2:
        raise StoreError(f"{where}: after any system message the conversation is user and assistant turns, ending with an assistant reply")
    for n, m in enumerate(turns):
        expected = "user" if n % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise StoreError(f"{where}, message {start + n + 1}: expected a {expected} message, got {m['role']!r}")
    if len(turns) // 2 > MAX_TURNS:
        raise StoreError(f"{where}: {len(turns) // 2} turns, more than the arena allows ({MAX_TURNS})")
    for n, m in enumerate(clean, 1):
        check_text(store.limits, "reply" if m["role"] == "assistant" else "prompt", m["content"], f"{where}, message {n}")
        if m["role"] == "user" and not m["content"].strip():
            raise StoreError(f"{where}, message {n}: the user message is empty")
    return clean


def _check_json(what: str, value: object) -> str:
    """``value`` as JSON text: a dict with a dict for each side, no lone surrogates, not huge."""
    if not isinstance(value, dict) or not all(isinstance(value.get(side), dict) for side in ("a", "b")):
        raise StoreError(f"{what} must be a dict with a dict for each side: {{'a': {{...}}, 'b': {{...}}}}")
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
        text.encode("utf-8")  # a lone surrogate cannot be encoded, and DuckDB would refuse it
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise StoreError(f"{what} cannot be stored as JSON: {exc}") from None
    if len(text) > MAX_JSON_CHARS:
        raise StoreError(f"{what} has {len(text):,} characters as JSON, more than {MAX_JSON_CHARS:,}")
    return text


def _check_encodable(what: str, text: str) -> None:
    """Refuse text holding a lone surrogate (not Unicode text; DuckDB refuses it with an unhelpful error)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StoreError(f"{what} holds a lone surrogate at character {exc.start + 1:,}, which is not valid Unicode text") from None


def _check_label(what: str, label: object) -> str:
    if not isinstance(label, str):
        raise StoreError(f"{what} must be a contender label")
    _check_encodable(what, label)  # check_name lets lone surrogates through
    name = check_name(label, what)
    if name != label:
        raise StoreError(f"{what} label {label!r} has spaces at its ends")
    return name


def _check_source(source: object) -> str:
    if source == "typed":
        return source
    if isinstance(source, str) and source.startswith("project:"):
        _check_encodable("the prompt's project", source)
        check_name(source.removeprefix("project:"), "the prompt's project")
        return source
    raise StoreError(f"prompt_source must be 'typed' or 'project:NAME', got {source!r}")


def record_vote(
    store: Store,
    *,
    key: str,
    annotator: str,
    contender_a: str,
    contender_b: str,
    conversation_a: list[dict],
    conversation_b: list[dict],
    vote: str,
    prompt_source: str,
    sampling: dict,
    lineage: dict,
    seconds: float | None = None,
) -> tuple[int, bool]:
    """Store a battle with its vote in one transaction; returns (battle id, created).

    The same ``key`` again with the same annotator, contenders and vote stores nothing and returns
    (the stored id, False). Everything else that is wrong raises StoreError and stores nothing:
    another vote or another battle under a stored key, a key of another account, a vote not in
    VOTES, equal contenders, malformed conversations (see the module docstring) or conversations
    whose user turns differ, text over the store's limits, an unknown or deactivated account.
    """
    # Everything that needs no database first, outside the write lock.
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_CHARS:
        raise StoreError(f"the battle key must be non-empty text of at most {MAX_KEY_CHARS} characters; reload the page")
    _check_encodable("the battle key", key)
    if vote not in VOTES:
        raise StoreError(f"the vote must be one of {', '.join(VOTES)}, got {vote!r}")
    label_a, label_b = _check_label("contender A", contender_a), _check_label("contender B", contender_b)
    if label_a == label_b:
        raise StoreError(f"a battle needs two different contenders, got {label_a!r} twice")
    conv_a, conv_b = _check_conversation(store, "a", conversation_a), _check_conversation(store, "b", conversation_b)
    users_a = [m["content"] for m in conv_a if m["role"] == "user"]
    if users_a != [m["content"] for m in conv_b if m["role"] == "user"]:
        raise StoreError("the two sides' user messages differ; both sides answer the same user turns")
    source = _check_source(prompt_source)
    sampling_json, lineage_json = _check_json("sampling", sampling), _check_json("lineage", lineage)
    if seconds is not None and (not _number(seconds) or seconds < 0):
        raise StoreError(f"seconds must be a finite number >= 0, got {seconds!r}")

    with store.transaction() as cur:
        stored = cur.execute(
            "SELECT b.id, a.name, b.contender_a, b.contender_b, b.vote FROM arena_battles b "
            "JOIN annotators a ON a.id = b.annotator_id WHERE b.battle_key = ?",
            [key],
        ).fetchone()
        if stored:
            return _same_battle(stored, annotator, label_a, label_b, vote)
        account = cur.execute("SELECT id, active, role FROM annotators WHERE name = ?", [annotator]).fetchone()
        if not account or account[2] == "import":
            raise StoreError(f"no annotator {annotator!r}; the vote was not stored")
        if not account[1]:
            raise StoreError("this account is deactivated; ask an admin. The vote was not stored")
        battle_id = cur.execute(
            "INSERT INTO arena_battles (battle_key, annotator_id, contender_a, contender_b, conversation_a, conversation_b, "
            "prompt, prompt_source, vote, sampling, lineage, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            [
                key,
                account[0],
                label_a,
                label_b,
                json.dumps(conv_a, ensure_ascii=False),
                json.dumps(conv_b, ensure_ascii=False),
                users_a[0],
                source,
                vote,
                sampling_json,
                lineage_json,
                None if seconds is None else float(seconds),
            ],
        ).fetchone()[0]
    return battle_id, True


def _same_battle(stored: tuple, annotator: str, label_a: str, label_b: str, vote: str) -> tuple[int, bool]:
    """(id, False) when a repeated key repeats the stored battle; StoreError when it does not."""
    battle_id, who, stored_a, stored_b, stored_vote = stored
    if who != annotator:
        raise StoreError("this battle belongs to another account; reload the page for a new battle")
    if (stored_a, stored_b) != (label_a, label_b):
        raise StoreError("this battle key was already used for another battle; reload the page for a new battle")
    if stored_vote != vote:
        raise StoreError(f"this battle already has your vote ({_VOTE_WORDS[stored_vote]}); a vote cannot be changed")
    return battle_id, False


_VOTE_WORDS = {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both are bad"}

_BATTLE_COLUMNS = (
    "b.id, b.battle_key, a.name, b.contender_a, b.contender_b, b.vote, b.prompt, b.prompt_source, "
    "b.conversation_a, b.conversation_b, b.sampling, b.lineage, b.seconds, b.created"
)


def _battle(row: tuple) -> Battle:
    *head, conv_a, conv_b, sampling, lineage, seconds, created = row
    return Battle(*head, json.loads(conv_a), json.loads(conv_b), json.loads(sampling), json.loads(lineage), seconds, created)


def battles(store: Store, since: datetime | None = None) -> list[Battle]:
    """Every stored battle in the order they were voted (those created at or after ``since``; naive = UTC)."""
    sql = f"SELECT {_BATTLE_COLUMNS} FROM arena_battles b JOIN annotators a ON a.id = b.annotator_id"
    params: list = []
    if since is not None:
        sql += " WHERE b.created >= ?"
        params.append(since if since.tzinfo else since.replace(tzinfo=UTC))
    return [_battle(r) for r in store.query(sql + " ORDER BY b.id", params)]


def battle_outcomes(store: Store) -> list[tuple[str, str, str]]:
    """(contender_a, contender_b, vote) of every battle in voting order, for the Bradley-Terry fit."""
    return [(a, b, v) for a, b, v in store.query("SELECT contender_a, contender_b, vote FROM arena_battles ORDER BY id")]


def pair_counts(store: Store) -> dict[tuple[str, str], int]:
    """Battles per unordered pair of contenders, keyed (first, second) in alphabetical order."""
    rows = store.query(
        "SELECT least(contender_a, contender_b), greatest(contender_a, contender_b), count(*) FROM arena_battles GROUP BY ALL ORDER BY ALL"
    )
    return {(a, b): int(n) for a, b, n in rows}


def votes_of(store: Store, annotator: str) -> int:
    """How many battles this account has voted in (0 for an unknown name)."""
    # Shown on every arena page: the committed count, without waiting behind a long write.
    rows = store.read("SELECT count(*) FROM arena_battles b JOIN annotators a ON a.id = b.annotator_id WHERE a.name = ?", [annotator])
    return int(rows[0][0])


# -- votes feed training ------------------------------------------------------------------------------
def _pairs(all_battles: list[Battle], include_ties: bool) -> tuple[list[dict], dict]:
    """The preference rows of the battles that give one, and the manifest's counts."""
    votes = dict.fromkeys(VOTES, 0)
    left_out = {"ties_left_out": 0, "both_bad_left_out": 0, "multi_turn_left_out": 0}
    records = []
    for b in all_battles:
        votes[b.vote] += 1
        if b.vote == "both_bad":
            left_out["both_bad_left_out"] += 1
            continue
        if b.vote == "tie" and not include_ties:
            left_out["ties_left_out"] += 1
            continue
        if b.turns != 1:
            left_out["multi_turn_left_out"] += 1
            continue
        a_wins = b.vote != "b"  # a tie keeps the sides' order, with margin 0
        winner, loser = ("a", "b") if a_wins else ("b", "a")
        conv = {"a": b.conversation_a, "b": b.conversation_b}
        records.append(
            {
                "prompt": b.prompt,
                "chosen": conv[winner][-1]["content"],
                "rejected": conv[loser][-1]["content"],
                "margin": 0.0 if b.vote == "tie" else 1.0,
                "battle_id": b.id,
                "chosen_contender": b.contender_a if a_wins else b.contender_b,
                "rejected_contender": b.contender_b if a_wins else b.contender_a,
                "chosen_lineage": b.lineage[winner],
                "rejected_lineage": b.lineage[loser],
                "vote": b.vote,
                "annotator": b.annotator,
                "prompt_source": b.prompt_source,
            }
        )
    counts = {
        "battles": len(all_battles),
        "votes": votes,
        "annotators": len({b.annotator for b in all_battles}),
        "pairs": len(records),
        "tie_pairs": sum(1 for r in records if r["vote"] == "tie"),
        **left_out,
    }
    return records, counts


def _lineage(records: list[dict]) -> dict[str, list[dict]]:
    """Contender label -> the distinct lineages of its replies in the pairs (a label may outlive a retrained model)."""
    found: dict[str, dict[str, dict]] = {}
    for r in records:
        for side in ("chosen", "rejected"):
            lineage = r[f"{side}_lineage"]
            found.setdefault(r[f"{side}_contender"], {})[json.dumps(lineage, sort_keys=True)] = lineage
    return {label: [by_text[t] for t in sorted(by_text)] for label, by_text in sorted(found.items())}


def export_preference_pairs(store: Store, root: Path, include_ties: bool = False) -> SnapshotInfo:
    """Arena votes as a snapshot folder of preference pairs under ``root``, registered in ``snapshots``.

    The files are those of :mod:`annotations.snapshot` (``preference.parquet``,
    ``preference_conversational.parquet``, ``manifest.json``, read-only), so every reader of
    snapshots (``rlhf.preference_data.read_pairs``, ``load_snapshot``) reads it. A vote for A
    makes chosen = A's reply, rejected = B's; a vote for B the reverse. Both-bad votes never make
    a pair; ties make none unless ``include_ties`` (then A-then-B with margin 0, and a ``margin``
    column: 1 for a win). Battles of several turns make none (see the module docstring). The
    manifest counts every vote and what was left out, and lists the lineage of each contender
    whose replies are in the pairs. The same battles and settings give the same content hash,
    and the existing snapshot is returned (``reused``). StoreError when no battle makes a pair.
    """
    all_battles = battles(store)
    records, counts = _pairs(all_battles, include_ties)
    if not records:
        raise StoreError(
            f"the arena's {counts['battles']} battles make no preference pairs (both-bad votes, "
            f"{'' if include_ties else 'ties, '}and battles of several turns make none); nothing to export"
        )
    settings = {"source": "arena", "include_ties": include_ties, "multi_turn": "left out"}
    lineage = _lineage(records)
    # The counts are in the hash: a new both-bad vote changes no pair but does change what the
    # manifest says about the votes, so it makes a new snapshot rather than reusing a stale one.
    content_hash = hashlib.sha256(
        json.dumps({"settings": settings, "rows": records, "counts": counts}, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()
    reused = _existing(store.query(_REGISTERED, [content_hash]), content_hash)
    if reused:
        return reused

    created = datetime.now(UTC)
    snap_id = f"arena-{created:%Y%m%d-%H%M%S}-{content_hash[:8]}"
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{snap_id}-{os.getpid()}-{threading.get_ident()}"  # two exports at once write apart
    folder = root / snap_id
    _remove(tmp)
    tmp.mkdir()
    try:
        manifest = _write_files(tmp, records, include_ties, settings, counts, lineage, snap_id, created, content_hash)
        # Under the write lock: a second export of the same votes running beside this one
        # either finds this snapshot registered, or this one finds its.
        with store.transaction() as cur:
            reused = _existing(cur.execute(_REGISTERED, [content_hash]).fetchall(), content_hash)
            if reused:
                _remove(tmp)
                return reused
            tmp.rename(folder)
            cur.execute(
                "INSERT INTO snapshots (id, created, filter, pair_strategy, content_hash, counts, folder) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [snap_id, created, json.dumps(settings), PAIR_STRATEGY, content_hash, json.dumps(counts), str(folder.resolve())],
            )
    except BaseException:
        _remove(tmp)
        _remove(folder)
        raise
    return SnapshotInfo(snap_id, folder.resolve(), content_hash, counts, manifest)


_REGISTERED = "SELECT id, folder FROM snapshots WHERE content_hash = ? ORDER BY created"


def _existing(registered: list[tuple], content_hash: str) -> SnapshotInfo | None:
    """The first of the ``registered`` (id, folder) rows whose folder is still there, as a reused snapshot."""
    for snap_id, folder in registered:
        if (Path(folder) / MANIFEST).is_file():
            manifest = json.loads((Path(folder) / MANIFEST).read_text())
            return SnapshotInfo(snap_id, Path(folder), content_hash, manifest["counts"], manifest, reused=True)
    return None


def _write_files(
    tmp: Path,
    records: list[dict],
    include_ties: bool,
    settings: dict,
    counts: dict,
    lineage: dict,
    snap_id: str,
    created: datetime,
    content_hash: str,
) -> dict:
    """Write the two parquet files and the manifest into ``tmp`` and make them read-only; returns the manifest."""
    columns = ["prompt", "chosen", "rejected"] + (["margin"] if include_ties else [])
    meta = ["battle_id", "chosen_contender", "rejected_contender", "vote", "annotator", "prompt_source"]
    plain = {c: [r[c] for r in records] for c in columns + meta}
    pq.write_table(pa.table(plain), tmp / PLAIN)
    conv = dict(plain)
    conv["prompt"] = [[{"role": "user", "content": r["prompt"]}] for r in records]
    conv["chosen"] = [[{"role": "assistant", "content": r["chosen"]}] for r in records]
    conv["rejected"] = [[{"role": "assistant", "content": r["rejected"]}] for r in records]
    pq.write_table(pa.table(conv), tmp / CONVERSATIONAL)
    manifest = {
        "id": snap_id,
        "created": created.isoformat(timespec="seconds"),
        "content_hash": content_hash,
        "source": "arena",
        "filter": settings,
        "pair_strategy": PAIR_STRATEGY,
        "include_ties": include_ties,
        "margin": include_ties,
        "multi_turn": "battles of several turns are left out (a vote judges the whole conversation)",
        "counts": counts,
        "lineage": lineage,
        "files": {PLAIN: _sha256(tmp / PLAIN), CONVERSATIONAL: _sha256(tmp / CONVERSATIONAL)},
        "formats": {PLAIN: "trl standard preference", CONVERSATIONAL: "trl conversational preference"},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    _freeze(tmp)
    return manifest
