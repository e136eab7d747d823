"""The criu checkpointer on the docker backend, on a real podman service with a real mrmd-python
runtime: sleep (checkpoint + stop) and restore with variables intact, snapshots that leave the
runtime answering, forks under a new name, damaged and incompatible archives refused, archives
exported and imported, a 200 MB object kept.

A throw-away `podman system service` of the module's own (as tests/docker does) and the local
images; skipped without podman or CRIU (failed with MARKCO_REQUIRE_SYSTEM=1).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import stat
import tarfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from markco_criu import CriuCheckpointer, CriuOptions
from markco_criu.podman import (
    END_BLOCKS,
    TRAILER_DATA,
    TRAILER_SPAN,
    EngineCheckpointer,
    criu_version,
    incompatibilities,
    read_manifest,
)
from markco_docker import DockerBackend, DockerOptions
from markco_docker.testing import (
    PodmanUnavailable,
    kit_spec_factory,
    local_images_fixture,
    purge_deployment,
    running_podman_service,
)

from markco_trio.errors import (
    CheckpointError,
    CheckpointUnavailable,
    Conflict,
    NotFound,
    RestoreIncompatible,
)
from markco_trio.records import WorkloadRole
from markco_trio.roles import (
    LABEL_OPERATION,
    STATUS_EXITED,
    STATUS_RUNNING,
    Checkpointer,
    ContainerInfo,
    ContainerSpec,
    EngineCheckpointing,
    EngineFacts,
)
from markco_trio.testing.checkpoint_kit import CheckpointerContract
from markco_trio.testing.system import missing_system

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0

pytestmark = pytest.mark.system


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def podman_engine_url() -> Iterator[str]:
    """A podman service of this module's own (its containers and networks purged at the end)."""
    if criu_version() is None:
        missing_system("CRIU", "run `scripts/setup-criu` as root (CRIU 4.1 with markco's patches)")
    try:
        with running_podman_service(containers_conf=ROOT / "config" / "containers.conf") as url:
            yield url
    except PodmanUnavailable as exc:
        missing_system("podman", str(exc))


local_image_mounts = local_images_fixture(scope="module")


@pytest.fixture
async def backend(podman_engine_url: str, local_image_mounts: list[str],
                  tmp_path: Path) -> AsyncIterator[DockerBackend]:
    deployment = f"ckpt-{os.urandom(3).hex()}"
    options = DockerOptions(engine_url=podman_engine_url, mounts=local_image_mounts)
    try:
        async with DockerBackend(options, deployment_id=deployment,
                                 state_dir=tmp_path / "state") as entered:
            yield entered
    finally:  # what a test made (or a failed one left behind)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(purge_deployment, podman_engine_url, deployment)


@pytest.fixture
async def checkpointer() -> AsyncIterator[EngineCheckpointer]:
    async with EngineCheckpointer() as entered:
        yield entered


@pytest.fixture
def spec_factory(backend: DockerBackend, tmp_path: Path) -> Callable[..., ContainerSpec]:
    return kit_spec_factory(backend.deployment_id, tmp_path / "users")


@pytest.fixture
def archives(tmp_path: Path) -> Path:
    path = tmp_path / "snapshots"
    path.mkdir(mode=0o700)
    return path


# ------------------------------------------------------------------------------ helpers


async def wait_ready(info: ContainerInfo) -> None:
    assert info.address is not None
    deadline = trio.current_time() + READY_TIMEOUT
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                response = await client.get(f"http://{info.address}/mrp/v1/capabilities")
                if response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if trio.current_time() > deadline:
                raise AssertionError(f"{info.name} did not answer at {info.address}")
            await trio.sleep(0.02)


async def run(info: ContainerInfo, code: str) -> str:
    """Execute `code` in the runtime; its stdout."""
    async with httpx.AsyncClient(timeout=120.0) as client:
        response = await client.post(f"http://{info.address}/mrp/v1/execute",
                                     json={"code": code})
    result = response.json()
    assert result.get("success"), result
    return str(result.get("stdout", ""))


async def started_runtime(backend: DockerBackend, spec: ContainerSpec) -> ContainerInfo:
    info = await backend.start((await backend.create(spec)).handle)
    await wait_ready(info)
    return info


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ the contract kit


class TestCriuCheckpointerOnPodman(CheckpointerContract):
    """The registered `criu` checkpointer (it dispatches the docker backend to the engine
    checkpointer) passes the Checkpointer contract kit on podman, with mrmd-python."""

    @pytest.fixture
    async def checkpointer(self) -> AsyncIterator[CriuCheckpointer]:  # type: ignore[override]
        async with CriuCheckpointer(CriuOptions()) as entered:
            yield entered


# ------------------------------------------------------------------------------ on podman


def test_the_checkpointer_is_a_checkpointer() -> None:
    assert isinstance(EngineCheckpointer(), Checkpointer)


async def test_podman_workloads_can_be_checkpointed_left_running_and_forked(
        backend: DockerBackend, checkpointer: EngineCheckpointer) -> None:
    assert isinstance(backend, EngineCheckpointing)
    caps = checkpointer.capabilities(backend)
    assert caps.checkpoint and caps.leave_running and caps.restore_as_new
    assert not caps.pre_copy and not caps.established_tcp


async def test_sleep_stops_the_runtime_and_a_restore_brings_its_variables_back(
        backend: DockerBackend, checkpointer: EngineCheckpointer,
        spec_factory: Callable[..., ContainerSpec], archives: Path) -> None:
    spec = spec_factory("alice", WorkloadRole.RUNTIME)
    source = await started_runtime(backend, spec)
    await run(source, "x = 42")
    path = archives / "sleep.img"

    result = await checkpointer.checkpoint(backend, source.handle, archive_path=str(path),
                                           leave_running=False)

    assert (await backend.inspect(source.handle)).status == STATUS_EXITED  # not a crash
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert result.size_bytes == path.stat().st_size and result.sha256 == file_sha256(path)
    assert os.listdir(archives) == ["sleep.img"]  # no temporary left
    for key in ("engine", "engine_version", "criu", "kernel", "image", "image_id"):
        assert result.depends_on[key], key
    assert result.depends_on["engine"] == "podman"

    await backend.remove(source.handle)  # the lifecycle removes the sleeper, then wakes it
    restored = await checkpointer.restore(backend, str(path), spec=spec)
    await wait_ready(restored)

    assert restored.status == STATUS_RUNNING and restored.name == spec.name
    assert await run(restored, "print(x)") == "42\n"
    # A normal workload of the backend: listed, sampled, limited, stopped, removed.
    assert [info.name for info in await backend.list(user_id="alice")] == [spec.name]
    stats = await backend.stats(restored.handle)
    assert stats.memory_limit == spec.memory_bytes and stats.memory_working_set > 0
    await backend.stop(restored.handle, timeout=1)
    assert (await backend.inspect(restored.handle)).status == STATUS_EXITED
    await backend.remove(restored.handle)
    with pytest.raises(NotFound):
        await backend.inspect(spec.name)


async def test_a_snapshot_leaves_the_source_answering_and_a_fork_is_apart(
        backend: DockerBackend, checkpointer: EngineCheckpointer,
        spec_factory: Callable[..., ContainerSpec], archives: Path) -> None:
    spec = spec_factory("bob", WorkloadRole.RUNTIME)
    spec = dataclasses.replace(spec, labels={**spec.labels, LABEL_OPERATION: "op-snapshot"})
    source = await started_runtime(backend, spec)
    await run(source, "x = 42")
    path = archives / "snap.img"

    await checkpointer.checkpoint(backend, source.handle, archive_path=str(path),
                                  leave_running=True)
    assert (await backend.inspect(source.handle)).status == STATUS_RUNNING
    assert await run(source, "print(x)") == "42\n"

    fork_spec = dataclasses.replace(spec, name=spec.name + "-fork", memory_bytes=384 << 20,
                                    labels={**spec.labels, LABEL_OPERATION: "op-fork"})
    fork = await checkpointer.restore(backend, str(path), spec=fork_spec)
    await wait_ready(fork)
    assert fork.name == fork_spec.name and fork.address != source.address
    # The spec's labels, not the archive's (Podman keeps the archive's unless rewritten).
    assert fork.labels[LABEL_OPERATION] == "op-fork"
    assert (await backend.inspect(source.handle)).labels[LABEL_OPERATION] == "op-snapshot"
    assert await run(fork, "print(x); x = 7") == "42\n"
    assert await run(source, "print(x)") == "42\n"  # the source is untouched
    assert (await backend.stats(fork.handle)).memory_limit == 384 << 20  # the spec's limits
    assert sorted(info.name for info in await backend.list(user_id="bob")) == sorted(
        [spec.name, fork_spec.name])

    with pytest.raises(Conflict):  # the name is taken: nothing is replaced
        await checkpointer.restore(backend, str(path), spec=fork_spec)
    assert await run(fork, "print(x)") == "7\n"


async def test_a_damaged_archive_is_refused_and_nothing_is_created(
        backend: DockerBackend, checkpointer: EngineCheckpointer,
        spec_factory: Callable[..., ContainerSpec], archives: Path) -> None:
    spec = spec_factory("carol", WorkloadRole.RUNTIME)
    source = await started_runtime(backend, spec)
    path = archives / "damaged.img"
    await checkpointer.checkpoint(backend, source.handle, archive_path=str(path),
                                  leave_running=True)
    with path.open("r+b") as f:  # one byte of the CRIU images, in the middle
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))

    fork_spec = dataclasses.replace(spec, name=spec.name + "-fork")
    with pytest.raises(RestoreIncompatible, match="damaged"):
        await checkpointer.restore(backend, str(path), spec=fork_spec)
    with pytest.raises(NotFound):
        await backend.inspect(fork_spec.name)

    truncated = archives / "truncated.img"
    with path.open("rb") as f:
        truncated.write_bytes(f.read(path.stat().st_size // 3))
    with pytest.raises(RestoreIncompatible):
        await checkpointer.restore(backend, str(truncated), spec=fork_spec)
    assert (await backend.inspect(source.handle)).status == STATUS_RUNNING


async def test_an_archive_made_where_the_kernel_differs_is_refused(
        backend: DockerBackend, checkpointer: EngineCheckpointer,
        spec_factory: Callable[..., ContainerSpec], archives: Path) -> None:
    spec = spec_factory("dave", WorkloadRole.RUNTIME)
    source = await started_runtime(backend, spec)
    path = archives / "elsewhere.img"
    await checkpointer.checkpoint(backend, source.handle, archive_path=str(path),
                                  leave_running=True)
    manifest = read_manifest(path)
    manifest["depends_on"]["kernel"] = "5.10.0-old"
    rewrite_trailer(path, manifest)

    fork_spec = dataclasses.replace(spec, name=spec.name + "-fork")
    with pytest.raises(RestoreIncompatible, match="kernel was 5.10.0-old"):
        await checkpointer.restore(backend, str(path), spec=fork_spec)
    manifest["depends_on"]["kernel"] = os.uname().release
    rewrite_trailer(path, manifest)
    other_user = spec_factory("erin", WorkloadRole.RUNTIME)
    with pytest.raises(CheckpointError, match="dave"):
        await checkpointer.restore(backend, str(path), spec=other_user)  # dave's, not erin's
    with pytest.raises(NotFound):
        await backend.inspect(fork_spec.name)


async def test_a_whole_archive_criu_cannot_restore_here_is_incompatible_and_leaves_nothing(
        backend: DockerBackend, checkpointer: EngineCheckpointer,
        spec_factory: Callable[..., ContainerSpec], archives: Path) -> None:
    spec = spec_factory("judy", WorkloadRole.RUNTIME)
    source = await started_runtime(backend, spec)
    path = archives / "unrestorable.img"
    await checkpointer.checkpoint(backend, source.handle, archive_path=str(path),
                                  leave_running=True)
    # What CRIU finds changed (here: the core image of the runtime's process, garbled), in an
    # archive whose hash is right: CRIU refuses it, not markco's check.
    with tarfile.open(path) as tar:
        cores = [m for m in tar.getmembers() if m.name.startswith("checkpoint/core-")]
        offset, size = cores[0].offset_data, cores[0].size
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))
    manifest = read_manifest(path)
    with path.open("rb") as f:
        manifest["body_sha256"] = hashlib.sha256(f.read(manifest["body_bytes"])).hexdigest()
    rewrite_trailer(path, manifest)

    fork_spec = dataclasses.replace(spec, name=spec.name + "-fork")
    with pytest.raises(RestoreIncompatible, match="CRIU cannot restore it"):
        await checkpointer.restore(backend, str(path), spec=fork_spec)
    with pytest.raises(NotFound):
        await backend.inspect(fork_spec.name)
    assert (await backend.inspect(source.handle)).status == STATUS_RUNNING


def rewrite_trailer(path: Path, manifest: dict[str, Any]) -> None:
    data = json.dumps(manifest, sort_keys=True).encode().ljust(TRAILER_DATA, b" ")
    with path.open("r+b") as f:
        f.seek(path.stat().st_size - TRAILER_SPAN + 512)
        f.write(data)
    assert path.read_bytes()[-END_BLOCKS:] == bytes(END_BLOCKS)


async def test_an_exported_archive_imported_elsewhere_restores(
        backend: DockerBackend, checkpointer: EngineCheckpointer,
        spec_factory: Callable[..., ContainerSpec], archives: Path, tmp_path: Path) -> None:
    spec = spec_factory("frank", WorkloadRole.RUNTIME)
    source = await started_runtime(backend, spec)
    await run(source, "x = 42")
    path = archives / "out.img"
    made = await checkpointer.checkpoint(backend, source.handle, archive_path=str(path),
                                         leave_running=False)
    await backend.remove(source.handle)

    other_host = tmp_path / "other-host" / "in.img"
    imported = await checkpointer.import_archive(await checkpointer.export_archive(str(path)),
                                                 str(other_host))
    assert imported.sha256 == made.sha256 == file_sha256(other_host)
    assert imported.size_bytes == made.size_bytes
    assert dict(imported.depends_on) == dict(made.depends_on)
    assert stat.S_IMODE(other_host.stat().st_mode) == 0o600

    restored = await checkpointer.restore(backend, str(other_host), spec=spec)
    await wait_ready(restored)
    assert await run(restored, "print(x)") == "42\n"
    await backend.remove(restored.handle)

    async def damaged() -> AsyncIterator[bytes]:
        async for chunk in await checkpointer.export_archive(str(path)):
            yield chunk[:100] + b"\0" + chunk[101:]

    broken = tmp_path / "other-host" / "broken.img"
    with pytest.raises(RestoreIncompatible):
        await checkpointer.import_archive(damaged(), str(broken))
    assert sorted(os.listdir(broken.parent)) == ["in.img"]  # nothing half-written


async def test_a_failed_checkpoint_leaves_no_file_and_the_workload_as_it_was(
        backend: DockerBackend, checkpointer: EngineCheckpointer,
        spec_factory: Callable[..., ContainerSpec], archives: Path) -> None:
    spec = spec_factory("gina", WorkloadRole.RUNTIME)
    created = await backend.create(spec)
    with pytest.raises(CheckpointError, match="not running"):
        await checkpointer.checkpoint(backend, created.handle,
                                      archive_path=str(archives / "never.img"),
                                      leave_running=False)
    assert os.listdir(archives) == []
    with pytest.raises(NotFound):
        await checkpointer.checkpoint(backend, "markco-someone-else-runtime",
                                      archive_path=str(archives / "never.img"),
                                      leave_running=True)
    assert os.listdir(archives) == []
    await backend.remove(created.handle)


async def test_a_full_disk_during_a_sleep_leaves_the_runtime_running_with_its_variables(
        backend: DockerBackend, spec_factory: Callable[..., ContainerSpec]) -> None:
    spec = spec_factory("ivan", WorkloadRole.RUNTIME)
    source = await started_runtime(backend, spec)
    await run(source, "x = 42")
    written = 0

    async def full_disk(block: bytes) -> None:
        nonlocal written
        written += len(block)
        if written > 1 << 20:
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):  # the sink's error, not the engine's
        await backend.export_checkpoint(source.handle, full_disk, leave_running=False)
    # The engine had stopped it: it is resumed from the engine's own copy, variables intact.
    resumed = await backend.inspect(source.handle)
    assert resumed.status == STATUS_RUNNING
    await wait_ready(resumed)
    assert await run(resumed, "print(x)") == "42\n"
    await backend.remove(source.handle)


# ------------------------------------------------------------------------------ without podman


@dataclasses.dataclass
class DockerEngineStub:
    """An `EngineCheckpointing` backend whose engine is Docker's."""

    name: str = "docker"

    def capabilities(self) -> Any:
        return dataclasses.make_dataclass("Caps", [("checkpoint", bool)])(False)

    async def engine_facts(self) -> EngineFacts:
        return EngineFacts(kind="docker", version="20.10.24", api_version="1.41", kernel="",
                           oci_runtime="", local=True, checkpoint_api=False)

    async def image_id(self, image: str) -> str | None:
        return None

    async def export_checkpoint(self, handle: str, write: Any, *, leave_running: bool,
                                tcp_established: bool = False) -> dict[str, Any]:
        raise AssertionError("never asked")

    async def import_checkpoint(self, spec: ContainerSpec, chunks: Any, *,
                                tcp_established: bool = False) -> ContainerInfo:
        raise AssertionError("never asked")


async def test_docker_engines_say_clearly_that_they_cannot_checkpoint(tmp_path: Path) -> None:
    stub: Any = DockerEngineStub()
    checkpointer = EngineCheckpointer()
    assert not checkpointer.capabilities(stub).checkpoint
    with pytest.raises(CheckpointUnavailable, match="Podman"):
        await checkpointer.checkpoint(stub, "x", archive_path=str(tmp_path / "a.img"),
                                      leave_running=True)
    assert os.listdir(tmp_path) == []


async def test_a_file_that_is_not_an_engine_archive_is_refused(tmp_path: Path) -> None:
    stub: Any = DockerEngineStub()
    path = tmp_path / "other.img"
    path.write_bytes(os.urandom(100_000))
    with pytest.raises(RestoreIncompatible, match="not a usable checkpoint archive"):
        await EngineCheckpointer().restore(stub, str(path), spec=None)  # type: ignore[arg-type]


def test_what_changed_since_a_checkpoint_is_named() -> None:
    then = {"engine": "podman", "engine_version": "4.3.1", "criu": "4.1.1", "kernel": "6.18.4"}
    assert incompatibilities(then, {**then, "engine_version": "4.9.0", "criu": "4.1.2"}) == []
    assert incompatibilities(then, {**then, "criu": "4.2.0", "kernel": "6.19.0"}) == [
        "criu was 4.1.1, is 4.2.0", "kernel was 6.18.4, is 6.19.0"]
    assert incompatibilities(then, {**then, "engine": "docker", "engine_version": "5.0"}) == [
        "engine was podman, is docker", "engine_version was 4.3.1, is 5.0"]
    assert incompatibilities(then, {k: v for k, v in then.items() if k != "criu"}) == [
        "criu was 4.1.1, is unknown or missing"]

