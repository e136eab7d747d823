"""The contract test kit of the `Checkpointer` role: what every checkpointer must do, proven with
a REAL runtime (mrmd-python) and the variables it holds.

A checkpointer's tests subclass `CheckpointerContract` and provide three fixtures:

- `checkpointer`: an entered checkpointer;
- `backend`: an entered container backend it works with;
- `spec_factory(user_id, role) -> ContainerSpec`: a runnable spec of that backend (for
  `runtime`: `mrmd-python --foreground --managed --host {host} --port {port}`), named
  `workload_name(<backend's deployment>, user_id, role)`, as `BackendContract` takes it.

    import pytest
    from markco_trio.testing.checkpoint_kit import CheckpointerContract

    class TestMyCheckpointer(CheckpointerContract):
        @pytest.fixture
        async def checkpointer(self):
            async with MyCheckpointer() as checkpointer:
                yield checkpointer
        ...

What it checks: a checkpoint that stops the runtime ends its processes and a restore brings back
`x = 42`; one that leaves it running leaves it answering; a copy restored under another name
runs beside its source with its own variables (when `capabilities().restore_as_new`); a damaged
archive is refused with `RestoreIncompatible` and nothing is created — by its own checksum, and
by the sha256 recorded when it was made (`restore(..., sha256=)`), which also refuses a whole,
self-consistent archive that is not the recorded one; restoring onto an existing
name is a `Conflict`; a restored workload is a workload like any other (inspect, stats, stop,
remove); an archive exported and imported restores the same; a 200 MB object survives; the
archive is one 0600 file whose sha256 is the one reported. Every test removes what it created.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from .. import dial
from ..errors import CheckpointError, Conflict, NotFound, RestoreIncompatible
from ..records import WorkloadRole
from ..roles import (
    STATUS_EXITED,
    STATUS_RUNNING,
    CheckpointCapabilities,
    Checkpointer,
    CheckpointResult,
    ContainerBackend,
    ContainerInfo,
    ContainerSpec,
)

MiB = 1 << 20

SpecFactory = Callable[..., ContainerSpec]

# 200 MB of Python objects whose `repr` stays short (mrmd-python shows each variable's repr after
# every execution: a 200 MB bytes object itself would take it seconds), and its digest.
BIG_OBJECT = (
    "import os, hashlib\n"
    "class Blob:\n"
    "    def __init__(self, n):\n"
    "        self.data = os.urandom(n)\n"
    "big = Blob({size})\n"
    "digest = hashlib.sha256(big.data).hexdigest()\n"
    "digest")
BIG_CHECK = "hashlib.sha256(big.data).hexdigest() == digest and len(big.data)"


async def execute(address: str, code: str, *, timeout: float = 60.0,  # noqa: ASYNC109
                  store_history: bool = False) -> dict[str, Any]:
    """POST /mrp/v1/execute to the runtime at `address` (any `markco_trio.dial` form): its
    JSON answer (`result`, `error`, `stdout`...). `store_history`: as an editor's cell run."""
    body = json.dumps({"code": code, "storeHistory": store_history}).encode()
    with trio.fail_after(timeout):
        status, answer = await dial.http_request(address, "POST", "/mrp/v1/execute", [
            ("Host", "localhost"), ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))), ("Connection", "close")], body, limit=None)
    assert status == 200, f"execute answered {status}: {answer[:500]!r}"
    result: dict[str, Any] = json.loads(answer)
    return result


async def value_of(address: str, expression: str) -> str | None:
    """The repr of `expression` evaluated in the runtime (its error fails the test)."""
    answer = await execute(address, expression)
    assert not answer.get("error"), f"{expression!r} failed: {answer.get('error')}"
    result = answer.get("result")
    return None if result is None else str(result)


async def answers(address: str | None) -> bool:
    """Whether a runtime answers `GET /mrp/v1/capabilities` at `address` right now."""
    if address is None:
        return False
    try:
        with trio.fail_after(5):
            status, _ = await dial.http_get(address, "/mrp/v1/capabilities")
    except (OSError, ValueError, h11.ProtocolError, trio.TooSlowError):
        return False
    return status == 200


async def wait_answering(address: str | None, *, within: float = 30.0) -> None:
    """Poll until the runtime answers; fail the test after `within` seconds."""
    with trio.move_on_after(within):
        # Polling: a process starting elsewhere sends no event.
        while not await answers(address):  # noqa: ASYNC110
            await trio.sleep(0.05)
        return
    pytest.fail(f"the runtime at {address} did not answer within {within:g} s")


def fresh_user() -> str:
    """A user id no other test uses."""
    return uuid.uuid4().hex


def flip_a_byte(path: Path, offset: int) -> None:
    """Damage a file: invert one byte at `offset`."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


class Workloads:
    """The workloads a test created (or restored), removed at teardown even when it fails."""

    def __init__(self, backend: ContainerBackend) -> None:
        self.backend = backend
        self.handles: list[str] = []

    def track(self, handle: str) -> None:
        """Remove `handle` at teardown."""
        if handle not in self.handles:
            self.handles.append(handle)

    async def run(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start `spec`; return it once it answers."""
        info = await self.backend.create(spec)
        self.track(info.handle)
        info = await self.backend.start(info.handle)
        await wait_answering(info.address)
        return info

    async def remove_all(self) -> None:
        """Remove everything tracked (already removed is fine)."""
        for handle in reversed(self.handles):
            try:
                await self.backend.remove(handle)
            except NotFound:
                pass


class CheckpointerContract:
    """The contract of `markco_trio.roles.Checkpointer`; subclass it (see the module doc)."""

    memory_bytes = 512 * MiB  # the runtimes' limit
    big_memory_bytes = 1024 * MiB  # for the 200 MB test
    big_object_bytes = 200 * MiB

    @pytest.fixture
    async def workloads(self, backend: ContainerBackend) -> AsyncIterator[Workloads]:
        """Tracks what a test creates and removes it at teardown."""
        tracked = Workloads(backend)
        try:
            yield tracked
        finally:
            with trio.CancelScope(shield=True):
                await tracked.remove_all()

    @pytest.fixture
    def archives(self, tmp_path: Path) -> Path:
        """A directory for the test's archives."""
        path = tmp_path / "archives"
        path.mkdir(mode=0o700)
        return path

    @pytest.fixture
    def capabilities(self, checkpointer: Checkpointer,
                     backend: ContainerBackend) -> CheckpointCapabilities:
        """What the checkpointer says it can do with the backend; the kit needs `checkpoint`."""
        caps = checkpointer.capabilities(backend)
        assert isinstance(caps, CheckpointCapabilities)
        assert caps.checkpoint, f"the checkpointer cannot checkpoint here: {caps.notes}"
        return caps

    def _spec(self, spec_factory: SpecFactory, user_id: str, **changes: Any) -> ContainerSpec:
        spec = spec_factory(user_id, WorkloadRole.RUNTIME)
        assert isinstance(spec, ContainerSpec), "spec_factory must return a ContainerSpec"
        changes.setdefault("memory_bytes", self.memory_bytes)
        return dataclasses.replace(spec, **changes)

    async def _runtime_with_x(self, workloads: Workloads, spec: ContainerSpec) -> ContainerInfo:
        info = await workloads.run(spec)
        assert info.address is not None
        await value_of(info.address, "x = 42")
        assert await value_of(info.address, "x") == "42"
        return info

    async def _restore(self, checkpointer: Checkpointer, backend: ContainerBackend,
                       workloads: Workloads, archive: str, spec: ContainerSpec, *,
                       sha256: str | None = None) -> ContainerInfo:
        workloads.track(spec.name)
        info = await checkpointer.restore(backend, archive, spec=spec, sha256=sha256)
        assert info.status == STATUS_RUNNING
        await wait_answering(info.address)
        return info

    async def _sleep(self, checkpointer: Checkpointer, backend: ContainerBackend,
                     info: ContainerInfo, archive: str) -> CheckpointResult:
        """As a sleep does: checkpoint `info` into `archive`, stopping it, and remove it."""
        result = await checkpointer.checkpoint(backend, info.handle, archive_path=archive,
                                               leave_running=False)
        await backend.remove(info.handle)
        return result

    async def _assert_restore_refused(self, checkpointer: Checkpointer,
                                      backend: ContainerBackend, workloads: Workloads,
                                      archive: str, spec: ContainerSpec, *,
                                      sha256: str | None = None) -> None:
        """Restoring `archive` as `spec` (checked against `sha256`) is RestoreIncompatible
        and creates nothing."""
        workloads.track(spec.name)
        with pytest.raises(RestoreIncompatible):
            await checkpointer.restore(backend, archive, spec=spec, sha256=sha256)
        with pytest.raises(NotFound):
            await backend.inspect(spec.name)

    # ------------------------------------------------------------------ capabilities

    async def test_capabilities_describe_what_works(self, checkpointer: Checkpointer,
                                                    capabilities: CheckpointCapabilities
                                                    ) -> None:
        assert isinstance(checkpointer.name, str) and checkpointer.name
        assert capabilities.checkpoint

    # ------------------------------------------------------------------ sleep and wake

    async def test_a_checkpoint_that_stops_ends_the_runtime_and_a_restore_brings_x_back(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        spec = self._spec(spec_factory, fresh_user())
        info = await self._runtime_with_x(workloads, spec)
        archive = str(archives / "sleep.ckpt")
        result = await checkpointer.checkpoint(backend, info.handle, archive_path=archive,
                                               leave_running=False)
        assert (await backend.inspect(info.handle)).status == STATUS_EXITED
        assert not await answers(info.address)
        await backend.remove(info.handle)
        restored = await self._restore(checkpointer, backend, workloads, archive, spec,
                                       sha256=result.sha256)
        assert restored.name == spec.name
        assert await value_of(restored.address or "", "x") == "42"
        assert result.duration_ms >= 0

    async def test_the_archive_is_one_private_file_with_the_reported_hash(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        info = await self._runtime_with_x(workloads, self._spec(spec_factory, fresh_user()))
        archive = archives / "snapshot.ckpt"
        result = await checkpointer.checkpoint(backend, info.handle, archive_path=str(archive),
                                               leave_running=True)
        assert isinstance(result, CheckpointResult)
        assert result.path == str(archive)
        st = await trio.Path(archive).stat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert result.size_bytes == st.st_size
        assert result.sha256 == hashlib.sha256(await trio.Path(archive).read_bytes()).hexdigest()
        assert result.depends_on, "a checkpoint records what its restore depends on"
        assert os.listdir(archives) == ["snapshot.ckpt"], \
            "nothing but the archive is left next to it"

    async def test_a_checkpoint_leaving_the_runtime_running_leaves_it_answering(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        assert capabilities.leave_running
        info = await self._runtime_with_x(workloads, self._spec(spec_factory, fresh_user()))
        await checkpointer.checkpoint(backend, info.handle,
                                      archive_path=str(archives / "snap.ckpt"),
                                      leave_running=True)
        assert (await backend.inspect(info.handle)).status == STATUS_RUNNING
        assert await value_of(info.address or "", "x + 1") == "43"

    async def test_a_checkpoint_of_a_stopped_workload_is_an_error(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        info = await workloads.run(self._spec(spec_factory, fresh_user()))
        await backend.stop(info.handle, timeout=0)
        archive = archives / "nothing.ckpt"
        with pytest.raises(CheckpointError):
            await checkpointer.checkpoint(backend, info.handle, archive_path=str(archive),
                                          leave_running=True)
        assert os.listdir(archives) == []

    # ------------------------------------------------------------------ forks

    async def test_a_fork_under_a_new_name_runs_beside_its_source_with_its_own_variables(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        if not capabilities.restore_as_new:
            pytest.skip(f"no restore under a new name here: {capabilities.notes}")
        spec = self._spec(spec_factory, fresh_user())
        source = await self._runtime_with_x(workloads, spec)
        archive = str(archives / "fork.ckpt")
        await checkpointer.checkpoint(backend, source.handle, archive_path=archive,
                                      leave_running=True)
        fork_spec = dataclasses.replace(spec, name=f"{spec.name}-fork")
        fork = await self._restore(checkpointer, backend, workloads, archive, fork_spec)
        assert fork.name == fork_spec.name
        assert await value_of(fork.address or "", "x") == "42"
        await value_of(fork.address or "", "x = 1")
        assert await value_of(source.address or "", "x") == "42"
        await value_of(source.address or "", "x = 7")
        assert await value_of(fork.address or "", "x") == "1"
        names = {i.name for i in await backend.list(user_id=spec.user_id)}
        assert {spec.name, fork_spec.name} <= names

    # ------------------------------------------------------------------ refusals

    async def _refuse_a_damaged_archive(self, checkpointer: Checkpointer,
                                        backend: ContainerBackend, spec_factory: SpecFactory,
                                        workloads: Workloads, archives: Path, *,
                                        recorded: bool) -> None:
        """Checkpoint a runtime, flip one byte of the archive, and assert that its restore
        (given the sha256 the checkpoint reported when `recorded`) is refused."""
        spec = self._spec(spec_factory, fresh_user())
        info = await self._runtime_with_x(workloads, spec)
        archive = archives / "damaged.ckpt"
        result = await checkpointer.checkpoint(backend, info.handle, archive_path=str(archive),
                                               leave_running=True)
        flip_a_byte(archive, result.size_bytes // (3 if recorded else 2))
        target = dataclasses.replace(spec, name=f"{spec.name}-damaged")
        await self._assert_restore_refused(checkpointer, backend, workloads, str(archive),
                                           target, sha256=result.sha256 if recorded else None)

    async def test_a_damaged_archive_is_refused_and_nothing_is_created(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        await self._refuse_a_damaged_archive(checkpointer, backend, spec_factory, workloads,
                                             archives, recorded=False)

    async def test_a_damaged_archive_is_refused_against_the_recorded_sha256(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        await self._refuse_a_damaged_archive(checkpointer, backend, spec_factory, workloads,
                                             archives, recorded=True)

    async def test_a_whole_archive_that_is_not_the_recorded_one_is_refused(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        """An archive swapped for another whole, self-consistent one (here: a later
        checkpoint of the same runtime, made where the first was) cannot vouch for itself:
        the digest recorded when the first was made refuses it, before anything is made."""
        spec = self._spec(spec_factory, fresh_user())
        info = await self._runtime_with_x(workloads, spec)
        archive = archives / "recorded.ckpt"
        recorded = await checkpointer.checkpoint(backend, info.handle,
                                                 archive_path=str(archive), leave_running=True)
        await value_of(info.address or "", "x = 7")
        other = archives / "other.ckpt"
        await checkpointer.checkpoint(backend, info.handle, archive_path=str(other),
                                      leave_running=True)
        os.replace(other, archive)
        target = dataclasses.replace(spec, name=f"{spec.name}-swapped")
        await self._assert_restore_refused(checkpointer, backend, workloads, str(archive),
                                           target, sha256=recorded.sha256)
        assert await value_of(info.address or "", "x") == "7", "the source is untouched"

    async def test_a_file_that_is_no_archive_is_refused(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        spec = self._spec(spec_factory, fresh_user())
        junk = archives / "junk.ckpt"
        junk.write_bytes(os.urandom(64 * 1024))
        await self._assert_restore_refused(checkpointer, backend, workloads, str(junk), spec)

    async def test_restoring_onto_an_existing_name_is_a_conflict(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        spec = self._spec(spec_factory, fresh_user())
        info = await self._runtime_with_x(workloads, spec)
        archive = str(archives / "snap.ckpt")
        await checkpointer.checkpoint(backend, info.handle, archive_path=archive,
                                      leave_running=True)
        with pytest.raises(Conflict):
            await checkpointer.restore(backend, archive, spec=spec)
        assert (await backend.inspect(info.handle)).status == STATUS_RUNNING
        assert await value_of(info.address or "", "x") == "42"

    # ------------------------------------------------------------------ the restored workload

    async def test_a_restored_workload_is_tracked_like_any_other(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        spec = self._spec(spec_factory, fresh_user())
        info = await self._runtime_with_x(workloads, spec)
        archive = str(archives / "sleep.ckpt")
        await self._sleep(checkpointer, backend, info, archive)
        restored = await self._restore(checkpointer, backend, workloads, archive, spec)
        assert (await backend.inspect(spec.name)).status == STATUS_RUNNING
        assert spec.name in {i.name for i in await backend.list(user_id=spec.user_id)}
        stats = await backend.stats(spec.name)
        assert stats.memory_working_set > 0
        assert stats.memory_limit == spec.memory_bytes
        await backend.stop(spec.name, timeout=0)
        assert (await backend.inspect(spec.name)).status == STATUS_EXITED
        assert not await answers(restored.address)
        await backend.remove(spec.name)
        with pytest.raises(NotFound):
            await backend.inspect(spec.name)

    async def test_a_restored_workload_that_is_removed_while_running_ends(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        spec = self._spec(spec_factory, fresh_user())
        info = await self._runtime_with_x(workloads, spec)
        archive = str(archives / "sleep.ckpt")
        await self._sleep(checkpointer, backend, info, archive)
        restored = await self._restore(checkpointer, backend, workloads, archive, spec)
        await backend.remove(spec.name)
        assert not await answers(restored.address)

    # ------------------------------------------------------------------ moving archives

    async def test_an_exported_and_imported_archive_restores_the_same(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        spec = self._spec(spec_factory, fresh_user())
        info = await self._runtime_with_x(workloads, spec)
        source = str(archives / "source.ckpt")
        made = await self._sleep(checkpointer, backend, info, source)
        chunks = 0

        async def stream() -> AsyncIterator[bytes]:
            nonlocal chunks
            async for chunk in checkpointer.export_archive(source):
                chunks += 1
                yield chunk

        moved = archives / "moved" / "target.ckpt"
        imported = await checkpointer.import_archive(stream(), str(moved))
        assert chunks > 1, "the archive is streamed in chunks"
        assert imported.sha256 == made.sha256 and imported.size_bytes == made.size_bytes
        assert dict(imported.depends_on) == dict(made.depends_on)
        assert stat.S_IMODE((await trio.Path(moved).stat()).st_mode) == 0o600
        os.unlink(source)
        restored = await self._restore(checkpointer, backend, workloads, str(moved), spec)
        assert await value_of(restored.address or "", "x") == "42"

    async def test_a_damaged_import_is_refused_and_leaves_no_file(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        info = await self._runtime_with_x(workloads, self._spec(spec_factory, fresh_user()))
        source = archives / "source.ckpt"
        await checkpointer.checkpoint(backend, info.handle, archive_path=str(source),
                                      leave_running=True)
        flip_a_byte(source, source.stat().st_size // 3)

        async def stream() -> AsyncIterator[bytes]:
            async for chunk in checkpointer.export_archive(str(source)):
                yield chunk

        target = archives / "moved" / "target.ckpt"
        with pytest.raises(RestoreIncompatible):
            await checkpointer.import_archive(stream(), str(target))
        assert not await trio.Path(target.parent).exists() or \
            os.listdir(target.parent) == []

    # ------------------------------------------------------------------ a big runtime

    async def test_a_200_mb_object_survives_sleep_and_wake(
            self, checkpointer: Checkpointer, backend: ContainerBackend,
            spec_factory: SpecFactory, workloads: Workloads, archives: Path,
            capabilities: CheckpointCapabilities) -> None:
        spec = self._spec(spec_factory, fresh_user(), memory_bytes=self.big_memory_bytes)
        info = await self._runtime_with_x(workloads, spec)
        digest = await value_of(info.address or "",
                                BIG_OBJECT.format(size=self.big_object_bytes))
        assert digest and len(digest.strip("'")) == 64
        archive = str(archives / "big.ckpt")
        started = time.monotonic()
        result = await checkpointer.checkpoint(backend, info.handle, archive_path=archive,
                                               leave_running=False)
        slept = time.monotonic() - started
        assert result.size_bytes > self.big_object_bytes
        await backend.remove(info.handle)
        started = time.monotonic()
        restored = await self._restore(checkpointer, backend, workloads, archive, spec,
                                       sha256=result.sha256)
        check = await value_of(restored.address or "", BIG_CHECK)
        woke = time.monotonic() - started
        assert check == str(self.big_object_bytes)
        assert await value_of(restored.address or "", "x") == "42"
        print(f"200 MB runtime: sleep {slept:.2f} s, wake {woke:.2f} s, "
              f"archive {result.size_bytes / MiB:.0f} MiB")
