"""Checkpoint archives on disk: `<data_dir>/snapshots/<user_id>/`, one file per archive.

- The user's directory is 0700 and every archive 0600 (the checkpointer writes it under a
  temporary name and renames it into place once complete; we fsync it and its directory before
  a row records it — a ROW is what makes an archive authoritative, a file alone never is).
- Every archive's sha256 is stored in its row and checked again before a restore: a damaged
  archive is refused (`RestoreIncompatible`, so the caller falls back to a cold start).
- Room is checked before a checkpoint: the archive of a runtime is about its working set, so a
  checkpoint that would leave less than `snapshots_min_free_mib` free, or take the user's
  archives over `snapshots_max_mib`, is refused up front with a message saying so — the
  runtime keeps running and nothing half-written is ever used.
- Garbage collection removes files no row refers to (a checkpoint interrupted by a crash, a
  snapshot deleted while the daemon died) and a checkpointer's leftover work directories
  (dot-directories) — only inside the snapshots tree, never following a link.

Blocking functions: call them with `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
from pathlib import Path

from ...errors import MarkcoError, RestoreIncompatible

MiB = 1 << 20
CHUNK = 4 * MiB
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ARCHIVE_SUFFIX = ".img"


class NoRoom(MarkcoError):
    """A checkpoint was refused before it began: not enough disk space, or the user's archives
    would go over their cap. The runtime keeps running."""


def snapshot_name_ok(name: str) -> bool:
    """A snapshot name: 1-64 of letters, digits, `.`, `_`, `-`, not starting with a dot."""
    return bool(_NAME.match(name))


def user_archive_dir(root: Path, user_id: str) -> Path:
    """`<root>/<user_id>`, created 0700 (and its parent 0700) when missing."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    path = root / user_id
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise MarkcoError(f"{path} is not a directory owned by the daemon")
    os.chmod(path, 0o700)
    return path


def archive_path(root: Path, user_id: str, kind: str, operation_id: str) -> Path:
    """Where the archive of one operation goes (deterministic: the operation log records it
    before anything is written, so reconciliation knows what to look for)."""
    return root / user_id / f"{kind}-{operation_id}{ARCHIVE_SUFFIX}"


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, sha256: str | None) -> None:
    """Refuse a missing or damaged archive (`RestoreIncompatible`: fall back to a cold start)."""
    try:
        actual = sha256_of(path)
    except FileNotFoundError:
        raise RestoreIncompatible(f"the archive {path.name} is missing") from None
    if sha256 is not None and actual != sha256:
        raise RestoreIncompatible(f"the archive {path.name} is damaged (sha256 {actual[:12]}… "
                                  f"is not the recorded {sha256[:12]}…)")


def seal(path: Path) -> int:
    """Make a finished archive durable and private: 0600, its bytes and its directory entry
    fsynced. Returns its size."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o600)
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return size


def used_bytes(directory: Path) -> int:
    """Bytes of the regular files in `directory` (a user's archives, finished or not)."""
    total = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
    return total


def check_room(directory: Path, *, need_bytes: int, max_bytes: int, min_free_bytes: int) -> None:
    """Refuse (`NoRoom`) a checkpoint of about `need_bytes` that would go over the user's cap
    or leave less than `min_free_bytes` on the disk."""
    used = used_bytes(directory)
    if used + need_bytes > max_bytes:
        raise NoRoom(f"your snapshots would take {(used + need_bytes) / MiB:.0f} MiB, over "
                     f"the {max_bytes / MiB:.0f} MiB allowed: delete a snapshot first")
    vfs = os.statvfs(directory)
    free = vfs.f_bavail * vfs.f_frsize
    if free - need_bytes < min_free_bytes:
        raise NoRoom(f"not enough disk space for a checkpoint: about {need_bytes / MiB:.0f} MiB "
                     f"needed, {free / MiB:.0f} MiB free on the disk of {directory}")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error (or its cause) is the disk being full."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def remove_file(path: Path) -> bool:
    """Remove an archive (a regular file only); True if one was there."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    path.unlink()
    return True


def collect_garbage(root: Path, referenced: set[str]) -> list[Path]:
    """Remove every regular file under `root/<user>/` whose path no row refers to; return what
    was removed. Never follows a link; directories other than users' are left alone."""
    removed: list[Path] = []
    try:
        users = list(os.scandir(root))
    except FileNotFoundError:
        return removed
    for user in users:
        if not user.is_dir(follow_symlinks=False):
            continue
        for entry in os.scandir(user.path):
            path = Path(entry.path)
            if entry.is_file(follow_symlinks=False) and str(path) not in referenced:
                try:
                    path.unlink()
                    removed.append(path)
                except FileNotFoundError:
                    pass
            elif entry.is_dir(follow_symlinks=False) and entry.name.startswith("."):
                # a checkpointer's work directory (CRIU images) left by a crash
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed
