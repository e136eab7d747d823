"""One archive file per checkpoint: a tar of CRIU's image directory with a manifest trailer.

Layout (the same trailer as `podman.py`'s engine archives, so one reader knows both):

    <tar members: the image files>             the body (no end-of-archive blocks)
    <tar member `markco-checkpoint.json`>      the trailer: 4096 bytes of JSON, space padded —
                                               format, what the archive depends on, and the
                                               sha256 and length of the body
    <two zero blocks>                          the tar's end

so `tar -t` lists it, the manifest is read with one seek from the end, and the body's hash is
checked while it streams (a restore extracts and checks in one pass; nothing from an archive
whose hash does not match is ever used). Written under a temporary name (0600), fsynced,
renamed into place and the directory fsynced: a half-written archive is never at its path.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import secrets
import tarfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, cast

from markco_trio.errors import CheckpointError, RestoreIncompatible

TRAILER_NAME = "markco-checkpoint.json"
TRAILER_DATA = 4096
BLOCK = 512
END_BLOCKS = 2 * BLOCK
TRAILER_SPAN = BLOCK + TRAILER_DATA + END_BLOCKS
CHUNK = 1 << 20


def _pad(size: int) -> int:
    return -size % BLOCK


def trailer(manifest: Mapping[str, Any]) -> bytes:
    """The trailer member (header + padded JSON) and the tar's two end blocks."""
    data = json.dumps(manifest, sort_keys=True).encode()
    if len(data) > TRAILER_DATA:
        raise CheckpointError(f"checkpoint manifest too large ({len(data)} bytes)")
    info = tarfile.TarInfo(TRAILER_NAME)
    info.size, info.mode, info.mtime = TRAILER_DATA, 0o600, int(time.time())
    return info.tobuf(format=tarfile.USTAR_FORMAT) + data.ljust(TRAILER_DATA, b" ") + \
        bytes(END_BLOCKS)


def read_manifest(path: str | os.PathLike[str], formats: tuple[str, ...]) -> dict[str, Any]:
    """The trailer's manifest; `RestoreIncompatible` when `path` is not an archive of one of
    `formats` (another file, truncated, a damaged trailer). Blocking."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < TRAILER_SPAN:
                raise ValueError("too short")
            f.seek(size - TRAILER_SPAN)
            tail = f.read(TRAILER_SPAN)
        info = tarfile.TarInfo.frombuf(tail[:BLOCK], "utf-8", "surrogateescape")
        if info.name != TRAILER_NAME or info.size != TRAILER_DATA or any(tail[-END_BLOCKS:]):
            raise ValueError("no markco trailer")
        manifest = json.loads(tail[BLOCK:BLOCK + TRAILER_DATA])
        found = manifest.get("format") if isinstance(manifest, dict) else None
        if found not in formats:
            raise ValueError(f"format {found!r}, not one of {list(formats)}")
        if int(manifest.get("body_bytes", -1)) != size - TRAILER_SPAN:
            raise ValueError(f"{size} bytes, the trailer says "
                             f"{int(manifest.get('body_bytes', -1)) + TRAILER_SPAN}")
    except (OSError, ValueError, tarfile.TarError) as exc:
        raise RestoreIncompatible(f"{path} is not a usable checkpoint archive of markco "
                                  f"({type(exc).__name__}: {exc})") from exc
    return cast(dict[str, Any], manifest)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A file written under a temporary name next to `path` (0600), hashed as it goes, and
    renamed into place by `commit` (fsynced first); `discard` removes it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.partial")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.file: BinaryIO | None = os.fdopen(fd, "wb", buffering=0)
        self.whole = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        assert self.file is not None
        self.file.write(data)
        self.whole.update(data)
        self.size += len(data)

    def commit(self) -> tuple[int, str]:
        """fsync, rename into place, fsync the directory; (size, sha256 of every byte)."""
        assert self.file is not None
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        os.replace(self.temporary, self.path)
        _sync_dir(self.path.parent)
        return self.size, self.whole.hexdigest()

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.temporary.unlink(missing_ok=True)


def write_archive(images: Path, manifest: Mapping[str, Any],
                  path: str | os.PathLike[str]) -> tuple[int, str]:
    """Write the files of `images` (flat, as CRIU makes it) and the trailer to `path`,
    atomically; return (size, sha256 of the file). Blocking."""
    out = AtomicFile(path)
    body_bytes = 0

    def emit(data: bytes | memoryview) -> None:
        nonlocal body_bytes
        out.write(data)
        body_bytes += len(data)

    try:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        for entry in sorted(os.scandir(images), key=lambda e: e.name):
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            info = tarfile.TarInfo(entry.name)
            info.size, info.mode, info.mtime = st.st_size, 0o600, int(st.st_mtime)
            emit(info.tobuf(format=tarfile.PAX_FORMAT))
            with open(entry.path, "rb", buffering=0) as f:
                left = st.st_size
                while left:
                    n = f.readinto(view[:min(CHUNK, left)])
                    if not n:
                        raise CheckpointError(f"{entry.path} shrank while being archived")
                    emit(view[:n])
                    left -= n
            emit(bytes(_pad(st.st_size)))
        # The body is the file's beginning: its hash is the file's hash so far (one pass).
        out.write(trailer({**manifest, "body_sha256": out.whole.copy().hexdigest(),
                           "body_bytes": body_bytes}))
        return out.commit()
    except BaseException:
        out.discard()
        raise


def _digests(path: str | os.PathLike[str], length: int) -> tuple[str, str]:
    """(sha256 of the first `length` bytes of `path` — the body —, sha256 of the whole file),
    in ONE pass: the body's hash state, copied, goes on over the trailer. Hashed straight from
    the page cache (an mmap: no copy into Python; hashlib lets go of the GIL on big slices).
    ("", "") when the file is shorter than `length`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < length:
            return "", ""
        if size == 0:
            return digest.hexdigest(), digest.hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                for offset in range(0, length, 8 * CHUNK):
                    digest.update(view[offset:min(offset + 8 * CHUNK, length)])
                whole = digest.copy()
                whole.update(view[length:])
            finally:
                view.release()
    return digest.hexdigest(), whole.hexdigest()


def check_sha256(path: str | os.PathLike[str], expected: str | None, actual: str) -> None:
    """`RestoreIncompatible` unless the archive's sha256 `actual` is `expected` (None: no
    digest recorded outside the archive, nothing to compare)."""
    if expected is not None and actual != expected:
        raise RestoreIncompatible(
            f"{path} is damaged: its sha256 {actual[:12] or '(unreadable)'}… is not the "
            f"{expected[:12]}… recorded when it was made")


def extract_archive(path: str | os.PathLike[str], manifest: Mapping[str, Any],
                    dest: Path, *, sha256: str | None = None) -> None:
    """Extract the body's files into `dest` (an empty directory) and check the body's sha256
    against the trailer and, when `sha256` is given, the whole file's against it (the digest
    recorded outside the archive when it was made: it covers the trailer too);
    `RestoreIncompatible` when anything does not match (the caller removes `dest`, and uses
    nothing from it). Both hashes are computed in one pass, by a thread of its own, while the
    files are copied in the kernel (`sendfile`): a wake waits for the slower of the two, not
    their sum. Only plain file names are accepted: nothing lands outside `dest`."""
    body = int(manifest["body_bytes"])
    hashed: list[tuple[str, str]] = []
    hasher = threading.Thread(target=lambda: hashed.append(_digests(path, body)),
                              name="markco-criu-hash", daemon=True)
    hasher.start()
    try:
        _copy_members(path, body, dest)
    finally:
        hasher.join()
    body_digest, whole_digest = hashed[0] if hashed else ("", "")
    check_sha256(path, sha256, whole_digest)
    if body_digest != manifest.get("body_sha256"):
        raise RestoreIncompatible(f"{path} is damaged: its content does not match the sha256 "
                                  f"recorded in it")


def _copy_members(path: str | os.PathLike[str], body: int, dest: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        position = 0

        def read(n: int) -> bytes:
            nonlocal position
            if position + n > body:
                raise RestoreIncompatible(f"{path} is damaged: a member runs past the body")
            data = os.pread(f.fileno(), n, position)
            if len(data) != n:
                raise RestoreIncompatible(f"{path} is damaged: it ended early")
            position += n
            return data

        def header() -> tarfile.TarInfo:
            try:
                return tarfile.TarInfo.frombuf(read(BLOCK), "utf-8", "surrogateescape")
            except tarfile.TarError as exc:
                raise RestoreIncompatible(f"{path} is damaged: {exc}") from exc

        while position < body:
            info = header()
            name = info.name
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):  # a PAX header: its records
                records = read(info.size + _pad(info.size))[:info.size].decode("utf-8",
                                                                               "replace")
                info = header()
                name = info.name
                for record in records.splitlines():
                    _, _, field = record.partition(" ")
                    key, _, value = field.partition("=")
                    if key == "path":
                        name = value
            if not info.isreg() or "/" in name or name in ("", ".", ".."):
                raise RestoreIncompatible(f"{path} is damaged or not ours: member {name!r}")
            if position + info.size + _pad(info.size) > body:
                raise RestoreIncompatible(f"{path} is damaged: a member runs past the body")
            fd = os.open(dest / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o600)
            try:
                remaining, offset = info.size, position
                while remaining:
                    copied = os.sendfile(fd, f.fileno(), offset, min(remaining, 1 << 30))
                    if copied <= 0:
                        raise RestoreIncompatible(f"{path} is damaged: it ended early")
                    remaining -= copied
                    offset += copied
            finally:
                os.close(fd)
            position += info.size + _pad(info.size)


def file_sha256(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, sha256) of a file. Blocking."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
