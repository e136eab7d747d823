"""Reading a project from disk without ever leaving it.

Symlink policy: symlinks are REFUSED, all of them, from the user's folder down
(`users/<id>/Projects/<project>/...`). Every path is walked one name at a time from the
directory fd above it, with `O_NOFOLLOW` (and `O_DIRECTORY` for folders), so a symlink
anywhere — `leak.md -> /etc/shadow`, `_assets -> /`, `Projects -> ../other-user/Projects` —
fails to open, and a folder swapped for a symlink between two calls cannot redirect a later
open (there is no check-then-use gap for it to slip into, unlike a realpath check). Only
regular files are read; a FIFO is opened non-blocking so it cannot hang a worker thread, and a
device or socket is refused before it is opened. The data dir itself (`<data_dir>/users`) is
the operator's and may be reached through symlinks.

Every function here BLOCKS: callers run them in `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .fsml import Folder, RelPath, is_listed_folder, is_page_file, is_plain_name, natural_key

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC
_READ_CHUNK = 1 << 20


class Stamp(NamedTuple):
    """What changes when a file changes: modification time, size, inode (a file replaced by
    rename keeps neither)."""

    mtime_ns: int
    size: int
    inode: int


def _stamp(st: os.stat_result) -> Stamp:
    return Stamp(st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True)
class ScanLimits:
    """Bounds on how much of a project the navigation walk looks at: folders deeper than
    `max_depth` are not entered, at most `max_entries` pages and folders are listed, and at
    most `max_dirents` directory entries are read per folder (a folder of a million files
    cannot stall a request)."""

    max_depth: int = 8
    max_entries: int = 2000
    max_dirents: int = 10000


@dataclass(frozen=True)
class Scan:
    """A project's tree as `fsml` sees it, with the mtimes of its folders (what tells us the
    tree changed: adding, removing or renaming an entry touches its folder) and whether a
    limit cut it short."""

    tree: Folder
    folder_mtimes: Mapping[RelPath, int]
    truncated: bool = False


# ----------------------------------------------------------------------------- opening


def _open_dir_at(dir_fd: int, name: str) -> int:
    if not is_plain_name(name):
        raise FileNotFoundError(name)
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


@contextmanager
def _walk(dir_fd: int, folders: RelPath) -> Iterator[int]:
    """An fd of the folder `folders` below `dir_fd`, each step refusing symlinks."""
    fds: list[int] = []
    try:
        current = dir_fd
        for name in folders:
            current = _open_dir_at(current, name)
            fds.append(current)
        yield current
    finally:
        for fd in reversed(fds):
            os.close(fd)


@contextmanager
def open_project(data_dir: Path, user_id: str, project: str) -> Iterator[int]:
    """An fd of `<data_dir>/users/<user_id>/Projects/<project>`; raises OSError when it is
    missing, not a folder, or reached through a symlink below `users/`."""
    # The data dir is the operator's: follow their symlinks up to `users/`, none below it.
    users = os.open(data_dir / "users", _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        with _walk(users, (user_id, "Projects", project)) as fd:
            yield fd
    finally:
        os.close(users)


def folder_identity(dir_fd: int) -> tuple[int, int]:
    """(device, inode) of an open folder: tells whether two opens reached the same folder."""
    st = os.fstat(dir_fd)
    return st.st_dev, st.st_ino


def stat_file(root_fd: int, path: RelPath) -> Stamp | None:
    """The stamp of the regular file at `path`, or None (missing, a symlink, not a regular
    file, or reached through a symlink)."""
    try:
        with _walk(root_fd, path[:-1]) as fd:
            if not is_plain_name(path[-1]):
                return None
            st = os.stat(path[-1], dir_fd=fd, follow_symlinks=False)
    except OSError:
        return None
    return _stamp(st) if stat.S_ISREG(st.st_mode) else None


def read_file(root_fd: int, path: RelPath, max_bytes: int) -> tuple[bytes, Stamp] | None:
    """The content and stamp of the regular file at `path`, or None when it cannot be read
    safely or is larger than `max_bytes`."""
    name = path[-1]
    if not is_plain_name(name):
        return None
    try:
        with _walk(root_fd, path[:-1]) as dir_fd:
            # lstat first: opening a device node can have side effects even when read-only.
            if not stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return None
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return None
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                return None  # it grew while we read it
        return b"".join(chunks), _stamp(st)
    except OSError:
        return None
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- the tree


def scan_tree(root_fd: int, limits: ScanLimits) -> Scan:
    """Walk the project's listed pages and folders (hidden ones are never entered, so neither
    are `.git`, `.venv` or `_build`; `node_modules`-like folders are entered but bounded)."""
    mtimes: dict[RelPath, int] = {}
    budget = limits.max_entries
    truncated = False

    def walk(fd: int, here: RelPath, depth: int) -> Folder:
        nonlocal budget, truncated
        mtimes[here] = os.fstat(fd).st_mtime_ns
        files: list[str] = []
        folders: list[str] = []
        with os.scandir(fd) as entries:
            for count, entry in enumerate(entries):
                if count >= limits.max_dirents:
                    truncated = True
                    break
                # d_type from the directory listing: no stat, and a symlink is its own type.
                if entry.is_dir(follow_symlinks=False):
                    if is_listed_folder(entry.name):
                        folders.append(entry.name)
                elif entry.is_file(follow_symlinks=False) and is_page_file(entry.name):
                    files.append(entry.name)
        files.sort(key=natural_key)
        folders.sort(key=natural_key)
        if len(files) > budget:
            files, truncated = files[:budget], True
        budget -= len(files)
        subs: list[Folder] = []
        for name in folders:
            if budget <= 0 or depth >= limits.max_depth:
                truncated = True
                break
            budget -= 1
            try:
                sub_fd = _open_dir_at(fd, name)
            except OSError:
                continue  # vanished, or swapped for a symlink since the listing
            try:
                subs.append(walk(sub_fd, (*here, name), depth + 1))
            finally:
                os.close(sub_fd)
        return Folder(name=here[-1] if here else "", files=tuple(files), folders=tuple(subs))

    tree = walk(root_fd, (), 0)
    return Scan(tree=tree, folder_mtimes=mtimes, truncated=truncated)


def refresh(root_fd: int, previous: Scan | None, limits: ScanLimits,
            ) -> tuple[Scan, dict[RelPath, Stamp]]:
    """The project's tree — `previous` again when no folder's mtime moved, else a new scan —
    and the current stamp of every listed page (pages edited in place do not touch their
    folder, so their stamps are read every time: one lstat each)."""
    scan = previous if previous is not None and _folders_unchanged(root_fd, previous) \
        else scan_tree(root_fd, limits)
    stamps: dict[RelPath, Stamp] = {}

    def walk(fd: int, folder: Folder, here: RelPath) -> None:
        for name in folder.files:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                stamps[(*here, name)] = _stamp(st)
        for sub in folder.folders:
            try:
                sub_fd = _open_dir_at(fd, sub.name)
            except OSError:
                continue
            try:
                walk(sub_fd, sub, (*here, sub.name))
            finally:
                os.close(sub_fd)

    walk(root_fd, scan.tree, ())
    return scan, stamps


def _folders_unchanged(root_fd: int, scan: Scan) -> bool:
    for path, mtime in scan.folder_mtimes.items():
        try:
            with _walk(root_fd, path) as fd:
                if os.fstat(fd).st_mtime_ns != mtime:
                    return False
        except OSError:
            return False
    return True


def list_projects(data_dir: Path, user_id: str, limits: ScanLimits) -> list[str]:
    """The visible project folders of a user (real folders, not hidden), in natural order."""
    names: list[str] = []
    try:
        users = os.open(data_dir / "users", _DIR_FLAGS & ~os.O_NOFOLLOW)
    except OSError:
        return []
    try:
        with _walk(users, (user_id, "Projects")) as fd, os.scandir(fd) as entries:
            for count, entry in enumerate(entries):
                if count >= limits.max_dirents or len(names) >= limits.max_entries:
                    break
                if entry.is_dir(follow_symlinks=False) and is_listed_folder(entry.name):
                    names.append(entry.name)
    except OSError:
        return []
    finally:
        os.close(users)
    return sorted(names, key=natural_key)
