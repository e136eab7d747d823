"""Checkpoints of container workloads through the engine (Podman's libpod API, CRIU underneath).

The backend (the `docker` plugin) is reached only through `markco_trio.roles.EngineCheckpointing`:
it checkpoints a container and streams the engine's archive out, and creates a container from a
streamed archive. This module owns the FILE:

- **One archive file**: the engine's tar (container configuration + CRIU images), with a
  trailer member of our own (`markco-checkpoint.json`, fixed size, just before the tar's end
  blocks) recording the format, what the archive depends on and the sha256 of the bytes before
  it. The engine ignores the extra member on import. Written under a temporary name (0600),
  fsynced, renamed into place, the directory fsynced: a half-written archive is never at its path.
- **Streamed** both ways, never held in memory: the engine's answer goes to the file chunk by
  chunk; a restore streams the file to the engine, checking the sha256 on the way and holding
  the trailer back until it matches — a damaged archive never reaches the engine whole.
- **Depends on**: engine kind and version, OCI runtime, CRIU, kernel, the image (name and id),
  the workload's user, role and port. A restore where one of them changed is refused with
  `RestoreIncompatible` (the caller falls back to a cold start).

Docker Engine is not supported (its checkpoint API is experimental): `CheckpointUnavailable`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any, BinaryIO, cast

import trio

from markco_trio.errors import CheckpointError, CheckpointUnavailable, RestoreIncompatible
from markco_trio.roles import (
    CheckpointCapabilities,
    CheckpointResult,
    ContainerBackend,
    ContainerInfo,
    ContainerSpec,
    EngineCheckpointing,
    EngineFacts,
)

from . import archive

FORMAT = "markco-engine-checkpoint/1"
# The trailer is `archive`'s, shared with the process backend's archives.
TRAILER_DATA = archive.TRAILER_DATA  # the trailer's JSON, padded with spaces to this size
BLOCK = archive.BLOCK
END_BLOCKS = archive.END_BLOCKS  # a tar ends with two zero blocks
TRAILER_SPAN = archive.TRAILER_SPAN  # from the trailer's header to the file's end
CHUNK = archive.CHUNK
READ_BLOCK = 4 << 20  # what a restore reads (and hashes) at once
CRIU_HINT = "install CRIU >= 4 ahead of the system's on PATH (`scripts/setup-criu`)"


# ------------------------------------------------------------------------------ archive format


def _trailer(manifest: Mapping[str, Any]) -> bytes:
    """The trailer member (header + padded JSON) followed by the tar's two end blocks."""
    return archive.trailer(manifest)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The trailer of an engine checkpoint archive; `RestoreIncompatible` when `path` is not
    one (another format, truncated, damaged). Blocking: call it from a worker thread."""
    return archive.read_manifest(path, (FORMAT,))


def is_engine_archive(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is an archive of this module (for a checkpointer handling several
    formats). Blocking."""
    try:
        read_manifest(path)
    except RestoreIncompatible:
        return False
    return True


class _ArchiveWriter:
    """Writes one archive under a temporary name next to `path`: the engine's tar minus its end
    blocks (held back until the stream ends), then the trailer; hashes as it goes (one pass:
    the file's hash is the body's, continued over the trailer)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        self.file: BinaryIO | None = None
        self.digest = hashlib.sha256()  # the bytes written so far
        self.body_bytes = 0
        self.sha256 = ""  # of the whole file, once finished
        self._held = b""

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.file = os.fdopen(fd, "wb")

    def _out(self, data: bytes | memoryview) -> None:
        assert self.file is not None
        self.file.write(data)
        self.digest.update(data)
        self.body_bytes += len(data)

    def feed(self, chunk: bytes) -> None:
        """Write all but the last END_BLOCKS bytes seen so far (the engine's end blocks)."""
        if len(chunk) >= END_BLOCKS:
            if self._held:
                self._out(self._held)
            self._out(memoryview(chunk)[:-END_BLOCKS])
            self._held = chunk[-END_BLOCKS:]
            return
        data = self._held + chunk
        cut = max(len(data) - END_BLOCKS, 0)
        if cut:
            self._out(data[:cut])
        self._held = data[cut:]

    def feed_raw(self, chunk: bytes) -> None:
        """Write bytes as they are (an imported archive, trailer included)."""
        self._out(chunk)

    def finish(self, manifest: dict[str, Any] | None) -> int:
        """Append the trailer (`manifest` plus the body's hash) unless importing, fsync, rename
        into place, fsync the directory; return the size."""
        assert self.file is not None
        if manifest is not None:
            if len(self._held) != END_BLOCKS or any(self._held) or self.body_bytes % BLOCK:
                raise CheckpointError("the engine's checkpoint archive is not a complete tar "
                                      "(it does not end with two zero blocks)")
            manifest = {**manifest, "body_sha256": self.digest.hexdigest(),
                        "body_bytes": self.body_bytes}
            self._out(_trailer(manifest))
        self.sha256 = self.digest.hexdigest()
        self.file.flush()
        os.fsync(self.file.fileno())
        size = self.file.tell()
        self.file.close()
        self.file = None
        os.replace(self.temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return size

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.temporary.unlink(missing_ok=True)


async def _verified_chunks(path: str, manifest: Mapping[str, Any],
                           sha256: str | None = None) -> AsyncGenerator[bytes, None]:
    """The archive's bytes, checked on the way against the trailer's `body_sha256` and, when
    `sha256` is given, the whole file against it (the digest recorded when it was made; the
    same pass): the last bytes are sent only once both matched, so a damaged archive never
    reaches the engine whole (the stream fails with `RestoreIncompatible`)."""
    body_bytes = int(manifest.get("body_bytes", -1))
    digest = hashlib.sha256()
    f = await trio.to_thread.run_sync(open, path, "rb")
    try:
        size = os.fstat(f.fileno()).st_size
        if body_bytes != size - TRAILER_SPAN:
            raise RestoreIncompatible(f"{path} is damaged: {size} bytes, its trailer says "
                                      f"{body_bytes + TRAILER_SPAN}")
        left, last = body_bytes, b""
        while left:
            chunk = await trio.to_thread.run_sync(f.read, min(READ_BLOCK, left))
            if not chunk:
                raise RestoreIncompatible(f"{path} is damaged: it ended early")
            left -= len(chunk)
            digest.update(chunk)
            if left:
                yield chunk
            else:
                last = chunk  # held back until the hash matched
        if digest.hexdigest() != manifest.get("body_sha256"):
            raise RestoreIncompatible(f"{path} is damaged: its content does not match the "
                                      f"sha256 recorded in it")
        rest = await trio.to_thread.run_sync(f.read)
        digest.update(rest)
        archive.check_sha256(path, sha256, digest.hexdigest())
        yield last
        yield rest
    finally:
        f.close()


# ------------------------------------------------------------------------------ compatibility


def criu_version(binary: str = "criu") -> str | None:
    """`criu --version`'s version (e.g. `4.1.1`), None when CRIU is not installed. Blocking."""
    path = shutil.which(binary)
    if path is None:
        return None
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return None


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def incompatibilities(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What changed since the archive was made that a restore depends on (empty: none)."""
    found = []
    for key, same in (("engine", lambda a, b: a == b),
                      ("engine_version", lambda a, b: a.split(".")[:1] == b.split(".")[:1]),
                      ("criu", lambda a, b: _major_minor(a) == _major_minor(b)),
                      ("kernel", lambda a, b: a == b)):
        then, now = recorded.get(key), current.get(key)
        if then and now and not same(str(then), str(now)):
            found.append(f"{key} was {then}, is {now}")
        elif then and not now and key in ("engine", "criu"):
            found.append(f"{key} was {then}, is unknown or missing")
    return found


# ------------------------------------------------------------------------------ the checkpointer


def engine_of(backend: ContainerBackend) -> EngineCheckpointing:
    """The backend's `EngineCheckpointing` face; `CheckpointUnavailable` when it has none."""
    if not isinstance(backend, EngineCheckpointing):
        raise CheckpointUnavailable(
            f"the {getattr(backend, 'name', type(backend).__name__)!r} backend offers no "
            f"engine checkpoints (markco_trio.roles.EngineCheckpointing)")
    return cast(EngineCheckpointing, backend)


class EngineCheckpointer:
    """`Checkpointer` of container-engine workloads (Podman). See the module doc.

    `criu` is the CRIU binary the engine's host uses (on this host when the engine is local:
    its version is recorded; for a remote engine it is not known here).
    """

    name = "criu"

    def __init__(self, *, criu: str = "criu", clock: Any = time.monotonic) -> None:
        self.criu = criu
        self._clock = clock
        self._criu_version: str | None = None

    async def __aenter__(self) -> EngineCheckpointer:
        self._criu_version = await trio.to_thread.run_sync(criu_version, self.criu)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def capabilities(self, backend: ContainerBackend) -> CheckpointCapabilities:
        """Checkpoint, leave running and restore under a new name, on a Podman engine with
        CRIU; no established TCP (the runtime front's connections are drained first) and no
        pre-copy (no soft-dirty tracking on our kernels, and not through the engine's API)."""
        if not isinstance(backend, EngineCheckpointing):
            return CheckpointCapabilities(checkpoint=False, notes=(
                "the backend offers no engine checkpoints",))
        if not backend.capabilities().checkpoint:
            return CheckpointCapabilities(checkpoint=False, notes=(
                "the container engine is not Podman: only Podman's checkpoint API is spoken",))
        if self._criu_version is None:
            return CheckpointCapabilities(checkpoint=False, notes=(
                f"CRIU is not installed (or the checkpointer was not entered): {CRIU_HINT}",))
        return CheckpointCapabilities(
            checkpoint=True, leave_running=True, restore_as_new=True, established_tcp=False,
            pre_copy=False, notes=("established TCP connections are not kept (drained first)",
                                   "no pre-copy through the engine's API"))

    async def _current(self, engine: EngineCheckpointing) -> tuple[EngineFacts, dict[str, Any]]:
        facts = await engine.engine_facts()
        if not facts.checkpoint_api:
            raise CheckpointUnavailable(
                f"the container engine is {facts.kind} {facts.version}: markco checkpoints "
                f"containers through Podman's libpod API only (Docker Engine's checkpoint API "
                f"is experimental and not supported): use Podman or the process backend")
        current: dict[str, Any] = {"engine": facts.kind, "engine_version": facts.version,
                                   "oci_runtime": facts.oci_runtime, "kernel": facts.kernel}
        if facts.local:
            if self._criu_version is None:
                self._criu_version = await trio.to_thread.run_sync(criu_version, self.criu)
            if self._criu_version is None:
                raise CheckpointUnavailable(f"CRIU is not installed on the engine's host: "
                                            f"{CRIU_HINT}")
            current["criu"] = self._criu_version
        return facts, current

    async def checkpoint(self, backend: ContainerBackend, handle: str, *, archive_path: str,
                         leave_running: bool) -> CheckpointResult:
        """Checkpoint `handle` through the engine into ONE archive file at `archive_path`."""
        engine = engine_of(backend)
        started = self._clock()
        _, current = await self._current(engine)
        writer = _ArchiveWriter(Path(archive_path))
        await trio.to_thread.run_sync(writer.open)

        async def write(chunk: bytes) -> None:
            await trio.to_thread.run_sync(writer.feed, chunk)

        try:
            workload = await engine.export_checkpoint(handle, write,
                                                      leave_running=leave_running)
            depends_on = {**current, "image": workload.get("image", ""),
                          "image_id": workload.get("image_id", ""),
                          "user_id": workload.get("user_id", ""),
                          "role": workload.get("role", ""), "port": workload.get("port", "")}
            manifest = {"format": FORMAT, "created_at": time.time(),
                        "leave_running": leave_running, "depends_on": depends_on}
            size = await trio.to_thread.run_sync(writer.finish, manifest)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(writer.discard)
            raise
        return CheckpointResult(path=str(archive_path), size_bytes=size,
                                sha256=writer.sha256,
                                duration_ms=int((self._clock() - started) * 1000),
                                depends_on=depends_on)

    async def restore(self, backend: ContainerBackend, archive_path: str, *,
                      spec: ContainerSpec, sha256: str | None = None) -> ContainerInfo:
        """Restore the archive as `spec.name` (created here) with `spec`'s limits, after
        checking that nothing it depends on changed and, as it streams to the engine, that it
        is whole (its trailer's digest, and `sha256`: the whole file's, recorded when it was
        made)."""
        engine = engine_of(backend)
        manifest = await trio.to_thread.run_sync(read_manifest, archive_path)
        recorded: Mapping[str, Any] = manifest.get("depends_on") or {}
        _, current = await self._current(engine)
        problems = incompatibilities(recorded, current)
        image, image_id = str(recorded.get("image", "")), str(recorded.get("image_id", ""))
        now = await engine.image_id(image or image_id) if image_id else None
        if now != image_id:
            problems.append(f"its image {image} ({image_id[:19]}) is no longer on the engine"
                            if now is None else
                            f"the image {image} changed since (it was {image_id[:19]}, is "
                            f"{now[:19]})")
        if problems:
            raise RestoreIncompatible(f"the checkpoint {archive_path} cannot be restored here: "
                                      + "; ".join(problems))
        if (recorded.get("user_id"), recorded.get("role")) != (spec.user_id, spec.role.value):
            raise CheckpointError(f"the checkpoint {archive_path} is of user "
                                  f"{recorded.get('user_id')!r}'s {recorded.get('role')}, not "
                                  f"of {spec.user_id!r}'s {spec.role.value}")
        port = str(recorded.get("port", ""))
        if spec.port is not None and port and str(spec.port) != port:
            raise CheckpointError(f"the checkpointed workload listens on port {port} inside "
                                  f"its container: a restore cannot move it to {spec.port}")
        async with aclosing(_verified_chunks(archive_path, manifest, sha256)) as chunks:
            return await engine.import_checkpoint(spec, chunks)

    async def export_archive(self, archive_path: str) -> AsyncIterator[bytes]:
        """The archive's bytes, streamed in chunks (checked: it must be one of ours)."""
        await trio.to_thread.run_sync(read_manifest, archive_path)
        return self._read_chunks(archive_path)

    async def _read_chunks(self, archive_path: str) -> AsyncIterator[bytes]:
        f = await trio.to_thread.run_sync(open, archive_path, "rb")
        try:
            while chunk := await trio.to_thread.run_sync(f.read, CHUNK):
                yield chunk
        finally:
            f.close()

    async def import_archive(self, chunks: AsyncIterable[bytes],
                             archive_path: str) -> CheckpointResult:
        """Write a streamed archive to `archive_path` atomically and verify it (its trailer and
        the sha256 recorded there); a damaged one leaves nothing behind
        (`RestoreIncompatible`)."""
        started = self._clock()
        writer = _ArchiveWriter(Path(archive_path))
        await trio.to_thread.run_sync(writer.open)
        try:
            async for chunk in chunks:
                await trio.to_thread.run_sync(writer.feed_raw, chunk)
            assert writer.file is not None
            await trio.to_thread.run_sync(writer.file.flush)
            manifest = await trio.to_thread.run_sync(read_manifest, writer.temporary)
            async for _ in _verified_chunks(str(writer.temporary), manifest):
                pass
            size = await trio.to_thread.run_sync(writer.finish, None)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(writer.discard)
            raise
        return CheckpointResult(path=str(archive_path), size_bytes=size,
                                sha256=writer.sha256,
                                duration_ms=int((self._clock() - started) * 1000),
                                depends_on=dict(manifest.get("depends_on") or {}))

