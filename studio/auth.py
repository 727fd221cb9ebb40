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

import gradio as gr

from annotations.accounts import Annotator, add_annotator, annotators, authenticate, get_annotator
from annotations.store import Store, StoreError

FIRST_ADMIN = "admin"


def make_auth(store: Store) -> Callable[[str, str], bool]:
    """The callable Gradio asks at login."""

    def check(username: str, password: str) -> bool:
        return authenticate(store, username, password) is not None

    return check


def current_user(store: Store, request: gr.Request | None) -> Annotator:
    """The logged-in, active account behind a request; gr.Error when there is none."""
    name = getattr(request, "username", None) if request is not None else None
    if not name:
        raise gr.Error("Log in first.")
    try:
        user = get_annotator(store, name)
    except StoreError as exc:
        raise gr.Error("Your account no longer exists; ask an admin.") from exc
    if not user.active:
        raise gr.Error("Your account is deactivated; ask an admin.")
    return user


def require_admin(store: Store, request: gr.Request | None) -> Annotator:
    """The admin behind a request; refuses everyone else on the server."""
    user = current_user(store, request)
    if not user.is_admin:
        raise gr.Error("Only admins can do this.")
    return user


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
