"""`PostgresStorage`: the `Storage` role on PostgreSQL, through psycopg 3's SYNC driver.

psycopg's async API runs only on asyncio, so every transaction runs in a worker thread on a
connection from a `psycopg_pool.ConnectionPool`; `SqlStorage` owns the queries, the threads and
the limiter (sized to the pool). Each pooled connection has `statement_timeout` and
`lock_timeout` set, so a stuck query or lock wait fails instead of holding a worker forever; a
cancelled call cancels its query on the server (`cancel_safe`) and waits for the rollback.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from functools import lru_cache, partial
from typing import Any, ClassVar

import psycopg
import psycopg.errors
import trio
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from markco_trio.errors import AlreadyRunning, StorageError
from markco_trio.storage import schema
from markco_trio.storage.sql import ForeignKeyViolation, SqlStorage, Tx, UniqueViolation


def _advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name` (advisory keys are bigints)."""
    return int.from_bytes(hashlib.sha256(f"markco:{name}".encode()).digest()[:8], "big",
                          signed=True)


# Advisory locks are per database, so daemons on different databases never collide.
INSTANCE_LOCK_KEY = _advisory_key("instance")


@lru_cache(maxsize=512)
def _translate(sql: str) -> str:
    # SqlStorage writes `?`; psycopg wants `%s`, and a literal `%` must be doubled.
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresStorage(SqlStorage):
    """Storage in the PostgreSQL database `dsn` (a libpq connection string or URL).

    `pool_size` connections serve transactions (the limiter admits as many at a time);
    `statement_timeout_ms` and `lock_timeout_ms` bound every statement and lock wait.
    """

    name = "postgres"
    sql_tokens = schema.POSTGRES_TOKENS
    begin_read = "BEGIN READ ONLY"
    begin_write = "BEGIN"
    driver_errors: ClassVar[tuple[type[Exception], ...]] = (psycopg.Error,)

    def __init__(self, dsn: str, *, pool_size: int = 4, statement_timeout_ms: int = 30000,
                 lock_timeout_ms: int = 5000) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        # Reads and writes share the pool, hence one limiter for both.
        limiter = trio.CapacityLimiter(pool_size)
        super().__init__(read_limiter=limiter, write_limiter=limiter)
        self.dsn = dsn
        self.pool_size = pool_size
        self.statement_timeout_ms = statement_timeout_ms
        self.lock_timeout_ms = lock_timeout_ms
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None

    def __repr__(self) -> str:
        return f"PostgresStorage({self.where!r})"

    @property
    def where(self) -> str:
        """The database, for messages: `dbname on host:port`, never the password."""
        try:
            params = conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError:
            return "an unparsable DSN"
        return (f"{params.get('dbname', '(default database)')} on "
                f"{params.get('host', '(default host)')}:{params.get('port', 5432)}")

    # ------------------------------------------------------------------ connections

    def _open(self) -> None:
        if self._pool is not None:
            raise StorageError(f"{self!r} is already open")
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self.dsn, min_size=self.pool_size, max_size=self.pool_size, open=False,
            configure=self._configure, kwargs={"application_name": "markco"},
            name="markco-storage")
        try:
            # One direct connection first: a wrong DSN or a stopped server then fails at once
            # with libpq's own reason, instead of a pool timeout 30 s later.
            psycopg.connect(self.dsn, connect_timeout=10).close()
            pool.open(wait=True, timeout=30.0)
        except psycopg.Error as exc:
            pool.close()
            raise StorageError(f"cannot connect to PostgreSQL database {self.where}: {exc}; "
                               "check the dsn and that the server is running") from exc
        self._pool = pool

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        # Autocommit: SqlStorage begins and ends every transaction itself, and the settings
        # below must persist for the session, not for a transaction.
        conn.autocommit = True
        conn.execute("SELECT set_config('statement_timeout', %s, false),"
                     " set_config('lock_timeout', %s, false)",
                     (str(self.statement_timeout_ms), str(self.lock_timeout_ms)))

    def _close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _connect(self, write: bool) -> AbstractContextManager[psycopg.Connection[Any]]:
        if self._pool is None:
            raise StorageError(f"{self!r} is not open: use it as `async with storage:`")
        return self._pool.connection()

    def _translate(self, sql: str) -> str:
        return _translate(sql)

    def _serialize(self, tx: Tx, what: str) -> None:
        # Released at COMMIT or ROLLBACK.
        tx.execute("SELECT pg_advisory_xact_lock(?)", (_advisory_key(what),))

    def _interrupt(self, conn: Any) -> None:
        cancel_safe = getattr(conn, "cancel_safe", None)  # psycopg >= 3.2
        if cancel_safe is not None:
            cancel_safe(timeout=5.0)
        else:
            conn.cancel()

    def _has_table(self, tx: Tx, table: str) -> bool:
        return tx.one("SELECT to_regclass(?) IS NOT NULL AS found", (table,)) == {"found": True}

    def _constraint_violation(self, conn: Any, exc: Exception) -> Exception | None:
        if isinstance(exc, psycopg.errors.UniqueViolation):
            return UniqueViolation(exc.diag.constraint_name or str(exc))
        if isinstance(exc, psycopg.errors.ForeignKeyViolation):
            return ForeignKeyViolation(str(exc))
        return None

    def _unavailable_cause(self, exc: Exception) -> str | None:
        # By SQLSTATE class where it is specific enough (PostgreSQL's errcodes appendix).
        state = getattr(exc, "sqlstate", None) or ""
        if state == "25006":
            return "database is read-only"
        if state == "53100":
            return "disk full on the database server"
        if state.startswith("53"):
            return "the database server is out of resources"
        if state == "58030":
            return "I/O error on the database server"
        if state in ("57P01", "57P02", "57P03"):
            return "the database server is shutting down or starting"
        if state == "57014":
            return "a database statement timed out"
        if isinstance(exc, psycopg.OperationalError) and not state:
            return "cannot reach the database server"
        return None

    # ------------------------------------------------------------------ single instance

    @asynccontextmanager
    async def instance_lock(self) -> AsyncIterator[None]:
        """Hold a session advisory lock on a dedicated connection while the block runs;
        `AlreadyRunning` if another session holds it. Closing the connection releases it."""
        # Autocommit: the lock belongs to the session, and an idle-in-transaction session
        # would hold back vacuum for the daemon's whole life. Keepalives: a dead peer is
        # noticed by the server, which then frees the lock for a successor.
        conn = await trio.to_thread.run_sync(partial(
            psycopg.connect, self.dsn, autocommit=True, application_name="markco instance lock",
            keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3))
        try:
            row = await trio.to_thread.run_sync(
                lambda: conn.execute("SELECT pg_try_advisory_lock(%s)",
                                     (INSTANCE_LOCK_KEY,)).fetchone())
            if not (row and row[0]):
                raise AlreadyRunning(
                    f"the instance lock of PostgreSQL database {self.where} is held: another "
                    "markco daemon uses this database; stop it, or give this one another "
                    "database")
            yield
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(conn.close)
