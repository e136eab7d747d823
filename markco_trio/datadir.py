"""The data dir, checked before anything else starts (`markco run`).

A data dir that is a regular file, cannot be created, or cannot be written ends the start with
ONE line naming the path and the fix (a `MarkcoError`), instead of a traceback from wherever it
was first used (the SQLite file, the sockets, the users' directories).
"""

from __future__ import annotations

import errno
import os
import pwd
import tempfile
from pathlib import Path

from .errors import MarkcoError

__all__ = ["DataDirError", "prepare_data_dir"]


class DataDirError(MarkcoError):
    """The data dir cannot be used; the message names the path and what to do."""


def _who() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _existing_ancestor(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")


def _why(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"is not writable by {_who()}"
    if exc.errno == errno.ENOSPC:
        return "is on a full disk"
    return f"cannot be written ({exc.strerror or exc})"


def prepare_data_dir(path: Path) -> None:
    """Create `path` (0700) if needed and check that this process can write in it; raise
    `DataDirError` saying what is wrong and how to fix it."""
    fix = "or set [server] data_dir to another directory"
    if path.exists() and not path.is_dir():
        raise DataDirError(f"data_dir {path} is a file, not a directory: move it away, {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:  # a parent is a file
        raise DataDirError(f"cannot create data_dir {path}: a part of that path is a file, "
                           f"not a directory; {fix}") from None
    except OSError as exc:
        parent = _existing_ancestor(path)
        raise DataDirError(
            f"cannot create data_dir {path}: {parent} {_why(exc)}; create it yourself "
            f"(mkdir -p {path} && chown {_who()} {path}), {fix}") from None
    try:  # os.access says yes to root on a read-only file system: really write
        fd, probe = tempfile.mkstemp(prefix=".markco-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DataDirError(f"data_dir {path} {_why(exc)}: fix its permissions or mount "
                           f"(chown {_who()} {path}), {fix}") from None
