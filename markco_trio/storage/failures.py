"""What a storage failure means to its caller, whichever database is behind it.

- `InvalidCursor`: a paging cursor the storage did not make: the client's mistake, a 400
  (`bad_cursor`) wherever it surfaces.
- `StorageUnavailable`: the database cannot do what was asked for a reason an operator must
  fix — it is read-only, the disk is full, an I/O error, the server is gone. `cause` names it
  in a few words ("database is read-only", "disk full"); the API answers 503
  `storage_unavailable` with it, and the daemon logs it in one line, not a traceback.

Both drivers (SQLite built in, the PostgreSQL plugin) classify their own errors into these.
"""

from __future__ import annotations

from ..errors import StorageError


class InvalidCursor(ValueError):
    """A paging cursor this storage did not make (mistyped, truncated, from another listing)."""


class StorageUnavailable(StorageError):
    """The database cannot serve the request until an operator acts; `cause` says why."""

    def __init__(self, cause: str, detail: str = "") -> None:
        super().__init__(f"storage unavailable: {cause}" + (f" ({detail})" if detail else ""))
        self.cause = cause
        self.detail = detail
