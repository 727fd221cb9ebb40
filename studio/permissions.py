"""Who may do what in the studio: the one place every handler asks.

Every event handler of every screen starts with :func:`require` (or :func:`current_user` for
what any logged-in account may do), so an annotator who calls an endpoint directly, with
``gradio_client`` or a hand-made HTTP request, is refused on the server whatever the page shows.
The README's permission table is :func:`markdown_table` of :data:`RULES` (a test keeps them equal).

Paths are the second boundary: an annotator never names a file or folder on the server, and an
admin's paths must resolve inside the data folders (:func:`data_path`): ``$STUDIO_HOME/data``,
the studio's ``snapshots/`` and ``runs/`` beside its database, and any folder listed in
``STUDIO_DATA_DIRS`` (separated by ``:``).

    user = require(ctx.store, request, TRAIN)          # an Annotator, or gr.Error for the rest
    path = data_path(ctx.data_roots, "hh/train.jsonl")  # inside a data folder, or gr.Error
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from annotations.accounts import Annotator, get_annotator
from annotations.store import Store, StoreError
from studio.render import UserError

ANNOTATOR, ADMIN = "annotator", "admin"


@dataclass(frozen=True)
class Rule:
    action: str
    what: str
    roles: frozenset[str]


RANK = "rank"
CHAT = "chat"
ARENA = "arena"
FEEDBACK = "feedback"
READ_RESULTS = "read_results"
WRITE_CONTENT = "write_content"
NAME_PATHS = "name_paths"
TRAIN = "train"
MANAGE_ACCOUNTS = "manage_accounts"

RULES: tuple[Rule, ...] = (
    Rule(RANK, "rank, skip and draft the prompts the queue serves them; undo their last submission", frozenset({ANNOTATOR, ADMIN})),
    Rule(
        CHAT,
        "chat with the registered models (only a reply they give a thumb to is stored)",
        frozenset({ANNOTATOR, ADMIN}),
    ),
    Rule(
        ARENA, "battle in the arena: two anonymous models, one blind vote per battle, names shown after it", frozenset({ANNOTATOR, ADMIN})
    ),
    Rule(
        FEEDBACK,
        "thumbs up/down on replies shown to them, stored with the reply, model and settings; they see only their own",
        frozenset({ANNOTATOR, ADMIN}),
    ),
    Rule(
        READ_RESULTS,
        "read other annotators' rankings, drafts, results; the dashboard and agreement; arena votes and the leaderboard; "
        "thumbs counts per model",
        frozenset({ADMIN}),
    ),
    Rule(
        WRITE_CONTENT,
        "create or change projects, prompts, replies, templates; import; send to the queue; snapshots (with KTO data)",
        frozenset({ADMIN}),
    ),
    Rule(NAME_PATHS, "name a file or folder on the server (data files, pools, configs): inside the data folders only", frozenset({ADMIN})),
    Rule(TRAIN, "use the prompt lab; train, evaluate and register models; generate candidates", frozenset({ADMIN})),
    Rule(MANAGE_ACCOUNTS, "add and deactivate accounts, reset passwords, see failed logins", frozenset({ADMIN})),
)
_BY_ACTION = {r.action: r for r in RULES}


def allowed(user: Annotator, action: str) -> bool:
    """May this (active) account do this? Unknown actions are refused."""
    rule = _BY_ACTION.get(action)
    return bool(rule and user.active and user.role in rule.roles)


def current_user(store: Store, request: gr.Request | None) -> Annotator:
    """The logged-in, active account behind a request; a gr.Error for everyone else.

    Read without the store's write lock, so a long import never holds up every click.
    """
    name = getattr(request, "username", None) if request is not None else None
    if not name:
        raise UserError("Log in first.")
    try:
        user = get_annotator(store, name)
    except StoreError as exc:
        raise UserError("Your account no longer exists; ask an admin.") from exc
    if not user.active or user.role == "import":
        raise UserError("Your account is deactivated; ask an admin.")
    return user


def require(store: Store, request: gr.Request | None, action: str) -> Annotator:
    """The account behind a request if it may do ``action``; refuses everyone else on the server."""
    user = current_user(store, request)
    if not allowed(user, action):
        raise UserError(f"Not allowed: only {' and '.join(sorted(_BY_ACTION[action].roles))}s may {_BY_ACTION[action].what}.")
    return user


def may(store: Store, request: gr.Request | None, action: str) -> Annotator | None:
    """The account if it may do ``action``, else None: for page-load handlers, which every
    logged-in user triggers, and which must give those without the right nothing, silently."""
    try:
        return require(store, request, action)
    except gr.Error:
        return None


def require_admin(store: Store, request: gr.Request | None) -> Annotator:
    """Shorthand for actions only admins have (accounts, content, training)."""
    user = current_user(store, request)
    if not user.is_admin:
        raise UserError("Only admins can do this.")
    return user


def markdown_table() -> str:
    """The permission table as it appears in the README."""
    lines = ["| action | annotator | admin |", "|---|---|---|"]
    for rule in RULES:
        cells = ["yes" if role in rule.roles else "no" for role in (ANNOTATOR, ADMIN)]
        lines.append(f"| {rule.what} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


# -- paths ----------------------------------------------------------------------------------------
def default_data_roots(home: Path, beside_db: Path) -> list[Path]:
    """``$STUDIO_HOME/data``, the studio's snapshots and runs, and ``STUDIO_DATA_DIRS``."""
    roots = [home / "data", beside_db / "snapshots", beside_db / "runs"]
    roots += [Path(p) for p in os.environ.get("STUDIO_DATA_DIRS", "").split(os.pathsep) if p.strip()]
    return [r.expanduser().resolve() for r in roots]


def data_path(roots: list[Path], text: str | os.PathLike | None) -> Path:
    """An admin-typed path, resolved (links followed) and checked to lie inside a data folder.

    A relative path is taken inside the first data folder. Anything outside every data folder
    is refused with a message naming the folders, so a typo or ``../../etc/passwd`` reads nothing.
    """
    raw = str(text or "").strip()
    if not raw:
        raise UserError("Name a file inside a data folder.")
    if "\x00" in raw:
        raise UserError("A path cannot contain a NUL character.")
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    resolved = candidate.resolve()
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    folders = ", ".join(str(r) for r in roots)
    raise UserError(f"{raw} is outside the data folders; put the file in one of: {folders} (or add a folder to STUDIO_DATA_DIRS).")
