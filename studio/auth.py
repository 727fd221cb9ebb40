"""Logins and roles for the studio: Gradio's auth backed by the store's accounts.

Every admin handler calls :func:`require_admin` first, so an annotator who reaches an admin
endpoint (for example through ``gradio_client``) is refused on the server, whatever the page
shows. :func:`ensure_admin` creates the first admin: its password comes from
``STUDIO_ADMIN_PASSWORD`` or is random and printed once; there is no default password.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from annotations.accounts import add_annotator, annotators, authenticate
from annotations.store import Store

FIRST_ADMIN = "admin"


def make_auth(store: Store) -> Callable[[str, str], bool]:
    """The callable Gradio asks at login."""

    def check(username: str, password: str) -> bool:
        return authenticate(store, username, password) is not None

    return check


def ensure_admin(store: Store, say: Callable[[str], None] = print) -> str | None:
    """Create the first admin if the store has none; returns its password if one was made up."""
    if any(a.role == "admin" for a in annotators(store)):
        return None
    password = os.environ.get("STUDIO_ADMIN_PASSWORD")
    made_up = None
    if not password:
        password = made_up = secrets.token_urlsafe(12)
    add_annotator(store, FIRST_ADMIN, password, role="admin")
    if made_up:
        say(f"created the first admin: user '{FIRST_ADMIN}', password '{made_up}' (shown only now; change it in Admin > Annotators)")
    else:
        say(f"created the first admin: user '{FIRST_ADMIN}', password from STUDIO_ADMIN_PASSWORD")
    return made_up
