"""The database schema, as ordered migrations written once for every SQL dialect.

Each migration is `(version, name, statements)`. The statements are portable SQL with a few
dialect tokens in braces (`{serial_pk}`, `{float}`, `{bool}`) that `render` replaces with the
dialect's spelling, so SQLite and PostgreSQL share one schema instead of two that drift apart.
Applied versions are recorded in `schema_migrations`; a migration, once released, is never
edited — a change is a new migration appended to `MIGRATIONS`.

Conventions: ids are uuid4 hex strings made in Python; times are POSIX seconds (double);
JSON is stored as text; usernames are stored lower-case. The invariants the daemon relies on
live here as indexes, not in application code: one live runtime per (user, role), one live
grant per (owner, project, user), unique usernames, emails (case-insensitively) and token hashes.
Unique indexes are named explicitly: storage turns their names into `Conflict` messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple


class SchemaMigration(NamedTuple):
    """One step of the schema: applied in one transaction, recorded by its version."""

    version: int
    name: str
    statements: list[str]


SQLITE_TOKENS: Mapping[str, str] = {
    # INTEGER PRIMARY KEY is the rowid; AUTOINCREMENT keeps a deleted seq from being reused.
    "serial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "float": "REAL",
    # SQLite has no boolean type: TRUE/FALSE are 1/0 and the storage converts on read.
    "bool": "INTEGER",
}

POSTGRES_TOKENS: Mapping[str, str] = {
    "serial_pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "float": "DOUBLE PRECISION",
    "bool": "BOOLEAN",
}

_TOKEN = re.compile(r"\{(\w+)\}")


def render(statement: str, tokens: Mapping[str, str]) -> str:
    """Replace the dialect tokens of `statement`; an unknown token is a programming error."""

    def replace(match: re.Match[str]) -> str:
        try:
            return tokens[match.group(1)]
        except KeyError:
            raise KeyError(f"unknown schema token {match.group(0)} in: {statement}") from None

    return _TOKEN.sub(replace, statement)


# Created outside the numbered migrations: it is what records them.
SCHEMA_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at {float} NOT NULL
)"""

_INITIAL = [
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        email TEXT,
        name TEXT,
        avatar_url TEXT,
        plan TEXT NOT NULL DEFAULT 'free',
        is_admin {bool} NOT NULL DEFAULT FALSE,
        disabled {bool} NOT NULL DEFAULT FALSE,
        created_at {float} NOT NULL
    )""",
    "CREATE UNIQUE INDEX users_username ON users (username)",
    "CREATE UNIQUE INDEX users_email ON users (lower(email)) WHERE email IS NOT NULL",
    """
    CREATE TABLE identities (
        provider TEXT NOT NULL,
        provider_user_id TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        email TEXT,
        email_verified {bool} NOT NULL DEFAULT FALSE,
        created_at {float} NOT NULL,
        PRIMARY KEY (provider, provider_user_id)
    )""",
    "CREATE INDEX identities_user ON identities (user_id)",
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL,
        created_at {float} NOT NULL,
        expires_at {float} NOT NULL,
        last_seen_at {float} NOT NULL,
        revoked_at {float},
        user_agent TEXT
    )""",
    "CREATE UNIQUE INDEX sessions_token_hash ON sessions (token_hash)",
    "CREATE INDEX sessions_user ON sessions (user_id)",
    "CREATE INDEX sessions_expires ON sessions (expires_at)",
    """
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        scopes TEXT NOT NULL DEFAULT '',
        created_at {float} NOT NULL,
        expires_at {float},
        revoked_at {float},
        last_used_at {float}
    )""",
    "CREATE UNIQUE INDEX api_tokens_token_hash ON api_tokens (token_hash)",
    "CREATE INDEX api_tokens_user ON api_tokens (user_id)",
    """
    CREATE TABLE login_links (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL,
        created_at {float} NOT NULL,
        expires_at {float} NOT NULL,
        used_at {float}
    )""",
    "CREATE UNIQUE INDEX login_links_token_hash ON login_links (token_hash)",
    "CREATE INDEX login_links_expires ON login_links (expires_at)",
    """
    CREATE TABLE invites (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        project TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('editor', 'viewer')),
        token_hash TEXT NOT NULL,
        created_at {float} NOT NULL,
        expires_at {float},
        max_uses INTEGER NOT NULL CHECK (max_uses >= 1),
        uses INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0 AND uses <= max_uses),
        revoked_at {float}
    )""",
    "CREATE UNIQUE INDEX invites_token_hash ON invites (token_hash)",
    "CREATE INDEX invites_owner ON invites (owner_id)",
    """
    CREATE TABLE grants (
        id TEXT PRIMARY KEY,
        owner_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        project TEXT NOT NULL,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('editor', 'viewer')),
        created_at {float} NOT NULL,
        invite_id TEXT REFERENCES invites (id) ON DELETE SET NULL,
        revoked_at {float}
    )""",
    # Accepting a second invite to the same project updates the live grant (an upsert on this
    # index) instead of stacking grants.
    """
    CREATE UNIQUE INDEX grants_one_live ON grants (owner_id, project, user_id)
        WHERE revoked_at IS NULL""",
    "CREATE INDEX grants_user ON grants (user_id)",
    """
    CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        step TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('open', 'done', 'failed', 'rolled_back')),
        targets TEXT NOT NULL DEFAULT '{}',
        error TEXT,
        created_at {float} NOT NULL,
        updated_at {float} NOT NULL
    )""",
    "CREATE INDEX operations_user ON operations (user_id)",
    # Reconciliation at start-up reads the open operations: keep that cheap as the log grows.
    "CREATE INDEX operations_open ON operations (user_id) WHERE state = 'open'",
    """
    CREATE TABLE runtimes (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('editor', 'runtime')),
        backend TEXT NOT NULL,
        host TEXT NOT NULL,
        handle TEXT,
        address TEXT,
        state TEXT NOT NULL CHECK (state IN ('starting', 'running', 'sleeping', 'waking',
                                             'moving', 'stopped', 'failed')),
        limits TEXT NOT NULL DEFAULT '{}',
        reason TEXT,
        restarts INTEGER NOT NULL DEFAULT 0,
        oom_kills INTEGER NOT NULL DEFAULT 0,
        operation_id TEXT REFERENCES operations (id) ON DELETE SET NULL,
        created_at {float} NOT NULL,
        updated_at {float} NOT NULL
    )""",
    # The invariant of DESIGN §8: at most one live editor and one live runtime per user, even
    # when two daemons (or two operations) race to create one.
    """
    CREATE UNIQUE INDEX runtimes_one_live ON runtimes (user_id, role)
        WHERE state NOT IN ('stopped', 'failed')""",
    "CREATE INDEX runtimes_user ON runtimes (user_id)",
    """
    CREATE TABLE snapshots (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        runtime_id TEXT REFERENCES runtimes (id) ON DELETE SET NULL,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        sha256 TEXT,
        depends_on TEXT NOT NULL DEFAULT '{}',
        created_at {float} NOT NULL
    )""",
    "CREATE INDEX snapshots_user ON snapshots (user_id)",
    """
    CREATE TABLE migrations (
        id TEXT PRIMARY KEY,
        runtime_id TEXT NOT NULL REFERENCES runtimes (id) ON DELETE CASCADE,
        user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        from_host TEXT NOT NULL,
        to_host TEXT NOT NULL,
        strategy TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at {float} NOT NULL,
        completed_at {float},
        checkpoint_ms BIGINT,
        transfer_ms BIGINT,
        restore_ms BIGINT,
        error TEXT
    )""",
    "CREATE INDEX migrations_runtime ON migrations (runtime_id)",
    # No foreign key on user_id: the event log must accept every event, including ones about
    # users that are gone.
    """
    CREATE TABLE events (
        seq {serial_pk},
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        user_id TEXT,
        data TEXT NOT NULL DEFAULT '{}',
        created_at {float} NOT NULL
    )""",
    "CREATE INDEX events_type ON events (type, seq)",
    "CREATE INDEX events_user ON events (user_id, seq)",
    """
    CREATE TABLE revocation_epoch (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL
    )""",
    "INSERT INTO revocation_epoch (id, epoch) VALUES (1, 0)",
]

# Checkpoints (issue 10): a snapshot is `named` (kept until deleted, names unique per user),
# `sleep` (the image of a sleeping runtime, kept until it is woken) or `fork` (the live
# checkpoint a fork is restored from). A row is written only once its archive is complete and
# fsynced: a row is what makes an archive authoritative.
_SNAPSHOT_KINDS = [
    "ALTER TABLE snapshots ADD COLUMN kind TEXT NOT NULL DEFAULT 'named'",
    """
    CREATE UNIQUE INDEX snapshots_named_unique ON snapshots (user_id, name)
        WHERE kind = 'named'""",
]

# Per-user host accounts (issue 9): the process backend runs each user's workloads as a uid/gid
# of their own. No foreign key to users: a deleted user's uid stays taken (files they left
# behind must never be handed to the next user), and uids are never reused.
_WORKLOAD_ACCOUNTS = [
    """
    CREATE TABLE workload_accounts (
        user_id TEXT PRIMARY KEY,
        uid BIGINT NOT NULL,
        gid BIGINT NOT NULL,
        created_at {float} NOT NULL
    )""",
    "CREATE UNIQUE INDEX workload_accounts_uid ON workload_accounts (uid)",
]

# Webhook deliveries (issue 12): one row per ATTEMPT to POST an event to a configured webhook,
# appended as it ends, so an operator sees every failure and retry. No foreign keys: the log
# outlives users and events alike, and the daemon prunes it by age.
_WEBHOOK_DELIVERIES = [
    """
    CREATE TABLE webhook_deliveries (
        seq {serial_pk},
        id TEXT NOT NULL,
        webhook TEXT NOT NULL,
        url TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_seq BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        user_id TEXT,
        attempt INTEGER NOT NULL,
        outcome TEXT NOT NULL CHECK (outcome IN ('delivered', 'retrying', 'failed')),
        status_code INTEGER,
        error TEXT,
        duration_ms BIGINT NOT NULL,
        created_at {float} NOT NULL
    )""",
    "CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook, seq)",
    "CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id)",
    "CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_at)",
    # `GET /api/v1/events?since=...` over the whole log.
    "CREATE INDEX events_created ON events (created_at)",
]

# Several hosts (issue 16): each configured host's last known state (up/down, why, when), the
# reservation ledger (one row per user holding room on a host: placements read and write it in
# one serialised transaction, so concurrent starts never overbook), and what a move measured
# beyond the original columns.
_HOSTS = [
    """
    CREATE TABLE hosts (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('up', 'down', 'draining')),
        reason TEXT,
        checked_at {float} NOT NULL
    )""",
    """
    CREATE TABLE host_reservations (
        user_id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        memory_bytes BIGINT NOT NULL CHECK (memory_bytes >= 0),
        created_at {float} NOT NULL
    )""",
    "CREATE INDEX host_reservations_host ON host_reservations (host)",
    "ALTER TABLE migrations ADD COLUMN switch_ms BIGINT",
    "ALTER TABLE migrations ADD COLUMN bytes BIGINT",
    "ALTER TABLE migrations ADD COLUMN step TEXT",
]

MIGRATIONS: list[SchemaMigration] = [
    SchemaMigration(1, "initial", _INITIAL),
    SchemaMigration(2, "snapshot_kinds", _SNAPSHOT_KINDS),
    SchemaMigration(3, "workload_accounts", _WORKLOAD_ACCOUNTS),
    SchemaMigration(4, "webhook_deliveries", _WEBHOOK_DELIVERIES),
    SchemaMigration(5, "hosts", _HOSTS),
]

LATEST_VERSION = MIGRATIONS[-1].version
