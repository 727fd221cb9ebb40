"""The store's schema as numbered forward migrations.

Opening a file runs every migration newer than the file's ``schema_version``, each in its own
transaction, so an older file is upgraded in place and a failed upgrade changes nothing.
Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

from typing import NamedTuple


class Migration(NamedTuple):
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "projects and prompts",
        (
            "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
            "CREATE SEQUENCE project_id_seq START 1",
            """CREATE TABLE projects (
                id BIGINT PRIMARY KEY DEFAULT nextval('project_id_seq'),
                name VARCHAR NOT NULL UNIQUE,
                guidelines VARCHAR NOT NULL DEFAULT '',
                k INTEGER NOT NULL DEFAULT 2 CHECK (k >= 2),
                min_submitted INTEGER NOT NULL DEFAULT 1 CHECK (min_submitted >= 1),
                mode VARCHAR NOT NULL DEFAULT 'ranking' CHECK (mode IN ('ranking', 'pairwise')),
                created TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
            )""",
            "CREATE SEQUENCE prompt_id_seq START 1",
            """CREATE TABLE prompts (
                id BIGINT PRIMARY KEY DEFAULT nextval('prompt_id_seq'),
                project_id BIGINT NOT NULL REFERENCES projects(id),
                text VARCHAR NOT NULL,
                messages JSON,
                source VARCHAR NOT NULL DEFAULT '',
                category VARCHAR NOT NULL DEFAULT '',
                metadata JSON,
                created TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
            )""",
            "CREATE INDEX prompts_project ON prompts(project_id)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
