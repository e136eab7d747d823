"""The markco plugin: registers the `criu` checkpointer (entry point `markco` → `criu`).

`CriuCheckpointer` is the `markco_trio.roles.Checkpointer`. It dispatches by the interface the
backend offers, never by the backend's name or internals:

- `ProcessTreeCheckpointing` (the built-in `process` backend) → `process.ProcessCheckpointer`:
  the `criu` binary on the workload's own PID/mount(/network) namespace tree;
- `EngineCheckpointing` (the `docker` plugin on Podman) → `podman.EngineCheckpointer`: the
  engine's checkpoint API.

Archives of both carry the same trailer (`archive`), whose `format` says which made it, so
export/import and verification need no backend.

    [checkpoint]
    provider = "criu"

    [checkpoint.criu]
    criu = "criu"            # the binary (a path, or a name on PATH / in /usr/local/sbin)
    work_dir = ""            # where image directories are made ("": next to each archive)
    subreaper = true         # make the daemon a child subreaper, so restored trees are its children
    ghost_limit_mib = 64     # the largest deleted-but-open file copied into a checkpoint
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from markco_trio.errors import CheckpointUnavailable, RestoreIncompatible
from markco_trio.hookspecs import ProviderSpec, hookimpl
from markco_trio.roles import (
    CheckpointCapabilities,
    CheckpointResult,
    ContainerBackend,
    ContainerInfo,
    ContainerSpec,
    EngineCheckpointing,
    ProcessTreeCheckpointing,
)

from . import archive, binary
from .process import FORMAT as PROCESS_FORMAT
from .process import ProcessCheckpointer

if TYPE_CHECKING:
    from markco_trio.context import PluginContext

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
ENGINE_FORMAT = "markco-engine-checkpoint/1"


@dataclass(frozen=True)
class CriuOptions:
    """`[checkpoint.criu]` — checkpoints with CRIU.

    - `criu`: the CRIU binary (a path, or a name looked up on PATH, then /usr/local/sbin, where
      `scripts/setup-criu` installs CRIU 4.1 with markco's patches).
    - `work_dir`: where CRIU's image directories are made while an archive is written or
      restored (default: next to each archive, on the same filesystem).
    - `subreaper`: make the daemon a child subreaper (`PR_SET_CHILD_SUBREAPER`) so that trees
      restored by `criu restore -d` become its children (tracked by pidfd, reaped by pid).
    - `ghost_limit_mib`: the largest deleted-but-open file copied into a checkpoint.
    """

    criu: str = "criu"
    work_dir: str = ""
    subreaper: bool = True
    ghost_limit_mib: int = 64

    def __post_init__(self) -> None:
        if self.ghost_limit_mib < 0:
            raise ValueError("ghost_limit_mib: zero or more")


def _prctl(option: int, value: int) -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    result = libc.prctl(option, value, 0, 0, 0)
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return int(result)


def is_subreaper() -> bool:
    """Whether this process is a child subreaper."""
    flag = ctypes.c_int(0)
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    return bool(flag.value)


class CriuCheckpointer:
    """The `criu` Checkpointer (see the module doc)."""

    name = "criu"

    def __init__(self, options: CriuOptions | None = None) -> None:
        self.options = options or CriuOptions()
        self.process = ProcessCheckpointer(criu=None, work_dir=self.options.work_dir,
                                           ghost_limit=self.options.ghost_limit_mib << 20)
        self._engine: Any = None
        self._was_subreaper = False
        self.notes: tuple[str, ...] = ()  # what is degraded here (e.g. no kernel cache)

    async def __aenter__(self) -> CriuCheckpointer:
        await trio.to_thread.run_sync(self._prepare)
        if self.options.subreaper:
            self._was_subreaper = is_subreaper()
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        engine = self._engine_checkpointer()
        if engine is not None:
            await engine.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.process.finish_tidying)
        if self._engine is not None:
            await self._engine.__aexit__(*exc_info)
        if self.options.subreaper and not self._was_subreaper:
            _prctl(PR_SET_CHILD_SUBREAPER, 0)

    def _prepare(self) -> None:
        try:
            criu = binary.locate(self.options.criu)
        except CheckpointUnavailable as exc:
            self.process.unavailable = str(exc)
            return
        self.process.criu = criu
        self.notes = tuple(n for n in (binary.ensure_kdat_dir(),) if n)
        failed = binary.check(criu)
        if failed:
            self.process.unavailable = (f"`{criu.path} check` fails on this kernel: {failed}\n"
                                        f"{binary.SETUP_HINT}")
        self.process.pre_copy = binary.has_feature(criu, "mem_dirty_track")

    def _engine_checkpointer(self) -> Any:
        """The engine (Podman) checkpointer, when its module is installed."""
        if self._engine is None:
            try:
                from .podman import EngineCheckpointer
            except ImportError:
                return None
            self._engine = EngineCheckpointer(criu=self.options.criu)
        return self._engine

    def _for(self, backend: object) -> Any:
        if isinstance(backend, ProcessTreeCheckpointing):
            return self.process
        if isinstance(backend, EngineCheckpointing):
            engine = self._engine_checkpointer()
            if engine is not None:
                return engine
        raise CheckpointUnavailable(
            f"criu: the {getattr(backend, 'name', type(backend).__name__)!r} backend offers "
            f"no interface this checkpointer knows (ProcessTreeCheckpointing, "
            f"EngineCheckpointing)")

    def capabilities(self, backend: ContainerBackend) -> CheckpointCapabilities:
        """What this checkpointer can do with `backend` (each flag proven by the kit)."""
        try:
            driver = self._for(backend)
        except CheckpointUnavailable as exc:
            return CheckpointCapabilities(checkpoint=False, notes=(str(exc),))
        result: CheckpointCapabilities = driver.capabilities(backend)
        return result

    async def checkpoint(self, backend: ContainerBackend, handle: str, *, archive_path: str,
                         leave_running: bool) -> CheckpointResult:
        """Dump `handle` into one archive at `archive_path` (see `Checkpointer`)."""
        result: CheckpointResult = await self._for(backend).checkpoint(
            backend, handle, archive_path=archive_path, leave_running=leave_running)
        return result

    async def restore(self, backend: ContainerBackend, archive_path: str, *,
                      spec: ContainerSpec, sha256: str | None = None) -> ContainerInfo:
        """Restore the archive as the new workload `spec.name`, refusing it before anything
        is created when its sha256 is not `sha256` (see `Checkpointer`)."""
        info: ContainerInfo = await self._for(backend).restore(backend, archive_path,
                                                               spec=spec, sha256=sha256)
        return info

    async def export_archive(self, archive_path: str) -> AsyncIterator[bytes]:
        """The archive's bytes in chunks, streamed from the file."""
        f = await trio.to_thread.run_sync(open, archive_path, "rb")
        try:
            while chunk := await trio.to_thread.run_sync(f.read, archive.CHUNK):
                yield chunk
        finally:
            f.close()

    async def import_archive(self, chunks: AsyncIterable[bytes],
                             archive_path: str) -> CheckpointResult:
        """Write a streamed archive to `archive_path` atomically and verify it (a process or an
        engine archive): `RestoreIncompatible` when it is damaged, and nothing is left."""
        started = time.monotonic()
        out = await trio.to_thread.run_sync(archive.AtomicFile, archive_path)
        try:
            async for chunk in chunks:
                await trio.to_thread.run_sync(out.write, chunk)
            temporary = out.temporary
            await trio.to_thread.run_sync(self._verify_file, str(temporary))
            size, digest = await trio.to_thread.run_sync(out.commit)
        except BaseException:
            out.discard()
            raise
        manifest = await trio.to_thread.run_sync(
            archive.read_manifest, archive_path, (PROCESS_FORMAT, ENGINE_FORMAT))
        return CheckpointResult(path=str(archive_path), size_bytes=size, sha256=digest,
                                duration_ms=int((time.monotonic() - started) * 1000),
                                depends_on=dict(manifest.get("depends_on") or {}))

    @staticmethod
    def _verify_file(path: str) -> None:
        """The trailer readable and the body's sha256 as recorded. Blocking."""
        import hashlib

        manifest = archive.read_manifest(path, (PROCESS_FORMAT, ENGINE_FORMAT))
        digest = hashlib.sha256()
        left = int(manifest["body_bytes"])
        with open(path, "rb", buffering=0) as f:
            while left:
                chunk = f.read(min(archive.CHUNK, left))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
        if left or digest.hexdigest() != manifest.get("body_sha256"):
            raise RestoreIncompatible("the imported archive is damaged: its content does not "
                                      "match the sha256 recorded in it")


def make_criu_checkpointer(options: CriuOptions, ctx: PluginContext) -> CriuCheckpointer:
    """The factory `[checkpoint] provider = "criu"` calls with `[checkpoint.criu]`. No I/O:
    CRIU is located and checked when the daemon enters the checkpointer."""
    return CriuCheckpointer(options)


@hookimpl
def markco_checkpointers() -> list[ProviderSpec]:
    """Register the `criu` checkpointer."""
    return [ProviderSpec(name="criu", factory=make_criu_checkpointer, options=CriuOptions,
                         description="CRIU: the process backend's namespace trees, and "
                                     "Podman's checkpoint API")]
