"""Annotator accounts: names, roles, scrypt password hashes, activation.

Roles: ``admin`` (manages projects and people), ``annotator`` (ranks), and ``import`` (the
pseudo-annotator that owns rankings brought in from preference files; it cannot log in).

    add_annotator(store, "ana", "s3cret-pass", role="annotator")
    who = authenticate(store, "ana", "s3cret-pass")     # Annotator or None
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

import duckdb

from annotations.store import Store, StoreError

ROLES = ("annotator", "admin", "import")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
# scrypt (RFC 7914) at the cost OWASP suggests for interactive logins: ~50 ms, 16 MiB.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str
    role: str
    active: bool

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    enc = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${enc(salt).decode()}${enc(digest).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise StoreError(f"a password needs at least {MIN_PASSWORD} characters")


def add_annotator(store: Store, name: str, password: str | None, role: str = "annotator") -> int:
    """Create an account; ``import`` accounts have no password and cannot log in."""
    name = name.strip()
    if not NAME_RE.match(name):
        raise StoreError(f"annotator name {name!r} is not allowed: letters, digits, '.', '_', '@', '-' (at most 64)")
    if role not in ROLES:
        raise StoreError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if role == "import":
        hashed = None
    else:
        _check_password(password or "")
        hashed = hash_password(password or "")
    with store.transaction() as cur:
        if cur.execute("SELECT 1 FROM annotators WHERE name = ?", [name]).fetchone():
            raise StoreError(f"an annotator called {name!r} already exists")
        return cur.execute(
            "INSERT INTO annotators (name, role, password_hash) VALUES (?, ?, ?) RETURNING id", [name, role, hashed]
        ).fetchone()[0]


def import_annotator(store: Store, name: str = "import") -> int:
    """The id of the pseudo-annotator owning imported preferences (created on first use)."""
    with store.transaction() as cur:
        return import_annotator_in(cur, name)


def import_annotator_in(cur: duckdb.DuckDBPyConnection, name: str = "import") -> int:
    """:func:`import_annotator` inside an open transaction: an import that fails leaves no account behind."""
    name = name.strip()
    if not NAME_RE.match(name):
        raise StoreError(f"annotator name {name!r} is not allowed: letters, digits, '.', '_', '@', '-' (at most 64)")
    row = cur.execute("SELECT id, role FROM annotators WHERE name = ?", [name]).fetchone()
    if row:
        if row[1] != "import":
            raise StoreError(f"{name!r} is a real annotator; choose another name for imported rankings")
        return row[0]
    return cur.execute("INSERT INTO annotators (name, role, password_hash) VALUES (?, 'import', NULL) RETURNING id", [name]).fetchone()[0]


def annotators(store: Store, include_import: bool = False) -> list[Annotator]:
    rows = store.query("SELECT id, name, role, active FROM annotators ORDER BY id")
    return [Annotator(*r) for r in rows if include_import or r[2] != "import"]


def get_annotator(store: Store, name_or_id: str | int) -> Annotator:
    column = "id" if isinstance(name_or_id, int) else "name"
    # Committed state, without waiting for the write lock: every request asks this.
    rows = store.read(f"SELECT id, name, role, active FROM annotators WHERE {column} = ?", [name_or_id])
    if not rows:
        raise StoreError(f"no annotator {name_or_id!r}")
    return Annotator(*rows[0])


def authenticate(store: Store, name: str, password: str) -> Annotator | None:
    """The active account with this name and password, else None (the same for every failure)."""
    rows = store.read("SELECT id, name, role, active, password_hash FROM annotators WHERE name = ?", [name])
    if not rows:
        verify_password(password, hash_password("timing-equaliser"))  # same cost as a real check
        return None
    aid, aname, role, active, hashed = rows[0]
    if not verify_password(password, hashed) or not active or role == "import":
        return None
    return Annotator(aid, aname, role, active)


def set_active(store: Store, name: str, active: bool) -> None:
    with store.transaction() as cur:
        row = cur.execute("SELECT role FROM annotators WHERE name = ?", [name]).fetchone()
        if not row:
            raise StoreError(f"no annotator {name!r}")
        if not active and row[0] == "admin":
            admins = cur.execute("SELECT count(*) FROM annotators WHERE role = 'admin' AND active").fetchone()[0]
            if admins <= 1:
                raise StoreError("this is the last active admin; make another admin first")
        cur.execute("UPDATE annotators SET active = ? WHERE name = ?", [active, name])


def reset_password(store: Store, name: str, password: str) -> None:
    _check_password(password)
    with store.transaction() as cur:
        row = cur.execute("SELECT role FROM annotators WHERE name = ?", [name]).fetchone()
        if not row:
            raise StoreError(f"no annotator {name!r}")
        if row[0] == "import":
            raise StoreError(f"{name!r} holds imported rankings and cannot log in")
        cur.execute("UPDATE annotators SET password_hash = ? WHERE name = ?", [hash_password(password), name])
