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
    Migration(
        2,
        "replies, annotators, rankings, snapshots, runs",
        (
            "CREATE SEQUENCE reply_id_seq START 1",
            """CREATE TABLE replies (
                id BIGINT PRIMARY KEY DEFAULT nextval('reply_id_seq'),
                prompt_id BIGINT NOT NULL REFERENCES prompts(id),
                text VARCHAR NOT NULL,
                model VARCHAR NOT NULL DEFAULT '',
                checkpoint VARCHAR NOT NULL DEFAULT '',
                sampling JSON,
                created TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
            )""",
            "CREATE INDEX replies_prompt ON replies(prompt_id)",
            "CREATE SEQUENCE annotator_id_seq START 1",
            """CREATE TABLE annotators (
                id BIGINT PRIMARY KEY DEFAULT nextval('annotator_id_seq'),
                name VARCHAR NOT NULL UNIQUE,
                role VARCHAR NOT NULL DEFAULT 'annotator' CHECK (role IN ('annotator', 'admin', 'import')),
                password_hash VARCHAR,
                active BOOLEAN NOT NULL DEFAULT true,
                created TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
            )""",
            "CREATE SEQUENCE ranking_id_seq START 1",
            # One row per prompt and annotator. No unique index on (prompt_id, annotator_id):
            # DuckDB checks unique indexes eagerly inside a transaction, so a draft that turns
            # into a submission would trip it; the store enforces the rule under its lock.
            """CREATE TABLE rankings (
                id BIGINT PRIMARY KEY DEFAULT nextval('ranking_id_seq'),
                prompt_id BIGINT NOT NULL REFERENCES prompts(id),
                annotator_id BIGINT NOT NULL REFERENCES annotators(id),
                status VARCHAR NOT NULL CHECK (status IN ('draft', 'submitted', 'skipped')),
                ranks JSON,  -- {"<reply id>": rank}; 1 is best, equal ranks are ties
                rationale VARCHAR NOT NULL DEFAULT '',
                skip_reason VARCHAR NOT NULL DEFAULT '',
                both_bad BOOLEAN NOT NULL DEFAULT false,
                seconds_spent DOUBLE,
                idempotency_key VARCHAR,
                created TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
                updated TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
                submitted TIMESTAMPTZ
            )""",
            "CREATE INDEX rankings_prompt ON rankings(prompt_id)",
            "CREATE INDEX rankings_annotator ON rankings(annotator_id)",
            "CREATE INDEX rankings_key ON rankings(idempotency_key)",
            """CREATE TABLE snapshots (
                id VARCHAR PRIMARY KEY,
                created TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
                filter JSON NOT NULL,
                pair_strategy VARCHAR NOT NULL,
                content_hash VARCHAR NOT NULL,
                counts JSON NOT NULL,
                folder VARCHAR NOT NULL
            )""",
            """CREATE TABLE runs (
                id VARCHAR PRIMARY KEY,
                kind VARCHAR NOT NULL,
                config JSON NOT NULL,
                status VARCHAR NOT NULL DEFAULT 'created',
                parent_run VARCHAR,
                snapshot_id VARCHAR,
                checkpoint VARCHAR,
                metrics JSON,
                created TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
                updated TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
            )""",
        ),
    ),
    Migration(
        3,
        "prompt templates of the prompt lab",
        (
            """CREATE TABLE prompt_templates (
                name VARCHAR PRIMARY KEY,
                body JSON NOT NULL,
                updated TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
            )""",
        ),
    ),
    Migration(
        4,
        "login attempts (lockout with back-off), background jobs with their outcome, project members",
        (
            # Every login attempt, by account name and client address: the lockout survives a
            # restart, and the admin console can show who is being guessed at.
            """CREATE TABLE login_attempts (
                name VARCHAR NOT NULL,
                address VARCHAR NOT NULL,
                ok BOOLEAN NOT NULL,
                attempted TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
            )""",
            "CREATE INDEX login_attempts_name ON login_attempts(name)",
            "CREATE INDEX login_attempts_address ON login_attempts(address)",
            # Candidate-generation jobs (and other background work of the studio): a job that
            # fails, or whose studio died under it, keeps a row with the reason.
            "CREATE SEQUENCE job_id_seq START 1",
            """CREATE TABLE jobs (
                id BIGINT PRIMARY KEY DEFAULT nextval('job_id_seq'),
                kind VARCHAR NOT NULL,
                project_id BIGINT,
                owner VARCHAR NOT NULL DEFAULT '',
                state VARCHAR NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'lost')),
                detail JSON,
                error VARCHAR NOT NULL DEFAULT '',
                pid INTEGER,
                started TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
                ended TIMESTAMPTZ
            )""",
            # Who may rank a project: none listed = every annotator (as before); admins always.
            """CREATE TABLE project_members (
                project_id BIGINT NOT NULL REFERENCES projects(id),
                annotator_id BIGINT NOT NULL REFERENCES annotators(id),
                PRIMARY KEY (project_id, annotator_id)
            )""",
        ),
    ),
    Migration(
        5,
        "arena battles and settings",
        (
            "CREATE SEQUENCE arena_battle_id_seq START 1",
            # One row per voted battle; a battle is stored only with its vote and never changed.
            # battle_key is the server-made idempotency key of the battle (a double click or a
            # retried request stores one row). A unique index is safe here, unlike on rankings
            # (see migration 2): rows are only ever inserted, never updated or deleted and
            # re-inserted in one transaction, which is what trips DuckDB's eager index checks.
            # The store also looks the key up under its lock first, to answer with a clear message.
            """CREATE TABLE arena_battles (
                id BIGINT PRIMARY KEY DEFAULT nextval('arena_battle_id_seq'),
                battle_key VARCHAR NOT NULL,
                annotator_id BIGINT NOT NULL REFERENCES annotators(id),
                contender_a VARCHAR NOT NULL,
                contender_b VARCHAR NOT NULL CHECK (contender_b <> contender_a),
                conversation_a JSON NOT NULL,  -- [{"role", "content"}, ...] as side A's user saw it
                conversation_b JSON NOT NULL,
                prompt VARCHAR NOT NULL,  -- the first user message, for listing
                prompt_source VARCHAR NOT NULL,  -- 'project:NAME' or 'typed'
                vote VARCHAR NOT NULL CHECK (vote IN ('a', 'b', 'tie', 'both_bad')),
                sampling JSON NOT NULL,  -- {"a": {...}, "b": {...}}
                lineage JSON NOT NULL,  -- {"a": {...}, "b": {...}}
                seconds DOUBLE,
                created TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
            )""",
            "CREATE UNIQUE INDEX arena_battles_key ON arena_battles(battle_key)",
            "CREATE INDEX arena_battles_annotator ON arena_battles(annotator_id)",
            # The admin's arena choices as one JSON document; id is always 1 (one row at most).
            """CREATE TABLE arena_settings (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                body JSON NOT NULL,
                updated TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
            )""",
        ),
    ),
    Migration(
        6,
        "active learning: a project's queue order and its prompts' reward-model uncertainty",
        (
            # Columns, not side tables: the queue reads them in the statement that picks the next
            # prompt. DuckDB cannot add a column with NOT NULL or CHECK to a table that others
            # reference (prompts and projects both are), so annotations.queue validates the values
            # (QUEUE_ORDERS) and reads a NULL order as 'default'.
            "ALTER TABLE projects ADD COLUMN queue_order VARCHAR DEFAULT 'default'",  # 'default' | 'uncertain first'
            "ALTER TABLE projects ADD COLUMN uncertainty_model VARCHAR",  # the reward model the figures came from
            "ALTER TABLE prompts ADD COLUMN uncertainty DOUBLE",  # NULL: not scored
            "ALTER TABLE prompts ADD COLUMN uncertainty_scored TIMESTAMPTZ",
        ),
    ),
    Migration(
        7,
        "thumbs up/down on replies shown in the chat, the prompt lab and the arena",
        (
            "CREATE SEQUENCE feedback_id_seq START 1",
            # One row per account and reply: reply_key is made by the server when it shows the
            # reply (annotations.feedback). The reply, its prompt, model and settings are copied
            # here because chat and arena replies live nowhere else. A second click updates
            # verdict and updated in place; clearing deletes the row. The unique index is safe:
            # DuckDB 2 updates non-indexed columns in place, and a row is never deleted and
            # re-inserted in one transaction.
            """CREATE TABLE feedback (
                id BIGINT PRIMARY KEY DEFAULT nextval('feedback_id_seq'),
                annotator_id BIGINT NOT NULL REFERENCES annotators(id),
                reply_key VARCHAR NOT NULL,
                surface VARCHAR NOT NULL CHECK (surface IN ('chat', 'lab', 'arena')),
                prompt VARCHAR NOT NULL,  -- what the reply answered, as preference.parquet's prompt
                reply VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                settings JSON NOT NULL,  -- sampling settings and what else shaped the reply
                verdict SMALLINT NOT NULL CHECK (verdict IN (1, -1)),
                created TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
                updated TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
            )""",
            "CREATE UNIQUE INDEX feedback_user_reply ON feedback(annotator_id, reply_key)",
            "CREATE INDEX feedback_model ON feedback(model)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
