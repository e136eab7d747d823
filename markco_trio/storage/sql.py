"""`SqlStorage`: every method of the `Storage` role, written once over a small driver interface.

SQLite (built in) and PostgreSQL (the `markco-postgres` plugin) differ in how they connect, begin
a transaction, spell a placeholder and report a broken uniqueness rule — not in what they store.
So the queries live here, once, in portable SQL with `?` placeholders, and a subclass provides
the driver hooks (the methods under "driver interface" below).

Units of work (DESIGN §8): each storage method builds a plain function `fn(tx)` and hands it to
`_read` or `_write`, which run it inside ONE transaction in a worker thread
(`trio.to_thread.run_sync`) behind the storage's own `trio.CapacityLimiter`, sized to its
connections. No transaction is ever held open across an await. When the awaiting task is
cancelled, the running statement is interrupted (`_interrupt`) and the call still waits for the
thread to roll back before it lets the cancellation through.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager, suppress
from functools import partial
from typing import Any, ClassVar, Self, TypeVar

import trio

from ..errors import Conflict, NotFound, StorageError
from ..metrics import FAST_BUCKETS, Histogram
from ..records import (
    SNAPSHOT_KINDS,
    ApiToken,
    Event,
    Grant,
    GrantRole,
    Identity,
    Invite,
    LoginLink,
    Migration,
    Operation,
    OperationState,
    Page,
    Runtime,
    RuntimeState,
    Session,
    Snapshot,
    User,
    WebhookDelivery,
    WorkloadAccount,
    WorkloadRole,
)
from . import schema
from .failures import InvalidCursor, StorageUnavailable

T = TypeVar("T")
Row = dict[str, Any]

# What `update_user` and `update_runtime` may change; anything else is a programming error.
_USER_FIELDS = frozenset({"name", "email", "avatar_url", "plan", "is_admin", "disabled",
                          "username"})
_RUNTIME_FIELDS = frozenset({"state", "handle", "address", "host", "limits", "reason",
                             "restarts", "oom_kills", "operation_id"})
_LIVE = "state NOT IN ('stopped', 'failed')"  # the predicate of the runtimes_one_live index


class UniqueViolation(Exception):
    """Driver interface: a write broke the unique index named `index` (schema names them)."""

    def __init__(self, index: str) -> None:
        super().__init__(index)
        self.index = index


class ForeignKeyViolation(Exception):
    """Driver interface: a write referred to a record that does not exist."""


class _TransactionCancelled(Exception):
    """Raised in the worker thread when the awaiting task was cancelled: roll back, stop."""


class _Job:
    """One unit of work handed to a worker thread, shared with the trio task awaiting it.

    The thread is started with `abandon_on_cancel=True` so that a cancelled task regains
    control at once; it then uses the job to stop the thread (interrupt the statement running
    on `conn`, or keep the transaction from starting) and to wait until the thread is done, so
    no transaction outlives the call that opened it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = "pending"  # -> running -> finished, or pending -> abandoned
        self._conn: Any = None
        self._done = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self.cancel_requested = False

    # the worker thread's side
    def start(self) -> bool:
        with self._lock:
            if self._state == "abandoned":
                return False
            self._state = "running"
            return True

    def attach(self, conn: Any) -> None:
        with self._lock:
            self._conn = conn
            if self.cancel_requested:
                raise _TransactionCancelled

    def detach(self) -> None:
        with self._lock:
            self._conn = None

    def finish(self) -> None:
        with self._lock:
            self._state = "finished"
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._done.set)

    # the trio task's side
    def request_cancel(self) -> tuple[bool, Any]:
        """Ask the thread to stop; return (whether to wait for it, the connection to interrupt)."""
        with self._lock:
            if self._state == "pending":
                self._state = "abandoned"
                return False, None
            if self._state == "finished":
                return False, None
            self.cancel_requested = True
            return True, self._conn

    async def wait_finished(self) -> None:
        await self._done.wait()


class Tx:
    """One open transaction, as a unit of work's function sees it (in its worker thread).

    Queries use `?` placeholders; rows come back as dicts keyed by column name.
    """

    def __init__(self, cursor: Any, translate: Callable[[str], str], job: _Job) -> None:
        self._cursor = cursor
        self._translate = translate
        self._job = job
        self.rowcount = -1

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; return its rows (empty for statements without a result)."""
        if self._job.cancel_requested:  # the awaiting task is gone: do not start another
            raise _TransactionCancelled
        cursor = self._cursor
        cursor.execute(self._translate(sql), tuple(params))
        if cursor.description is None:
            self.rowcount = cursor.rowcount
            return []
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
        self.rowcount = len(rows)
        return rows

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """Run one statement; return its first row or None."""
        rows = self.execute(sql, params)
        return rows[0] if rows else None


def _new_id() -> str:
    return uuid.uuid4().hex


def _json(value: Mapping[str, Any]) -> str:
    # Serialised before the worker thread starts, so a value that is not JSON fails the caller
    # with a TypeError instead of failing a transaction.
    return json.dumps(dict(value), separators=(",", ":"))


# A list_users cursor: the last username of a page, tagged (so that a stray string is refused
# rather than read as a position) and base64url-encoded (so that it stays opaque).
_CURSOR_TAG = "u:"


def _encode_cursor(username: str) -> str:
    return base64.urlsafe_b64encode((_CURSOR_TAG + username).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    if not text.startswith(_CURSOR_TAG):
        raise InvalidCursor(f"invalid cursor {cursor!r}: pass back a next_cursor as it came")
    return text.removeprefix(_CURSOR_TAG)


class SqlStorage(abc.ABC):
    """The `Storage` role over SQL. Subclasses provide the driver interface: `_open`, `_close`,
    `_connect`, `_constraint_violation`, `_has_table`, `instance_lock`, and optionally
    `_translate`, `_serialize` and `_interrupt`; plus the class attributes below.
    """

    name: str
    sql_tokens: ClassVar[Mapping[str, str]]  # schema dialect tokens (`schema.SQLITE_TOKENS`...)
    begin_read: ClassVar[str] = "BEGIN"
    begin_write: ClassVar[str] = "BEGIN"
    driver_errors: ClassVar[tuple[type[Exception], ...]] = ()  # wrapped as StorageError

    def __init__(self, *, read_limiter: trio.CapacityLimiter,
                 write_limiter: trio.CapacityLimiter) -> None:
        # Sized to the connections that serve each kind of transaction, so a waiting unit of
        # work waits in trio (cancellable) rather than in a blocked worker thread.
        self._read_limiter = read_limiter
        self._write_limiter = write_limiter
        # Read and write latency as callers see it (waiting for a connection included), read
        # by the daemon's /metrics at scrape time.
        self.latency = (Histogram(FAST_BUCKETS), Histogram(FAST_BUCKETS))

    # ------------------------------------------------------------------ driver interface

    @abc.abstractmethod
    def _open(self) -> None:
        """Open connections (runs in a worker thread)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Close connections (runs in a worker thread)."""

    @abc.abstractmethod
    def _connect(self, write: bool) -> AbstractContextManager[Any]:
        """A DB-API connection for one transaction, in autocommit mode (transactions are
        begun explicitly with `begin_read`/`begin_write`), returned when the block ends."""

    @abc.abstractmethod
    def _constraint_violation(self, conn: Any, exc: Exception) -> Exception | None:
        """Classify a failed write: `UniqueViolation(index name)`, `ForeignKeyViolation`, or
        None when `exc` is something else. Runs in the thread, with the connection."""

    @abc.abstractmethod
    def _has_table(self, tx: Tx, table: str) -> bool:
        """Whether `table` exists (before the first upgrade, nothing does)."""

    @abc.abstractmethod
    def instance_lock(self) -> AbstractAsyncContextManager[None]:
        """An async context manager holding the single-instance lock; see `Storage`."""

    def _translate(self, sql: str) -> str:
        """Rewrite a query written with `?` placeholders for the driver."""
        return sql

    def _unavailable_cause(self, exc: Exception) -> str | None:
        """Classify a driver error an operator must fix (read-only, disk full, I/O error,
        server gone) as a short cause ("database is read-only"); None for anything else. The
        default knows none."""
        return None

    def _serialize(self, tx: Tx, what: str) -> None:
        """Serialise transactions that touch `what` until this one ends, where concurrent
        writers are possible (the event sequence, schema upgrades). The default does nothing,
        for databases that run one writer at a time anyway."""
        return

    def _interrupt(self, conn: Any) -> None:
        """Cancel the statement running on `conn` (called from another thread). The default
        does nothing: a cancelled call then waits for its statement to end."""
        return

    # ------------------------------------------------------------------ units of work

    async def __aenter__(self) -> Self:
        await trio.to_thread.run_sync(self._open)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with trio.CancelScope(shield=True):  # connections must close even when cancelled
            await trio.to_thread.run_sync(self._close)

    async def _read(self, fn: Callable[[Tx], T]) -> T:
        return await self._run(fn, write=False)

    async def _write(self, fn: Callable[[Tx], T], *, conflicts: Mapping[str, str] | None = None,
                     missing: str | None = None) -> T:
        """Run a write; a broken unique index becomes `Conflict(conflicts[index])` and a
        dangling reference `NotFound(missing)`."""
        try:
            return await self._run(fn, write=True)
        except UniqueViolation as exc:
            message = (conflicts or {}).get(exc.index)
            raise Conflict(message or f"a record with the same key exists ({exc.index})") from exc
        except ForeignKeyViolation as exc:
            raise NotFound(missing or "the write refers to a record that does not exist") from exc

    async def _run(self, fn: Callable[[Tx], T], *, write: bool) -> T:
        job = _Job()
        limiter = self._write_limiter if write else self._read_limiter
        started = time.perf_counter()
        try:
            result: T = await trio.to_thread.run_sync(self._transact, fn, write, job,
                                                      limiter=limiter, abandon_on_cancel=True)
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self._stop(job)
            raise
        finally:
            self.latency[write].observe(time.perf_counter() - started)
        return result

    async def _stop(self, job: _Job) -> None:
        must_wait, conn = job.request_cancel()
        if not must_wait:
            return
        if conn is not None:
            with suppress(Exception):  # a failed cancel request only means a longer wait
                await trio.to_thread.run_sync(self._interrupt, conn)
        await job.wait_finished()

    def _transact(self, fn: Callable[[Tx], T], write: bool, job: _Job) -> T:
        # Runs in the worker thread.
        if not job.start():
            raise _TransactionCancelled  # the caller left before the thread ran
        try:
            with self._connect(write) as conn:
                try:
                    job.attach(conn)
                    return self._transaction(conn, fn, write, job)
                except Exception as exc:
                    violation = self._constraint_violation(conn, exc)
                    if violation is None:
                        raise
                    raise violation from exc
                finally:
                    job.detach()
        except self.driver_errors as exc:
            cause = self._unavailable_cause(exc)
            if cause is not None:
                raise StorageUnavailable(cause, f"{self!r}: {exc}") from exc
            raise StorageError(f"{self.name} storage failed: {exc}") from exc
        finally:
            job.finish()

    def _transaction(self, conn: Any, fn: Callable[[Tx], T], write: bool, job: _Job) -> T:
        cursor = conn.cursor()
        try:
            cursor.execute(self.begin_write if write else self.begin_read)
            try:
                result = fn(Tx(cursor, self._translate, job))
                cursor.execute("COMMIT")
            except BaseException:
                # The statement may have ended the transaction already (an interrupt does).
                with suppress(*self.driver_errors):
                    cursor.execute("ROLLBACK")
                raise
            return result
        finally:
            cursor.close()

    @staticmethod
    def _bump_epoch(tx: Tx) -> None:
        tx.execute("UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1")

    # ------------------------------------------------------------------ schema

    async def upgrade(self) -> list[int]:
        """Apply pending schema migrations, one transaction each; return the versions applied."""
        applied = []
        for migration in schema.MIGRATIONS:
            if await self._write(partial(self._apply, migration=migration)):
                applied.append(migration.version)
        return applied

    def _apply(self, tx: Tx, migration: schema.SchemaMigration) -> bool:
        self._serialize(tx, "schema")  # two daemons upgrading at once: one waits, then skips
        tx.execute(schema.render(schema.SCHEMA_MIGRATIONS_TABLE, self.sql_tokens))
        if tx.one("SELECT 1 AS done FROM schema_migrations WHERE version = ?",
                  (migration.version,)):
            return False
        for statement in migration.statements:
            tx.execute(schema.render(statement, self.sql_tokens))
        tx.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                   (migration.version, migration.name, time.time()))
        return True

    async def schema_version(self) -> int:
        """The highest applied schema version (0 for an empty database)."""

        def read(tx: Tx) -> int:
            if not self._has_table(tx, "schema_migrations"):
                return 0
            row = tx.one("SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations")
            return int(row["version"]) if row else 0

        return await self._read(read)

    async def ping(self) -> None:
        """Raise `StorageError` if the database cannot be reached."""
        await self._read(lambda tx: tx.execute("SELECT 1 AS one"))

    async def probe_write(self) -> None:
        """Raise `StorageUnavailable` (or `StorageError`) if the database cannot take a write
        now (read-only, disk full...), so the daemon's readiness says so before a user finds
        out. A real write that changes nothing once committed: the revocation epoch moved and
        moved back in one transaction (setting a value to itself would be skipped as no
        change, and write nothing)."""

        def probe(tx: Tx) -> None:
            tx.execute("UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1")
            tx.execute("UPDATE revocation_epoch SET epoch = epoch - 1 WHERE id = 1")

        await self._write(probe)


    # ------------------------------------------------------------------ users and identities

    @staticmethod
    def _user_conflicts(username: str | None, email: str | None) -> dict[str, str]:
        return {"users_username": f"username {username!r} is taken",
                "users_email": f"email {email!r} is used by another user"}

    async def create_user(self, *, username: str, email: str | None, name: str | None,
                          avatar_url: str | None, plan: str = "free", is_admin: bool = False,
                          now: float) -> User:
        """Create a user; `Conflict` when the username or the email is taken."""
        username = username.lower()
        params = (_new_id(), username, email, name, avatar_url, plan, bool(is_admin), now)
        row = await self._write(
            lambda tx: tx.one(
                "INSERT INTO users (id, username, email, name, avatar_url, plan, is_admin,"
                " disabled, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, FALSE, ?) RETURNING *",
                params),
            conflicts=self._user_conflicts(username, email))
        assert row is not None
        return _user(row)

    async def get_user(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        row = await self._read(lambda tx: tx.one("SELECT * FROM users WHERE id = ?", (user_id,)))
        return _user(row) if row else None

    async def get_user_by_username(self, username: str) -> User | None:
        """Case-insensitive lookup (usernames are stored lower-case)."""
        row = await self._read(lambda tx: tx.one("SELECT * FROM users WHERE username = ?",
                                                 (username.lower(),)))
        return _user(row) if row else None

    async def get_user_by_email(self, email: str) -> User | None:
        """Case-insensitive lookup."""
        # Spelled like the users_email index, so the index serves it.
        row = await self._read(lambda tx: tx.one(
            "SELECT * FROM users WHERE lower(email) = lower(?) AND email IS NOT NULL", (email,)))
        return _user(row) if row else None

    async def list_users(self, *, cursor: str | None = None, limit: int = 100) -> Page[User]:
        """Users ordered by username, `limit` at a time. `cursor` is a `next_cursor` from a
        previous page (anything else raises ValueError)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        after = _decode_cursor(cursor) if cursor is not None else ""
        # One row more than asked tells whether there is a next page.
        rows = await self._read(lambda tx: tx.execute(
            "SELECT * FROM users WHERE username > ? ORDER BY username LIMIT ?",
            (after, limit + 1)))
        users = [_user(row) for row in rows[:limit]]
        next_cursor = _encode_cursor(users[-1].username) if len(rows) > limit else None
        return Page(items=users, next_cursor=next_cursor)

    async def update_user(self, user_id: str, **fields: Any) -> User:
        """Update name, email, avatar_url, plan, is_admin, disabled or username. Disabling a
        user bumps the revocation epoch. `NotFound` for an unknown user, `Conflict` when the
        new username or email is taken."""
        unknown = set(fields) - _USER_FIELDS
        if unknown:
            raise TypeError(f"update_user() cannot change {', '.join(sorted(unknown))}")
        values = dict(fields)
        if values.get("username") is not None:
            values["username"] = values["username"].lower()
        for flag in ("is_admin", "disabled"):
            if flag in values:
                values[flag] = bool(values[flag])

        def update(tx: Tx) -> User:
            if values:
                assignments = ", ".join(f"{column} = ?" for column in values)
                row = tx.one(f"UPDATE users SET {assignments} WHERE id = ? RETURNING *",
                             (*values.values(), user_id))
            else:
                row = tx.one("SELECT * FROM users WHERE id = ?", (user_id,))
            if row is None:
                raise NotFound(f"user {user_id!r} not found")
            if values.get("disabled"):
                self._bump_epoch(tx)
            return _user(row)

        return await self._write(
            update, conflicts=self._user_conflicts(values.get("username"), values.get("email")))

    async def link_identity(self, *, user_id: str, provider: str, provider_user_id: str,
                            email: str | None, email_verified: bool, now: float) -> Identity:
        """Record a provider identity of a user; `Conflict` if it is linked already."""
        row = await self._write(
            lambda tx: tx.one(
                "INSERT INTO identities (provider, provider_user_id, user_id, email,"
                " email_verified, created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING *",
                (provider, provider_user_id, user_id, email, bool(email_verified), now)),
            conflicts={"identities_pkey":
                       f"identity {provider}:{provider_user_id} is already linked to a user"},
            missing=f"user {user_id!r} not found")
        assert row is not None
        return _identity(row)

    async def find_identity(self, provider: str, provider_user_id: str) -> Identity | None:
        """The identity, or None."""
        row = await self._read(lambda tx: tx.one(
            "SELECT * FROM identities WHERE provider = ? AND provider_user_id = ?",
            (provider, provider_user_id)))
        return _identity(row) if row else None

    async def list_identities(self, user_id: str) -> list[Identity]:
        """The user's identities, oldest first."""
        rows = await self._read(lambda tx: tx.execute(
            "SELECT * FROM identities WHERE user_id = ?"
            " ORDER BY created_at, provider, provider_user_id", (user_id,)))
        return [_identity(row) for row in rows]

    # ------------------------------------------------------------------ sessions

    async def create_session(self, *, user_id: str, token_hash: str, expires_at: float,
                             now: float, user_agent: str | None = None) -> Session:
        """Store a new session (only the hash of its token)."""
        row = await self._write(
            lambda tx: tx.one(
                "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at,"
                " last_seen_at, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (_new_id(), user_id, token_hash, now, expires_at, now, user_agent)),
            conflicts={"sessions_token_hash": "a session with this token hash exists"},
            missing=f"user {user_id!r} not found")
        assert row is not None
        return _session(row)

    async def get_session(self, token_hash: str, *, now: float) -> Session | None:
        """The session if it exists, is not revoked and has not expired at `now`."""
        row = await self._read(lambda tx: tx.one(
            "SELECT * FROM sessions WHERE token_hash = ? AND revoked_at IS NULL"
            " AND expires_at > ?", (token_hash, now)))
        return _session(row) if row else None

    async def touch_sessions(self, updates: Mapping[str, tuple[float, float]]) -> None:
        """Sliding renewal, coalesced: token_hash -> (last_seen_at, new expires_at). Revoked
        sessions, and sessions that had expired by `last_seen_at`, are left alone."""
        batch = [(seen, expires, token_hash, seen)
                 for token_hash, (seen, expires) in sorted(updates.items())]
        if not batch:
            return

        def touch(tx: Tx) -> None:
            for params in batch:
                tx.execute("UPDATE sessions SET last_seen_at = ?, expires_at = ?"
                           " WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ?",
                           params)

        await self._write(touch)

    async def revoke_session(self, token_hash: str, *, now: float) -> bool:
        """Revoke one session; False if it was unknown or revoked already."""

        def revoke(tx: Tx) -> bool:
            tx.execute("UPDATE sessions SET revoked_at = ? WHERE token_hash = ?"
                       " AND revoked_at IS NULL", (now, token_hash))
            if tx.rowcount:
                self._bump_epoch(tx)
            return tx.rowcount > 0

        return await self._write(revoke)

    async def revoke_user_sessions(self, user_id: str, *, now: float) -> int:
        """Revoke every live session of a user (logout everywhere); return how many."""

        def revoke(tx: Tx) -> int:
            tx.execute("UPDATE sessions SET revoked_at = ? WHERE user_id = ?"
                       " AND revoked_at IS NULL AND expires_at > ?", (now, user_id, now))
            count = tx.rowcount
            if count:
                self._bump_epoch(tx)
            return count

        return await self._write(revoke)

    async def list_sessions(self, user_id: str, *, now: float) -> list[Session]:
        """The user's live sessions, oldest first."""
        rows = await self._read(lambda tx: tx.execute(
            "SELECT * FROM sessions WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ?"
            " ORDER BY created_at, id", (user_id, now)))
        return [_session(row) for row in rows]

    async def revocation_epoch(self) -> int:
        """A counter bumped by every revocation (see `Storage.revocation_epoch`)."""
        row = await self._read(lambda tx: tx.one(
            "SELECT epoch FROM revocation_epoch WHERE id = 1"))
        return int(row["epoch"]) if row else 0

    async def purge_expired(self, *, now: float) -> int:
        """Delete expired sessions and login links; return how many."""

        def purge(tx: Tx) -> int:
            tx.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            sessions = tx.rowcount
            tx.execute("DELETE FROM login_links WHERE expires_at <= ?", (now,))
            return sessions + tx.rowcount

        return await self._write(purge)

    # ------------------------------------------------------------------ API tokens, login links

    async def create_api_token(self, *, user_id: str, name: str, token_hash: str,
                               scopes: tuple[str, ...], expires_at: float | None,
                               now: float) -> ApiToken:
        """Store a new API token (only its hash). Scopes may not contain whitespace."""
        for scope in scopes:
            if not scope or scope != "".join(scope.split()):
                raise ValueError(f"invalid scope {scope!r}: scopes are words without spaces")
        row = await self._write(
            lambda tx: tx.one(
                "INSERT INTO api_tokens (id, user_id, name, token_hash, scopes, created_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (_new_id(), user_id, name, token_hash, " ".join(scopes), now, expires_at)),
            conflicts={"api_tokens_token_hash": "an API token with this hash exists"},
            missing=f"user {user_id!r} not found")
        assert row is not None
        return _api_token(row)

    async def get_api_token(self, token_hash: str, *, now: float) -> ApiToken | None:
        """The token if live (not revoked, not expired)."""
        row = await self._read(lambda tx: tx.one(
            "SELECT * FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > ?)", (token_hash, now)))
        return _api_token(row) if row else None

    async def list_api_tokens(self, user_id: str) -> list[ApiToken]:
        """All of the user's tokens, revoked and expired ones included, oldest first."""
        rows = await self._read(lambda tx: tx.execute(
            "SELECT * FROM api_tokens WHERE user_id = ? ORDER BY created_at, id", (user_id,)))
        return [_api_token(row) for row in rows]

    async def revoke_api_token(self, token_id: str, *, now: float) -> bool:
        """Revoke a token by id; False if it was unknown or revoked already."""

        def revoke(tx: Tx) -> bool:
            tx.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?"
                       " AND revoked_at IS NULL", (now, token_id))
            if tx.rowcount:
                self._bump_epoch(tx)
            return tx.rowcount > 0

        return await self._write(revoke)

    async def create_login_link(self, *, user_id: str, token_hash: str, expires_at: float,
                                now: float) -> LoginLink:
        """Store a one-time login link (only its hash)."""
        row = await self._write(
            lambda tx: tx.one(
                "INSERT INTO login_links (id, user_id, token_hash, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?) RETURNING *",
                (_new_id(), user_id, token_hash, now, expires_at)),
            conflicts={"login_links_token_hash": "a login link with this hash exists"},
            missing=f"user {user_id!r} not found")
        assert row is not None
        return _login_link(row)

    async def consume_login_link(self, token_hash: str, *, now: float) -> LoginLink | None:
        """Atomically mark the link used and return it; None if unknown, used or expired."""
        # One conditional UPDATE: of two concurrent calls, the second finds used_at set.
        row = await self._write(lambda tx: tx.one(
            "UPDATE login_links SET used_at = ? WHERE token_hash = ? AND used_at IS NULL"
            " AND expires_at > ? RETURNING *", (now, token_hash, now)))
        return _login_link(row) if row else None

    # ------------------------------------------------------------------ invites and grants

    async def create_invite(self, *, owner_id: str, project: str, role: GrantRole,
                            token_hash: str, expires_at: float | None, max_uses: int,
                            now: float) -> Invite:
        """Store an invite to `owner_id`'s project (only the hash of its token)."""
        if max_uses < 1:
            raise ValueError(f"max_uses must be at least 1, not {max_uses}")
        row = await self._write(
            lambda tx: tx.one(
                "INSERT INTO invites (id, owner_id, project, role, token_hash, created_at,"
                " expires_at, max_uses) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (_new_id(), owner_id, project, GrantRole(role).value, token_hash, now,
                 expires_at, max_uses)),
            conflicts={"invites_token_hash": "an invite with this token hash exists"},
            missing=f"user {owner_id!r} not found")
        assert row is not None
        return _invite(row)

    async def get_invite(self, token_hash: str) -> Invite | None:
        """The invite, whatever its state, or None."""
        row = await self._read(lambda tx: tx.one(
            "SELECT * FROM invites WHERE token_hash = ?", (token_hash,)))
        return _invite(row) if row else None

    async def list_invites(self, owner_id: str) -> list[Invite]:
        """All invites of an owner, oldest first."""
        rows = await self._read(lambda tx: tx.execute(
            "SELECT * FROM invites WHERE owner_id = ? ORDER BY created_at, id", (owner_id,)))
        return [_invite(row) for row in rows]

    async def revoke_invite(self, invite_id: str, *, owner_id: str, now: float) -> bool:
        """Revoke an invite of `owner_id`; False if unknown, not theirs or revoked already.
        Grants made from it stay (revoke those with `revoke_grant`)."""

        def revoke(tx: Tx) -> bool:
            tx.execute("UPDATE invites SET revoked_at = ? WHERE id = ? AND owner_id = ?"
                       " AND revoked_at IS NULL", (now, invite_id, owner_id))
            if tx.rowcount:
                self._bump_epoch(tx)
            return tx.rowcount > 0

        return await self._write(revoke)

    async def accept_invite(self, token_hash: str, *, user_id: str, now: float) -> Grant | None:
        """Atomically count a use of a live invite and record (or update) the grant."""

        def accept(tx: Tx) -> Grant | None:
            # The use is counted by one conditional UPDATE, so concurrent acceptances queue on
            # the row lock and re-check `uses < max_uses`: never more than max_uses succeed.
            invite = tx.one(
                "UPDATE invites SET uses = uses + 1 WHERE token_hash = ?"
                " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"
                " AND uses < max_uses RETURNING id, owner_id, project, role",
                (token_hash, now))
            if invite is None:
                return None
            grant = tx.one(
                "INSERT INTO grants (id, owner_id, project, user_id, role, created_at,"
                " invite_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (owner_id, project, user_id) WHERE revoked_at IS NULL"
                " DO UPDATE SET role = excluded.role, invite_id = excluded.invite_id"
                " RETURNING *",
                (_new_id(), invite["owner_id"], invite["project"], user_id, invite["role"], now,
                 invite["id"]))
            assert grant is not None
            return _grant(grant)

        return await self._write(accept, missing=f"user {user_id!r} not found")

    async def list_grants(self, *, user_id: str | None = None,
                          owner_id: str | None = None) -> list[Grant]:
        """Live grants held by `user_id` and/or given by `owner_id` (all live grants when
        neither is given), oldest first."""
        where, params = ["revoked_at IS NULL"], []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if owner_id is not None:
            where.append("owner_id = ?")
            params.append(owner_id)
        sql = f"SELECT * FROM grants WHERE {' AND '.join(where)} ORDER BY created_at, id"
        rows = await self._read(lambda tx: tx.execute(sql, params))
        return [_grant(row) for row in rows]

    async def revoke_grant(self, grant_id: str, *, owner_id: str, now: float) -> bool:
        """Revoke a grant given by `owner_id`; False if unknown, not theirs or revoked."""

        def revoke(tx: Tx) -> bool:
            tx.execute("UPDATE grants SET revoked_at = ? WHERE id = ? AND owner_id = ?"
                       " AND revoked_at IS NULL", (now, grant_id, owner_id))
            if tx.rowcount:
                self._bump_epoch(tx)
            return tx.rowcount > 0

        return await self._write(revoke)

    # ------------------------------------------------------------------ workloads

    async def create_runtime(self, *, user_id: str, role: WorkloadRole, backend: str, host: str,
                             state: RuntimeState, limits: Mapping[str, Any], now: float,
                             handle: str | None = None, address: str | None = None,
                             operation_id: str | None = None) -> Runtime:
        """Record a workload; `Conflict` when the user already has a live one of that role."""
        role_name = WorkloadRole(role).value
        params = (_new_id(), user_id, role_name, backend, host, handle, address,
                  RuntimeState(state).value, _json(limits), operation_id, now, now)
        row = await self._write(
            lambda tx: tx.one(
                "INSERT INTO runtimes (id, user_id, role, backend, host, handle, address, state,"
                " limits, operation_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *", params),
            conflicts={"runtimes_one_live": f"user {user_id!r} already has a live {role_name}"},
            missing=f"user {user_id!r} or operation {operation_id!r} not found")
        assert row is not None
        return _runtime(row)

    async def update_runtime(self, runtime_id: str, *, now: float, **fields: Any) -> Runtime:
        """Update state, handle, address, host, limits, reason, restarts, oom_kills or
        operation_id. `NotFound` for an unknown runtime; `Conflict` when it would become a
        second live workload of its role."""
        unknown = set(fields) - _RUNTIME_FIELDS
        if unknown:
            raise TypeError(f"update_runtime() cannot change {', '.join(sorted(unknown))}")
        values = dict(fields)
        if "state" in values:
            values["state"] = RuntimeState(values["state"]).value
        if "limits" in values:
            values["limits"] = _json(values["limits"])
        values["updated_at"] = now
        assignments = ", ".join(f"{column} = ?" for column in values)

        def update(tx: Tx) -> Runtime:
            row = tx.one(f"UPDATE runtimes SET {assignments} WHERE id = ? RETURNING *",
                         (*values.values(), runtime_id))
            if row is None:
                raise NotFound(f"runtime {runtime_id!r} not found")
            return _runtime(row)

        return await self._write(
            update,
            conflicts={"runtimes_one_live": f"runtime {runtime_id!r} cannot become"
                       f" {values.get('state')}: its user has another live one of its role"},
            missing=f"operation {values.get('operation_id')!r} not found")

    async def get_runtime(self, runtime_id: str) -> Runtime | None:
        """The workload record, or None."""
        row = await self._read(lambda tx: tx.one(
            "SELECT * FROM runtimes WHERE id = ?", (runtime_id,)))
        return _runtime(row) if row else None

    async def get_live_runtime(self, user_id: str, role: WorkloadRole) -> Runtime | None:
        """The user's live workload of `role` (there is at most one), or None."""
        row = await self._read(lambda tx: tx.one(
            f"SELECT * FROM runtimes WHERE user_id = ? AND role = ? AND {_LIVE}",
            (user_id, WorkloadRole(role).value)))
        return _runtime(row) if row else None

    async def list_runtimes(self, *, user_id: str | None = None,
                            live_only: bool = True) -> list[Runtime]:
        """Workload records, oldest first: of one user or all, live ones or all."""
        where, params = ["1 = 1"], []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if live_only:
            where.append(_LIVE)
        sql = f"SELECT * FROM runtimes WHERE {' AND '.join(where)} ORDER BY created_at, id"
        rows = await self._read(lambda tx: tx.execute(sql, params))
        return [_runtime(row) for row in rows]

    # ------------------------------------------------------------------ the operation log

    async def create_operation(self, *, user_id: str, kind: str, targets: Mapping[str, Any],
                               now: float, step: str = "created") -> Operation:
        """Open an operation with its targets fixed up front."""
        params = (_new_id(), user_id, kind, step, OperationState.OPEN.value, _json(targets),
                  now, now)
        row = await self._write(
            lambda tx: tx.one(
                "INSERT INTO operations (id, user_id, kind, step, state, targets, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *", params),
            missing=f"user {user_id!r} not found")
        assert row is not None
        return _operation(row)

    async def update_operation(self, operation_id: str, *, now: float, step: str | None = None,
                               state: OperationState | None = None,
                               error: str | None = None) -> Operation:
        """Advance an operation (fields left None are unchanged); `NotFound` if unknown."""
        values: dict[str, Any] = {"updated_at": now}
        if step is not None:
            values["step"] = step
        if state is not None:
            values["state"] = OperationState(state).value
        if error is not None:
            values["error"] = error
        assignments = ", ".join(f"{column} = ?" for column in values)

        def update(tx: Tx) -> Operation:
            row = tx.one(f"UPDATE operations SET {assignments} WHERE id = ? RETURNING *",
                         (*values.values(), operation_id))
            if row is None:
                raise NotFound(f"operation {operation_id!r} not found")
            return _operation(row)

        return await self._write(update)

    async def get_operation(self, operation_id: str) -> Operation | None:
        """The operation, or None."""
        row = await self._read(lambda tx: tx.one(
            "SELECT * FROM operations WHERE id = ?", (operation_id,)))
        return _operation(row) if row else None

    async def list_operations(self, *, user_id: str | None = None,
                              open_only: bool = False) -> list[Operation]:
        """Operations, oldest first: of one user or all, open ones or all."""
        where, params = ["1 = 1"], []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if open_only:
            where.append("state = 'open'")
        sql = f"SELECT * FROM operations WHERE {' AND '.join(where)} ORDER BY created_at, id"
        rows = await self._read(lambda tx: tx.execute(sql, params))
        return [_operation(row) for row in rows]

    # ------------------------------------------------------------------ snapshots, migrations

    async def create_snapshot(self, *, user_id: str, runtime_id: str | None, name: str,
                              path: str, size_bytes: int, sha256: str | None,
                              depends_on: Mapping[str, Any], now: float,
                              kind: str = "named") -> Snapshot:
        """Record a complete checkpoint archive (`kind`: named, sleep or fork)."""
        if kind not in SNAPSHOT_KINDS:
            raise ValueError(f"unknown snapshot kind {kind!r}")
        params = (_new_id(), user_id, runtime_id, name, path, size_bytes, sha256,
                  _json(depends_on), now, kind)
        row = await self._write(
            lambda tx: tx.one(
                "INSERT INTO snapshots (id, user_id, runtime_id, name, path, size_bytes, sha256,"
                " depends_on, created_at, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING *", params),
            conflicts={"snapshots_named_unique": f"a snapshot named {name!r} exists"},
            missing=f"user {user_id!r} or runtime {runtime_id!r} not found")
        assert row is not None
        return _snapshot(row)

    async def get_snapshot(self, snapshot_id: str) -> Snapshot | None:
        """One snapshot by id."""
        row = await self._read(lambda tx: tx.one(
            "SELECT * FROM snapshots WHERE id = ?", (snapshot_id,)))
        return _snapshot(row) if row else None

    async def list_snapshots(self, user_id: str | None = None, *,
                             kind: str | None = None) -> list[Snapshot]:
        """Snapshots, oldest first: of one user (or all), of one kind (or all)."""
        where, params = ["1 = 1"], []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        sql = f"SELECT * FROM snapshots WHERE {' AND '.join(where)} ORDER BY created_at, id"
        rows = await self._read(lambda tx: tx.execute(sql, params))
        return [_snapshot(row) for row in rows]

    async def delete_snapshot(self, snapshot_id: str) -> bool:
        """Forget a snapshot record; False if unknown. (The archive file is the caller's.)"""

        def delete(tx: Tx) -> bool:
            tx.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))
            return tx.rowcount > 0

        return await self._write(delete)

    async def create_migration(self, *, runtime_id: str, user_id: str, from_host: str,
                               to_host: str, strategy: str, now: float) -> Migration:
        """Record the start of a move of a runtime between hosts."""
        params = (_new_id(), runtime_id, user_id, from_host, to_host, strategy, "running", now)
        row = await self._write(
            lambda tx: tx.one(
                "INSERT INTO migrations (id, runtime_id, user_id, from_host, to_host, strategy,"
                " status, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *", params),
            missing=f"user {user_id!r} or runtime {runtime_id!r} not found")
        assert row is not None
        return _migration(row)

    async def finish_migration(self, migration_id: str, *, status: str, now: float,
                               checkpoint_ms: int | None = None, transfer_ms: int | None = None,
                               restore_ms: int | None = None,
                               error: str | None = None) -> Migration:
        """Record how a move ended and its timings; `NotFound` if unknown."""

        def finish(tx: Tx) -> Migration:
            row = tx.one(
                "UPDATE migrations SET status = ?, completed_at = ?, checkpoint_ms = ?,"
                " transfer_ms = ?, restore_ms = ?, error = ? WHERE id = ? RETURNING *",
                (status, now, checkpoint_ms, transfer_ms, restore_ms, error, migration_id))
            if row is None:
                raise NotFound(f"migration {migration_id!r} not found")
            return _migration(row)

        return await self._write(finish)

    async def list_migrations(self, *, runtime_id: str | None = None) -> list[Migration]:
        """Moves, oldest first: of one runtime or all."""
        where, params = ["1 = 1"], []
        if runtime_id is not None:
            where.append("runtime_id = ?")
            params.append(runtime_id)
        sql = f"SELECT * FROM migrations WHERE {' AND '.join(where)} ORDER BY started_at, id"
        rows = await self._read(lambda tx: tx.execute(sql, params))
        return [_migration(row) for row in rows]

    # ------------------------------------------------------------------ workload accounts

    async def allocate_workload_account(self, user_id: str, *, uid_min: int, uid_max: int,
                                        now: float) -> WorkloadAccount:
        """The user's workload account, allocated if they have none: the next uid of
        [uid_min, uid_max] above every uid ever allocated there (never reused), gid = uid.
        `Conflict` when the range is used up."""
        if not 0 < uid_min <= uid_max:
            raise ValueError(f"bad uid range {uid_min}-{uid_max}")

        def allocate(tx: Tx) -> WorkloadAccount:
            self._serialize(tx, "workload_accounts")
            row = tx.one("SELECT * FROM workload_accounts WHERE user_id = ?", (user_id,))
            if row is not None:
                return _workload_account(row)
            top = tx.one("SELECT MAX(uid) AS top FROM workload_accounts WHERE uid >= ? AND"
                         " uid <= ?", (uid_min, uid_max))
            uid = uid_min if top is None or top["top"] is None else int(top["top"]) + 1
            if uid > uid_max:
                raise Conflict(f"the workload uid range {uid_min}-{uid_max} is used up")
            row = tx.one("INSERT INTO workload_accounts (user_id, uid, gid, created_at)"
                         " VALUES (?, ?, ?, ?) RETURNING *", (user_id, uid, uid, now))
            assert row is not None
            return _workload_account(row)

        return await self._write(allocate, conflicts={
            "workload_accounts_uid": "another daemon allocated that uid at the same moment; "
                                     "try again"})

    async def get_workload_account(self, user_id: str) -> WorkloadAccount | None:
        """The user's workload account, or None."""
        row = await self._read(lambda tx: tx.one(
            "SELECT * FROM workload_accounts WHERE user_id = ?", (user_id,)))
        return _workload_account(row) if row else None

    async def list_workload_accounts(self) -> list[WorkloadAccount]:
        """Every workload account, by uid."""
        rows = await self._read(lambda tx: tx.execute(
            "SELECT * FROM workload_accounts ORDER BY uid"))
        return [_workload_account(row) for row in rows]

    # ------------------------------------------------------------------ the event log

    async def append_event(self, *, type: str, user_id: str | None, data: Mapping[str, Any],
                           now: float) -> Event:
        """Persist an event; its `seq` is greater than that of every event before it."""
        params = (_new_id(), type, user_id, _json(data), now)

        def append(tx: Tx) -> Event:
            # Readers page with `seq > last seen`: seqs must become visible in order, so
            # concurrent appends take turns (a no-op where writers are serialised anyway).
            self._serialize(tx, "events")
            row = tx.one("INSERT INTO events (id, type, user_id, data, created_at)"
                         " VALUES (?, ?, ?, ?, ?) RETURNING *", params)
            assert row is not None
            return _event(row)

        return await self._write(append)

    async def list_events(self, *, after_seq: int = 0, limit: int = 100,
                          type: str | None = None, user_id: str | None = None,
                          types: Sequence[str] | None = None, since: float | None = None,
                          until: float | None = None) -> list[Event]:
        """Up to `limit` events with seq > `after_seq`, in seq order, optionally filtered."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        if types is not None and not types:
            return []
        where = ["seq > ?"]
        params: list[Any] = [after_seq]
        if type is not None:
            where.append("type = ?")
            params.append(type)
        if types is not None:
            where.append(f"type IN ({', '.join('?' for _ in types)})")
            params.extend(types)
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        if until is not None:
            where.append("created_at < ?")
            params.append(until)
        params.append(limit)
        sql = f"SELECT * FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        rows = await self._read(lambda tx: tx.execute(sql, params))
        return [_event(row) for row in rows]

    async def last_event_seq(self) -> int:
        """The newest event's seq, 0 for an empty log."""
        row = await self._read(lambda tx: tx.one("SELECT MAX(seq) AS top FROM events"))
        return 0 if row is None or row["top"] is None else int(row["top"])

    # ------------------------------------------------------------------ webhook deliveries

    async def append_webhook_delivery(self, *, webhook: str, url: str, event: Event,
                                      attempt: int, outcome: str, status_code: int | None,
                                      error: str | None, duration_ms: int,
                                      now: float) -> WebhookDelivery:
        """Record one attempt to deliver `event` to `webhook`."""
        if outcome not in _DELIVERY_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(_DELIVERY_OUTCOMES)}, "
                             f"not {outcome!r}")
        params = (_new_id(), webhook, url, event.id, event.seq, event.type, event.user_id,
                  attempt, outcome, status_code, error, duration_ms, now)

        def append(tx: Tx) -> WebhookDelivery:
            row = tx.one("INSERT INTO webhook_deliveries (id, webhook, url, event_id, event_seq,"
                         " event_type, user_id, attempt, outcome, status_code, error,"
                         " duration_ms, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                         " ?, ?) RETURNING *", params)
            assert row is not None
            return _webhook_delivery(row)

        return await self._write(append)

    async def list_webhook_deliveries(self, *, after_seq: int = 0, limit: int = 100,
                                      webhook: str | None = None, event_id: str | None = None,
                                      outcome: str | None = None) -> list[WebhookDelivery]:
        """Up to `limit` attempts with seq > `after_seq`, oldest first, optionally filtered."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        where = ["seq > ?"]
        params: list[Any] = [after_seq]
        for column, value in (("webhook", webhook), ("event_id", event_id),
                              ("outcome", outcome)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        params.append(limit)
        sql = (f"SELECT * FROM webhook_deliveries WHERE {' AND '.join(where)} ORDER BY seq"
               " LIMIT ?")
        rows = await self._read(lambda tx: tx.execute(sql, params))
        return [_webhook_delivery(row) for row in rows]

    async def purge_webhook_deliveries(self, *, before: float) -> int:
        """Delete the attempts recorded before `before`; return how many."""

        def purge(tx: Tx) -> int:
            tx.execute("DELETE FROM webhook_deliveries WHERE created_at < ?", (before,))
            return tx.rowcount

        return await self._write(purge)


_DELIVERY_OUTCOMES = ("delivered", "retrying", "failed")


# ---------------------------------------------------------------------- rows -> records
#
# SQLite hands back a REAL with no fraction as an int (from RETURNING, at least): times go
# through float() so records look the same whatever the driver.


def _time(value: float | None) -> float | None:
    return None if value is None else float(value)


def _user(row: Row) -> User:
    return User(id=row["id"], username=row["username"], email=row["email"], name=row["name"],
                avatar_url=row["avatar_url"], plan=row["plan"], is_admin=bool(row["is_admin"]),
                created_at=float(row["created_at"]), disabled=bool(row["disabled"]))


def _identity(row: Row) -> Identity:
    return Identity(provider=row["provider"], provider_user_id=row["provider_user_id"],
                    user_id=row["user_id"], email=row["email"],
                    email_verified=bool(row["email_verified"]), created_at=float(row["created_at"]))


def _session(row: Row) -> Session:
    return Session(id=row["id"], user_id=row["user_id"], token_hash=row["token_hash"],
                   created_at=float(row["created_at"]), expires_at=float(row["expires_at"]),
                   last_seen_at=float(row["last_seen_at"]), revoked_at=_time(row["revoked_at"]),
                   user_agent=row["user_agent"])


def _api_token(row: Row) -> ApiToken:
    return ApiToken(id=row["id"], user_id=row["user_id"], name=row["name"],
                    token_hash=row["token_hash"], scopes=tuple(row["scopes"].split()),
                    created_at=float(row["created_at"]), expires_at=_time(row["expires_at"]),
                    revoked_at=_time(row["revoked_at"]), last_used_at=_time(row["last_used_at"]))


def _login_link(row: Row) -> LoginLink:
    return LoginLink(id=row["id"], user_id=row["user_id"], token_hash=row["token_hash"],
                     created_at=float(row["created_at"]), expires_at=float(row["expires_at"]),
                     used_at=_time(row["used_at"]))


def _invite(row: Row) -> Invite:
    return Invite(id=row["id"], owner_id=row["owner_id"], project=row["project"],
                  role=GrantRole(row["role"]), token_hash=row["token_hash"],
                  created_at=float(row["created_at"]), expires_at=_time(row["expires_at"]),
                  max_uses=row["max_uses"], uses=row["uses"], revoked_at=_time(row["revoked_at"]))


def _grant(row: Row) -> Grant:
    return Grant(id=row["id"], owner_id=row["owner_id"], project=row["project"],
                 user_id=row["user_id"], role=GrantRole(row["role"]),
                 created_at=float(row["created_at"]), invite_id=row["invite_id"],
                 revoked_at=_time(row["revoked_at"]))


def _runtime(row: Row) -> Runtime:
    return Runtime(id=row["id"], user_id=row["user_id"], role=WorkloadRole(row["role"]),
                   backend=row["backend"], host=row["host"], handle=row["handle"],
                   address=row["address"], state=RuntimeState(row["state"]),
                   limits=json.loads(row["limits"]), created_at=float(row["created_at"]),
                   updated_at=float(row["updated_at"]), operation_id=row["operation_id"],
                   reason=row["reason"], restarts=row["restarts"], oom_kills=row["oom_kills"])


def _operation(row: Row) -> Operation:
    return Operation(id=row["id"], user_id=row["user_id"], kind=row["kind"], step=row["step"],
                     state=OperationState(row["state"]), targets=json.loads(row["targets"]),
                     created_at=float(row["created_at"]), updated_at=float(row["updated_at"]),
                     error=row["error"])


def _snapshot(row: Row) -> Snapshot:
    return Snapshot(id=row["id"], user_id=row["user_id"], runtime_id=row["runtime_id"],
                    name=row["name"], path=row["path"], size_bytes=row["size_bytes"],
                    sha256=row["sha256"], created_at=float(row["created_at"]),
                    depends_on=json.loads(row["depends_on"]), kind=row["kind"])


def _migration(row: Row) -> Migration:
    return Migration(id=row["id"], runtime_id=row["runtime_id"], user_id=row["user_id"],
                     from_host=row["from_host"], to_host=row["to_host"],
                     strategy=row["strategy"], status=row["status"],
                     started_at=float(row["started_at"]), completed_at=_time(row["completed_at"]),
                     checkpoint_ms=row["checkpoint_ms"], transfer_ms=row["transfer_ms"],
                     restore_ms=row["restore_ms"], error=row["error"])


def _workload_account(row: Row) -> WorkloadAccount:
    return WorkloadAccount(user_id=row["user_id"], uid=int(row["uid"]), gid=int(row["gid"]),
                           created_at=float(row["created_at"]))


def _webhook_delivery(row: Row) -> WebhookDelivery:
    return WebhookDelivery(
        seq=int(row["seq"]), id=row["id"], webhook=row["webhook"], url=row["url"],
        event_id=row["event_id"], event_seq=int(row["event_seq"]), event_type=row["event_type"],
        user_id=row["user_id"], attempt=int(row["attempt"]), outcome=row["outcome"],
        status_code=None if row["status_code"] is None else int(row["status_code"]),
        error=row["error"], duration_ms=int(row["duration_ms"]),
        created_at=float(row["created_at"]))


def _event(row: Row) -> Event:
    return Event(seq=row["seq"], id=row["id"], type=row["type"], user_id=row["user_id"],
                 data=json.loads(row["data"]), created_at=float(row["created_at"]))


__all__ = ["ForeignKeyViolation", "SqlStorage", "Tx", "UniqueViolation"]
