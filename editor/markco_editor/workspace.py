"""The user's files: listing, reading and atomic writing, every path confined to one directory.

Blocking on purpose (plain `os` calls); callers run these methods in a worker thread. The
confinement rules, in the order they are checked, for a path given by a client:

1. non-empty, at most 1024 characters, no NUL, no backslash;
2. relative (no leading `/`), and no empty, `.` or `..` segment;
3. no hidden segment (starting with `.`): dotfiles, `.venv`, `.git` are not the editor's business;
4. a markdown name (`.md`, `.markdown`);
5. once symbolic links are resolved, still inside the directory, and rules 3-4 still hold for
   the resolved path (a link may point inside, never out).

Resolution happens before each operation; a link swapped in between the check and the write is
not defended against, because whoever can create links here already runs code as the user.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

__all__ = [
    "MARKDOWN_SUFFIXES",
    "MAX_FILE_BYTES",
    "FileEntry",
    "Listing",
    "Workspace",
    "WorkspaceError",
    "write_failed",
]

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_LISTED = 5000
_MAX_PATH_CHARS = 1024
# Directories never listed (besides hidden and `_`-prefixed ones): environments and packages.
_SKIPPED_DIRS = frozenset({"node_modules", "venv", "site-packages", "__pycache__"})
_NEW_FILE_MODE = 0o644


class WorkspaceError(Exception):
    """A refused or failed file operation, with the HTTP status and error code to report."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class FileEntry:
    """One markdown file: its path relative to the workspace and its current version."""

    path: str
    size: int
    mtime: float
    version: str

    @classmethod
    def from_stat(cls, path: str, st: os.stat_result) -> FileEntry:
        """Describe `path` from its `stat`; the version changes whenever the file does."""
        return cls(path=path, size=st.st_size, mtime=st.st_mtime, version=_version(st))

    def to_json(self) -> dict[str, object]:
        """The JSON shape the API returns (`mtime` as ISO-8601 UTC)."""
        return {
            "path": self.path,
            "size": self.size,
            "mtime": datetime.fromtimestamp(self.mtime, UTC).isoformat().replace("+00:00", "Z"),
            "version": self.version,
        }


@dataclass(frozen=True)
class Listing:
    """The markdown files of a workspace, sorted by path; `truncated` past `MAX_LISTED`."""

    files: tuple[FileEntry, ...]
    truncated: bool


def _version(st: os.stat_result) -> str:
    # The inode is part of it because every save renames a new file into place: two saves
    # inside one coarse mtime tick with the same size still get different versions.
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


class Workspace:
    """The directory holding one user's files; every method confines its path to it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve(strict=True)

    # -- confinement -------------------------------------------------------------------------

    def resolve(self, path: str, *, markdown: bool = True) -> tuple[str, Path]:
        """Check a client-given relative path; return it normalised and its real location.
        `markdown=False` allows any file name (assets, folders) under the same rules.

        Raises `WorkspaceError` (400 `bad_path`/`not_markdown`, 403 `outside_workspace`)
        naming what was wrong.
        """
        rel = _check_relative(path, markdown=markdown)
        candidate = self.root.joinpath(*rel.parts)
        try:
            real = Path(os.path.realpath(candidate))
        except (OSError, ValueError) as exc:
            raise WorkspaceError(400, "bad_path", f"{path!r} cannot be resolved: {exc}") from None
        if not real.is_relative_to(self.root) or real == self.root:
            raise WorkspaceError(
                403,
                "outside_workspace",
                f"{path!r} leads outside your files (through a symbolic link); "
                "only files inside your directory can be opened",
            )
        # A link inside may point at a hidden or non-markdown file: the rules hold for both ends.
        _check_relative(real.relative_to(self.root).as_posix(), shown=path, markdown=markdown)
        return rel.as_posix(), real

    def read_bytes(self, path: str) -> bytes:
        """Any regular file's bytes (an asset), confined like `read`; 404 if absent, 413 if
        larger than `MAX_FILE_BYTES`."""
        rel, real = self.resolve(path, markdown=False)
        return _read_regular(rel, real)[1]

    def write_bytes(self, path: str, data: bytes, *, exclusive: bool) -> str:
        """Write any file (an asset) atomically, confined like `write`; `exclusive` refuses
        to replace one (409 `exists`). Returns the normalised path."""
        rel, real = self.resolve(path, markdown=False)
        if len(data) > MAX_FILE_BYTES:
            raise WorkspaceError(413, "too_large", f"{rel!r} would be larger than "
                                 f"{MAX_FILE_BYTES} bytes")
        self._make_parents(rel, real, existed=False)
        try:
            _write_atomic(real, data, mode=_NEW_FILE_MODE, exclusive=exclusive)
        except FileExistsError:
            raise WorkspaceError(409, "exists", f"{rel!r} already exists") from None
        except OSError as exc:
            raise write_failed(rel, exc, existed=not exclusive) from None
        return rel

    def delete(self, path: str) -> None:
        """Remove one markdown file (never a folder); 404 if absent."""
        rel, real = self.resolve(path)
        try:
            if not stat.S_ISREG(os.lstat(real).st_mode):
                raise WorkspaceError(400, "not_a_file", f"{rel!r} is not a regular file")
            os.unlink(real)
        except FileNotFoundError:
            raise WorkspaceError(404, "not_found", f"{rel!r} does not exist") from None

    def move(self, source: str, target: str) -> str:
        """Rename a markdown file inside the workspace; 409 if the target exists."""
        src_rel, src = self.resolve(source)
        dst_rel, dst = self.resolve(target)
        if not src.is_file():
            raise WorkspaceError(404, "not_found", f"{src_rel!r} does not exist")
        self._make_parents(dst_rel, dst, existed=False)
        try:
            os.link(src, dst)  # refuses to replace an existing file
        except FileExistsError:
            raise WorkspaceError(409, "exists", f"{dst_rel!r} already exists") from None
        except OSError as exc:
            raise write_failed(dst_rel, exc, existed=False) from None
        os.unlink(src)
        return dst_rel

    # -- reading -----------------------------------------------------------------------------

    def list_markdown(self) -> Listing:
        """Every markdown file below the root, skipping hidden and `_` directories, `.venv`,
        `node_modules` and links leading out; at most `MAX_LISTED` entries."""
        found: list[FileEntry] = []
        truncated = False
        # followlinks=False: a linked directory could lead out or loop; linked files are
        # checked one by one below.
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if _listable_dir(d))
            base = Path(dirpath)
            for name in sorted(filenames):
                if name.startswith(".") or PurePosixPath(name).suffix.lower() not in (
                    MARKDOWN_SUFFIXES
                ):
                    continue
                full = base / name
                entry = self._entry_if_inside(full)
                if entry is None:
                    continue
                if len(found) >= MAX_LISTED:
                    truncated = True
                    break
                found.append(entry)
            if truncated:
                break
        found.sort(key=lambda e: e.path)
        return Listing(files=tuple(found), truncated=truncated)

    def _entry_if_inside(self, full: Path) -> FileEntry | None:
        try:
            st = full.stat()  # follows a link: we describe what would be opened
            if full.is_symlink():
                real = Path(os.path.realpath(full))
                if not real.is_relative_to(self.root):
                    return None
        except OSError:
            return None  # vanished, or a dangling link
        if not stat.S_ISREG(st.st_mode):
            return None
        return FileEntry.from_stat(full.relative_to(self.root).as_posix(), st)

    def read(self, path: str) -> tuple[FileEntry, str]:
        """The file's entry and its text. 404 if absent, 413 if too large, 415 if not UTF-8."""
        rel, real = self.resolve(path)
        st, data = _read_regular(rel, real)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise WorkspaceError(415, "not_text", f"{rel!r} is not UTF-8 text") from None
        return FileEntry.from_stat(rel, st), text

    # -- writing -----------------------------------------------------------------------------

    def write(
        self, path: str, text: str, *, base_version: str | None = None
    ) -> tuple[FileEntry, bool]:
        """Replace (or create) the file atomically: a temporary file renamed into place.
        Returns the new entry and whether the file was created.

        With `base_version`, the write is refused with 409 `conflict` unless the file on disk
        still has that version (someone else saved since it was opened).
        """
        rel, real = self.resolve(path)
        data = _encode(rel, text)
        mode = _NEW_FILE_MODE
        try:
            st = os.stat(real)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise write_failed(rel, exc, existed=True) from None
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise WorkspaceError(400, "not_a_file", f"{rel!r} is not a regular file")
            mode = stat.S_IMODE(st.st_mode)
        if base_version is not None:
            current = None if st is None else _version(st)
            if current != base_version:
                raise WorkspaceError(
                    409,
                    "conflict",
                    f"{rel!r} changed on disk since you opened it"
                    + (" (it was deleted)" if st is None else "")
                    + "; reload it, or save again without a base version to overwrite",
                )
        self._make_parents(rel, real, existed=st is not None)
        try:
            new = _write_atomic(real, data, mode=mode, exclusive=False)
        except OSError as exc:
            raise write_failed(rel, exc, existed=st is not None) from None
        return FileEntry.from_stat(rel, new), st is None

    def create(self, path: str, text: str = "") -> FileEntry:
        """Create a new file atomically; 409 `exists` if there is already one at `path`."""
        rel, real = self.resolve(path)
        data = _encode(rel, text)
        self._make_parents(rel, real, existed=False)
        try:
            new = _write_atomic(real, data, mode=_NEW_FILE_MODE, exclusive=True)
        except FileExistsError:
            raise WorkspaceError(409, "exists", f"{rel!r} already exists") from None
        except OSError as exc:
            raise write_failed(rel, exc, existed=False) from None
        return FileEntry.from_stat(rel, new)

    def _make_parents(self, rel: str, real: Path, *, existed: bool) -> None:
        # `real` is inside the root (checked by resolve), so its parents are too.
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise WorkspaceError(
                400, "bad_path", f"{rel!r}: a parent of this path is a file, not a folder"
            ) from None
        except OSError as exc:
            raise write_failed(rel, exc, existed=existed) from None


def _read_regular(rel: str, real: Path) -> tuple[os.stat_result, bytes]:
    """A regular file's status and bytes: 404 if absent, 400 if not a regular file, 413 if
    larger than `MAX_FILE_BYTES`."""
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise WorkspaceError(404, "not_found", f"{rel!r} does not exist") from None
    except IsADirectoryError:
        raise WorkspaceError(400, "not_a_file", f"{rel!r} is a directory") from None
    except OSError as exc:
        raise WorkspaceError(500, "io_error", f"{rel!r} cannot be read: {exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise WorkspaceError(400, "not_a_file", f"{rel!r} is not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise WorkspaceError(
                413, "too_large", f"{rel!r} is {st.st_size} bytes; the limit is "
                f"{MAX_FILE_BYTES}"
            )
        return st, f.read(MAX_FILE_BYTES + 1)


def write_failed(rel: str, exc: OSError, *, existed: bool) -> WorkspaceError:
    """The error for a save the system refused (disk full, read-only, permissions, I/O):
    a status and code per cause, and a message saying what happened to the file — the write
    is atomic, so a file that existed still has its previous content."""
    kept = ("your previous version is unchanged on disk" if existed
            else "nothing was written")
    cause = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return WorkspaceError(
            507, "disk_full", f"{rel!r} was not saved: there is no space left for your files "
            f"({cause}); {kept}. Free some space (delete or shrink files), then save again")
    if exc.errno == errno.EROFS:
        return WorkspaceError(
            503, "read_only", f"{rel!r} was not saved: your files are on a read-only file "
            f"system right now; {kept}. Try again later, or ask your administrator")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return WorkspaceError(
            403, "permission_denied", f"{rel!r} was not saved: permission denied ({cause}); "
            f"{kept}. Check the permissions of the file and its folder")
    if exc.errno == errno.ENAMETOOLONG:
        return WorkspaceError(400, "bad_path", f"{rel!r}: a name in this path is too long")
    return WorkspaceError(
        500, "io_error", f"{rel!r} was not saved: the file system failed ({cause}); {kept}. "
        "Try again; if it keeps failing, tell your administrator")


def _check_relative(path: str, *, shown: str | None = None,
                    markdown: bool = True) -> PurePosixPath:
    shown = path if shown is None else shown
    if not isinstance(path, str) or not path:
        raise WorkspaceError(400, "bad_path", "a file path is required")
    if len(path) > _MAX_PATH_CHARS:
        raise WorkspaceError(400, "bad_path", f"the path is longer than {_MAX_PATH_CHARS} chars")
    if "\x00" in path:
        raise WorkspaceError(400, "bad_path", "the path contains a NUL character")
    if "\\" in path:
        raise WorkspaceError(400, "bad_path", f"{shown!r} contains a backslash; use `/`")
    if path.startswith("/"):
        raise WorkspaceError(
            400, "bad_path", f"{shown!r} is absolute; give a path relative to your files"
        )
    segments = path.split("/")
    if ".." in segments:
        raise WorkspaceError(400, "bad_path", f"{shown!r} contains '..'; paths cannot go up")
    if any(s in ("", ".") for s in segments):
        raise WorkspaceError(400, "bad_path", f"{shown!r} has an empty or '.' segment")
    if any(s.startswith(".") for s in segments):
        raise WorkspaceError(
            400, "bad_path", f"{shown!r} goes through a hidden file or folder, which the editor "
            "does not open"
        )
    rel = PurePosixPath(path)
    if markdown and rel.suffix.lower() not in MARKDOWN_SUFFIXES:
        raise WorkspaceError(
            400, "not_markdown", f"{shown!r} is not a markdown file; the editor opens .md files"
        )
    return rel


def _listable_dir(name: str) -> bool:
    return not (name.startswith((".", "_")) or name in _SKIPPED_DIRS)


def _encode(rel: str, text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > MAX_FILE_BYTES:
        raise WorkspaceError(
            413, "too_large", f"{rel!r} would be {len(data)} bytes; the limit is {MAX_FILE_BYTES}"
        )
    return data


def _write_atomic(target: Path, data: bytes, *, mode: int, exclusive: bool) -> os.stat_result:
    """Write `data` to a temporary file beside `target`, flush it to disk, then move it into
    place: readers see the old content or the new, never a part. `exclusive` never replaces an
    existing file (FileExistsError)."""
    # Hidden name and non-markdown suffix: a listing never shows a half-written file.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".markco-", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, target)  # fails if target exists: an atomic create-if-absent
            tmp.unlink()
        else:
            os.replace(tmp, target)
        st = os.stat(target)
        _fsync_dir(target.parent)
        return st
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some filesystems refuse, which costs only durability.
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
