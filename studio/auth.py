"""The first admin account of a new studio.

:func:`ensure_admin` creates it: its password comes from ``STUDIO_ADMIN_PASSWORD`` or is random
and printed once; there is no default password. Logins are checked by
:class:`studio.login_guard.LoginGuard`, roles by :mod:`studio.permissions`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from annotations.accounts import add_annotator, annotators
from annotations.store import Store

FIRST_ADMIN = "admin"


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
