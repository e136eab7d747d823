"""A TEST DOUBLE of the `Checkpointer` role, for the lifecycle's own tests.

Why a double: the lifecycle (sleep, wake, snapshots, restore, forks, their operation log, the
archives on disk and reconciliation after a crash) is compute's bookkeeping on top of ANY
checkpointer, and must be tested on its own — quickly, with faults injected at will (a restore
that is incompatible, a checkpoint that fails or fills the disk, a pause to kill the daemon
in) — while the real `criu` checkpointer is built and tested against its own contract kit
(`markco_trio.testing.checkpoint_kit`). The end-to-end tests (`test_checkpoint_e2e.py`) use the
real one.

What it does on any backend: `checkpoint` writes a small archive (JSON naming the workload, plus
padding) under a temporary name, renames it into place, and stops the workload unless
`leave_running`; `restore` creates and starts `spec` afresh. So memory is NOT kept: a "restored"
runtime is a cold one. Tests of this double assert states, records, files and events, never
variables.

It is also a plugin module (`[plugins] modules = ["tests.lifecycle.fake_checkpointer"]`,
`[checkpoint] provider = "fake"`) so a daemon in a subprocess can use it; its options slow it
down (`delay_seconds`) so a test can kill the daemon in the middle of a checkpoint or restore.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from markco_trio.errors import CheckpointError, RestoreIncompatible
from markco_trio.hookspecs import ProviderSpec, hookimpl
from markco_trio.roles import (
    CheckpointCapabilities,
    CheckpointResult,
    ContainerBackend,
    ContainerInfo,
    ContainerSpec,
)


@dataclass(frozen=True)
class FakeOptions:
    """`[checkpoint.fake]`: `delay_seconds` before a checkpoint's archive is renamed into
    place and before a restore starts the workload; `padding_bytes` of archive filler."""

    delay_seconds: float = 0.0
    padding_bytes: int = 4096


@dataclass
class FakeCheckpointer:
    """See the module doc. `fail_checkpoint` / `fail_restore`: raised by the next calls."""

    options: FakeOptions = field(default_factory=FakeOptions)
    name: str = "fake"
    fail_checkpoint: BaseException | None = None
    fail_restore: BaseException | None = None
    restore_as_new: bool = True
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def __aenter__(self) -> FakeCheckpointer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    def capabilities(self, backend: ContainerBackend) -> CheckpointCapabilities:
        return CheckpointCapabilities(checkpoint=True, leave_running=True,
                                      restore_as_new=self.restore_as_new,
                                      notes=("a test double: memory is not kept",))

    async def checkpoint(self, backend: ContainerBackend, handle: str, *, archive_path: str,
                         leave_running: bool) -> CheckpointResult:
        self.calls.append(("checkpoint", handle))
        started = time.monotonic()
        info = await backend.inspect(handle)
        if self.fail_checkpoint is not None:
            exc, self.fail_checkpoint = self.fail_checkpoint, None
            raise exc
        body = json.dumps({"handle": handle, "address": info.address}).encode()
        body += b"\0" * self.options.padding_bytes
        tmp = archive_path + ".partial"

        def write() -> str:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(body)
            return hashlib.sha256(body).hexdigest()

        sha = await trio.to_thread.run_sync(write)
        if self.options.delay_seconds:
            await trio.sleep(self.options.delay_seconds)
        if not leave_running:
            await backend.stop(handle, timeout=0)
        os.rename(tmp, archive_path)
        return CheckpointResult(path=archive_path, size_bytes=len(body), sha256=sha,
                                duration_ms=round((time.monotonic() - started) * 1000),
                                depends_on={"fake": "1"})

    async def restore(self, backend: ContainerBackend, archive_path: str, *,
                      spec: ContainerSpec, sha256: str | None = None) -> ContainerInfo:
        self.calls.append(("restore", spec.name))
        if self.fail_restore is not None:
            exc, self.fail_restore = self.fail_restore, None
            raise exc
        try:
            data = await trio.Path(archive_path).read_bytes()
        except FileNotFoundError:
            raise RestoreIncompatible(f"no archive at {archive_path}") from None
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise RestoreIncompatible(f"the archive {archive_path} is damaged (its sha256 is "
                                      f"not the recorded one)")
        if not data.startswith(b"{"):
            raise CheckpointError("not an archive of the fake checkpointer")
        if self.options.delay_seconds:
            await trio.sleep(self.options.delay_seconds)
        await backend.create(spec)
        return await backend.start(spec.name)

    async def export_archive(self, archive_path: str) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            yield await trio.Path(archive_path).read_bytes()

        return chunks()

    async def import_archive(self, chunks: Any, archive_path: str) -> CheckpointResult:
        data = b"".join([chunk async for chunk in chunks])
        await trio.Path(archive_path).write_bytes(data)
        return CheckpointResult(path=archive_path, size_bytes=len(data),
                                sha256=hashlib.sha256(data).hexdigest(), duration_ms=0)


def archive_files(root: Path) -> list[Path]:
    """Every file under a snapshots directory."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


@hookimpl
def markco_checkpointers() -> list[ProviderSpec]:
    """The `fake` checkpointer (tests only)."""
    return [ProviderSpec("fake", lambda options, ctx: FakeCheckpointer(options), FakeOptions,
                         "a test double (memory is not kept)")]
