"""File operations of the (root) daemon inside users' directories, without following links.

A user's code owns everything under `<data_dir>/users/<userId>/` and may plant symlinks there
(`Projects -> /etc`) between two operations of the daemon. So the daemon never hands a path
under a user directory to a call that resolves it: it holds a directory fd and works relative to
it (`openat` with `O_NOFOLLOW`, `dir_fd=` with `follow_symlinks=False`), and a component that
turns out to be a symlink (or not a directory) stops the operation with `UnsafePath`. What is
created there is created with `O_EXCL`, and given to the user with `fchown` on the open fd.

`<data_dir>/users/` itself belongs to the daemon (root, 0711: traversable, not listable), so the
path down to a user directory cannot be swapped by a user; everything below it can.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "UnsafePath",
    "chown_tree",
    "create_file",
    "ensure_dir",
    "open_dir",
    "open_user_dir",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError):
    """A component of a path inside a user directory is a symlink or not a directory."""


def open_dir(name: str, *, dir_fd: int) -> int:
    """Open the directory `name` (one component) relative to `dir_fd`, never through a symlink;
    `UnsafePath` when it is a symlink or not a directory, FileNotFoundError when absent."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"one path component expected, got {name!r}")
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(exc.errno, f"{name} is a symlink or not a directory") from None
        raise


def ensure_dir(name: str, *, dir_fd: int, mode: int = 0o700,
               owner: tuple[int, int] | None = None) -> tuple[int, bool]:
    """The directory `name` under `dir_fd`, created (mode, then owner) if missing: (its fd,
    whether it was created). A symlink in its place is `UnsafePath`, never followed."""
    created = False
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
        created = True
    except FileExistsError:
        pass
    fd = open_dir(name, dir_fd=dir_fd)
    if created:
        os.fchmod(fd, mode)  # the umask may have removed bits
        if owner is not None:
            os.fchown(fd, *owner)
    return fd, created


def create_file(name: str, data: bytes, *, dir_fd: int, mode: int = 0o600,
                owner: tuple[int, int] | None = None) -> bool:
    """Create `name` under `dir_fd` with `data` unless something (a file, a symlink...) already
    has that name: True when created. `O_EXCL` never follows a symlink."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=dir_fd)
    except FileExistsError:
        return False
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return True


@contextmanager
def open_user_dir(user_dir: Path, *, owner: tuple[int, int] | None,
                  users_mode: int = 0o711) -> Iterator[int]:
    """`with open_user_dir(<data_dir>/users/<id>, owner=...) as fd:` — the user directory,
    created if missing (0700, given to `owner`), held open. Its parent (`users/`) is made if
    missing and kept the daemon's: `users_mode` (0711) and owned by the daemon's uid; a parent
    that is a symlink or belongs to someone else is `UnsafePath`. The user directory is made
    0700; when its top does not belong to `owner`, all of it is given to them (`chown_tree`:
    a new directory, or one of an old account)."""
    parent = user_dir.parent
    parent.mkdir(mode=users_mode, parents=True, exist_ok=True)
    parent_fd = os.open(parent, _DIR_FLAGS)
    try:
        st = os.fstat(parent_fd)
        if st.st_uid != os.geteuid():
            raise UnsafePath(errno.EPERM, f"{parent} does not belong to the daemon")
        if stat.S_IMODE(st.st_mode) != users_mode:
            os.fchmod(parent_fd, users_mode)
        fd, _ = ensure_dir(user_dir.name, dir_fd=parent_fd, mode=0o700, owner=owner)
    finally:
        os.close(parent_fd)
    try:
        st = os.fstat(fd)
        if owner is not None and (st.st_uid, st.st_gid) != owner:
            # New, or from another account (the process backend's old shared one): the whole
            # directory becomes the owner's.
            chown_tree(fd, owner)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
        yield fd
    finally:
        os.close(fd)


def chown_tree(dir_fd: int, owner: tuple[int, int]) -> int:
    """Give everything under the directory `dir_fd` (and it) to `owner`, without following a
    single symlink (symlinks themselves are lchown'ed); how many entries changed. For moving a
    directory from an old account to a new one: `os.fwalk` opens each directory relative to its
    parent's fd and checks it is the one it listed, so swapping a directory for a link while the
    walk runs leads nowhere outside. Files with more than one hard link are left alone (one of
    them could be a file from outside the tree)."""
    uid, gid = owner
    changed = 0
    st = os.fstat(dir_fd)
    if (st.st_uid, st.st_gid) != owner:
        os.fchown(dir_fd, uid, gid)
        changed += 1
    for _root, dirs, files, fd in os.fwalk(".", dir_fd=dir_fd, follow_symlinks=False):
        for name in dirs + files:
            try:
                entry = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if entry.st_nlink > 1 and not stat.S_ISDIR(entry.st_mode):
                    continue  # a hard link may be a file from elsewhere: never given away
                if (entry.st_uid, entry.st_gid) != owner:
                    os.chown(name, uid, gid, dir_fd=fd, follow_symlinks=False)
                    changed += 1
            except FileNotFoundError:
                continue  # removed meanwhile
    return changed
