"""`SqliteStorage`: the embedded default storage, one SQLite file in the data dir.

WAL mode lets readers run while one writer writes. Writes take the database lock up front
(`BEGIN IMMEDIATE`), so a transaction never fails half-way to upgrade a read lock; one writer
connection behind a lock, a few reader connections (`query_only`), each used by one worker
thread at a time. The queries themselves are `SqlStorage`'s.
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, ClassVar

import trio

from ..errors import AlreadyRunning, StorageError
from . import schema
from .failures import StorageUnavailable
from .sql import ForeignKeyViolation, SqlStorage, Tx, UniqueViolation

_INDEX_MESSAGE = re.compile(r"index '(?P<name>[^']+)'")

# SQLite's primary result codes that only an operator can clear, and what to call them.
_UNAVAILABLE = {
    sqlite3.SQLITE_READONLY: "database is read-only",
    sqlite3.SQLITE_FULL: "disk full",
    sqlite3.SQLITE_IOERR: "I/O error on the database file",
    sqlite3.SQLITE_CANTOPEN: "cannot open the database file",
    sqlite3.SQLITE_CORRUPT: "database file is damaged",
    sqlite3.SQLITE_NOTADB: "database file is damaged",
    sqlite3.SQLITE_BUSY: "database is locked by another process",
    sqlite3.SQLITE_PERM: "no permission to write the database file",
}


_OS_CAUSES = {
    errno.EROFS: "database is read-only (its file system is mounted read-only)",
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "no permission to write the database's directory",
    errno.EPERM: "no permission to write the database's directory",
    errno.EIO: "I/O error on the database file",
}


def _diagnose_directory(directory: Path) -> str | None:
    """Why nothing can be written in `directory` (read-only, full, forbidden), or None."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".markco-write-check-", dir=directory)
    except OSError as exc:
        return _OS_CAUSES.get(exc.errno or 0)
    os.close(fd)
    os.unlink(probe)
    return None


def _unavailable_file(path: Path, exc: OSError, what: str) -> StorageUnavailable | None:
    """`exc` (from opening `path`) as `StorageUnavailable`, when an operator must fix it."""
    cause = _OS_CAUSES.get(exc.errno or 0)
    if cause is None:
        return None
    return StorageUnavailable(cause, f"cannot open {what} {path}: {exc.strerror}")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class SqliteStorage(SqlStorage):
    """Storage in the SQLite file `path` (its directory must exist; the file is created 0600).

    `readers` connections serve reads concurrently; one connection serves writes.
    `busy_timeout_ms` is how long a write waits for another process (the `markco` CLI, say)
    to finish its own write before failing with `StorageError`.
    """

    name = "sqlite"
    sql_tokens = schema.SQLITE_TOKENS
    begin_read = "BEGIN"
    begin_write = "BEGIN IMMEDIATE"
    driver_errors: ClassVar[tuple[type[Exception], ...]] = (sqlite3.Error,)

    def __init__(self, path: Path, *, readers: int = 4, busy_timeout_ms: int = 5000) -> None:
        if readers < 1:
            raise ValueError(f"readers must be at least 1, not {readers}")
        super().__init__(read_limiter=trio.CapacityLimiter(readers),
                         write_limiter=trio.CapacityLimiter(1))
        self.path = Path(path)
        self.readers = readers
        self.busy_timeout_ms = busy_timeout_ms
        self._writer: sqlite3.Connection | None = None
        self._writer_lock = threading.Lock()
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._connections: list[sqlite3.Connection] = []

    def __repr__(self) -> str:
        return f"SqliteStorage({str(self.path)!r})"

    @property
    def lock_path(self) -> Path:
        """The file `instance_lock` locks: `<db path>.lock`."""
        return self.path.with_name(self.path.name + ".lock")

    # ------------------------------------------------------------------ connections

    def _open(self) -> None:
        if self._connections:
            raise StorageError(f"{self!r} is already open")
        if not self.path.parent.is_dir():
            raise StorageError(f"cannot open the database {self.path}: the directory "
                               f"{self.path.parent} does not exist (create it, or fix data_dir)")
        # Create the file ourselves: SQLite would create it with the umask's permissions, and
        # it holds session and token hashes. SQLite gives its -wal/-shm files the same mode.
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        except OSError as exc:
            unavailable = _unavailable_file(self.path, exc, "the database")
            if unavailable is None:
                raise
            raise unavailable from None
        try:
            writer = self._new_connection()
            self._connections.append(writer)
            mode = self._enable_wal(writer)
            if mode != "wal":
                raise StorageError(f"cannot use WAL mode for {self.path} (got {mode!r}); "
                                   "put the data dir on a local filesystem")
            for _ in range(self.readers):
                reader = self._new_connection()
                reader.execute("PRAGMA query_only = ON")
                self._connections.append(reader)
                self._idle_readers.put(reader)
        except BaseException as exc:
            self._close()
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"cannot open the database {self.path}: {exc}") from exc
            raise
        self._writer = writer

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switch the file to WAL (a no-op once it is); return the journal mode now in use."""
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
                return str(mode)
            except sqlite3.OperationalError as exc:
                # The switch needs the file to itself, and SQLite does not wait (busy_timeout)
                # for it: a new file opened by two processes at once fails here. Retry.
                busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _new_connection(self) -> sqlite3.Connection:
        # isolation_level=None: the sqlite3 module must not begin transactions behind our back;
        # SqlStorage begins them explicitly (BEGIN IMMEDIATE for writes).
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000,
                               isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _close(self) -> None:
        self._writer = None
        self._idle_readers = queue.SimpleQueue()
        connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    @contextmanager
    def _connect(self, write: bool) -> Iterator[sqlite3.Connection]:
        if not self._connections:
            raise StorageError(f"{self!r} is not open: use it as `async with storage:`")
        if write:
            with self._writer_lock:
                assert self._writer is not None
                yield self._ready(self._writer)
        else:
            # Never blocks: the read limiter admits as many threads as there are readers.
            conn = self._idle_readers.get()
            try:
                yield self._ready(conn)
            finally:
                self._idle_readers.put(conn)

    @staticmethod
    def _ready(conn: sqlite3.Connection) -> sqlite3.Connection:
        # A transaction left open by a failed ROLLBACK would make the next BEGIN fail.
        if conn.in_transaction:
            conn.rollback()
        return conn

    def _interrupt(self, conn: Any) -> None:
        conn.interrupt()

    def _unavailable_cause(self, exc: Exception) -> str | None:
        code = getattr(exc, "sqlite_errorcode", None)
        if not isinstance(code, int):
            return None
        # Extended result codes keep the primary code in their low byte.
        primary = code & 0xFF
        if primary in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
            # SQLite says "disk I/O error" for a file system gone read-only (ext4's
            # errors=remount-ro) or full: ask the file system itself, once, on failure.
            diagnosed = _diagnose_directory(self.path.parent)
            if diagnosed is not None:
                return diagnosed
        return _UNAVAILABLE.get(primary)

    def _has_table(self, tx: Tx, table: str) -> bool:
        return tx.one("SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = ?",
                      (table,)) is not None

    def _constraint_violation(self, conn: Any, exc: Exception) -> Exception | None:
        if not isinstance(exc, sqlite3.IntegrityError):
            return None
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
            return ForeignKeyViolation(str(exc))
        if code in (sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY):
            return UniqueViolation(self._violated_index(conn, str(exc)))
        return None

    @staticmethod
    def _violated_index(conn: sqlite3.Connection, message: str) -> str:
        """The name of the unique index `message` complains about, spelled as PostgreSQL would
        (`<table>_pkey` for a primary key), so both drivers report the same names.

        SQLite names an expression index ("UNIQUE constraint failed: index 'users_email'") but
        reports a column index by its columns ("...: users.username"); find which index that is.
        """
        detail = message.partition("constraint failed: ")[2]
        named = _INDEX_MESSAGE.fullmatch(detail)
        if named:
            return named.group("name")
        qualified = [part.strip().split(".", 1) for part in detail.split(",")]
        if not qualified or any(len(part) != 2 for part in qualified):
            return detail
        table = qualified[0][0]
        columns = [column for _, column in qualified]
        for _, index, unique, origin, _ in conn.execute(f"PRAGMA index_list({_quote(table)})"):
            if not unique:
                continue
            indexed = [row[2] for row in conn.execute(f"PRAGMA index_info({_quote(index)})")]
            if indexed == columns:
                return f"{table}_pkey" if origin == "pk" else str(index)
        return detail

    # ------------------------------------------------------------------ single instance

    @asynccontextmanager
    async def instance_lock(self) -> AsyncIterator[None]:
        """Hold an exclusive `flock` on `<db path>.lock` while the block runs; `AlreadyRunning`
        if another process (or another holder in this one) has it."""
        fd = await trio.to_thread.run_sync(self._take_lock)
        try:
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _take_lock(self) -> int:
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            raise StorageError(f"cannot create the lock file {self.lock_path}: the directory "
                               f"{self.lock_path.parent} does not exist") from None
        except OSError as exc:
            unavailable = _unavailable_file(self.lock_path, exc, "the lock file")
            if unavailable is None:
                raise
            raise unavailable from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise AlreadyRunning(
                f"{self.lock_path} is locked{f' by pid {holder}' if holder else ''}: another "
                f"markco daemon uses this data dir; stop it, or give this one another data dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The holder's pid, for the message above and for people looking at the file.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd
