"""The criu checkpointer on the built-in process backend passes the Checkpointer contract kit with
a real mrmd-python runtime; and what is particular to CRIU on process trees.

Needs root (namespaces, cgroups, CRIU) and CRIU 4.1 with markco's patches (`scripts/setup-criu`):
skipped without them on a developer's machine, failed in CI (MARKCO_REQUIRE_SYSTEM=1).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import trio
from markco_criu import CriuCheckpointer, CriuOptions
from markco_criu.archive import read_manifest
from markco_criu.plugin import is_subreaper
from markco_criu.process import FORMAT, transient_mounts

from markco_trio.builtin.process_backend import ProcessBackend, ProcessOptions, procs
from markco_trio.builtin.process_backend.cgroups import CGROUP_MOUNT, CONTROLLERS
from markco_trio.errors import CheckpointError, CheckpointUnavailable, RestoreIncompatible
from markco_trio.records import WorkloadRole
from markco_trio.roles import (
    LABEL_ROLE,
    LABEL_USER,
    STATUS_EXITED,
    ContainerSpec,
    ProcessTreeCheckpointing,
    workload_name,
)
from markco_trio.testing.checkpoint_kit import (
    CheckpointerContract,
    Workloads,
    answers,
    execute,
    fresh_user,
    value_of,
)
from markco_trio.testing.system import missing_system
from markco_trio.testing.workload_python import WorkloadPython, workload_python

pytestmark = pytest.mark.system


def _criu_or_skip() -> None:
    if os.geteuid() != 0:
        missing_system("root", "the process backend's CRIU checkpoints need root")
    if shutil.which("criu", path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin") is None:
        missing_system("criu", "run scripts/setup-criu")


@pytest.fixture(scope="module")
def root_dir() -> Iterator[Path]:
    """A directory under /tmp that workloads' accounts can traverse."""
    root = Path(tempfile.mkdtemp(prefix="markco-criu-", dir="/tmp"))
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def wpython(root_dir: Path) -> WorkloadPython:
    return workload_python(root_dir)


@pytest.fixture
def data_dir(root_dir: Path) -> Path:
    path = root_dir / uuid.uuid4().hex[:12]
    path.mkdir(mode=0o711)
    return path


def _remove_cgroups(deployment: str) -> None:
    deadline = time.monotonic() + 2
    for controller in CONTROLLERS:
        path = CGROUP_MOUNT / controller / "markco" / deployment
        while path.is_dir():
            for child in [c for c in path.iterdir() if c.is_dir()]:
                try:
                    child.rmdir()
                except OSError:
                    pass
            try:
                path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)


@pytest.fixture
def deployment() -> Iterator[str]:
    name = f"ck-{uuid.uuid4().hex[:10]}"
    yield name
    _remove_cgroups(name)


@pytest.fixture
async def backend(data_dir: Path, deployment: str) -> AsyncIterator[ProcessBackend]:
    _criu_or_skip()
    options = ProcessOptions(state_dir=str(data_dir / "workloads"))
    async with ProcessBackend(options, deployment_id=deployment, data_dir=data_dir) as backend:
        if not backend.capabilities().pid_namespace:
            missing_system("PID namespaces", "unshare --pid --mount must work (root)")
        yield backend


@pytest.fixture
async def checkpointer() -> AsyncIterator[CriuCheckpointer]:
    _criu_or_skip()
    async with CriuCheckpointer(CriuOptions()) as checkpointer:
        if checkpointer.process.unavailable:
            missing_system("a working criu", checkpointer.process.unavailable)
        yield checkpointer


@pytest.fixture
def spec_factory(data_dir: Path, deployment: str,
                 wpython: WorkloadPython) -> Callable[..., ContainerSpec]:
    def make(user_id: str, role: WorkloadRole) -> ContainerSpec:
        return ContainerSpec(
            name=workload_name(deployment, user_id, role), user_id=user_id, role=role,
            command=(wpython.script("mrmd-python"), "--foreground", "--managed", "--host",
                     "{host}", "--port", "{port}", "--cwd", "{user_dir}"),
            env={"MARKCO_TEST": "1"}, user_dir=str(data_dir / "users" / user_id),
            memory_bytes=512 << 20, cpus=1.0,
            labels={LABEL_USER: user_id, LABEL_ROLE: role.value}, stop_signal="SIGKILL")

    return make


class TestProcessCheckpoints(CheckpointerContract):
    """The kit on the process backend (PID, mount and network namespaces, cgroups)."""


# --------------------------------------------------------------------- particular to CRIU here


async def test_the_process_backend_offers_process_tree_checkpoints(
        backend: ProcessBackend) -> None:
    assert isinstance(backend, ProcessTreeCheckpointing)
    assert {"pid", "mnt"} <= set(backend.process_tree_support())


async def test_the_checkpointer_makes_the_daemon_a_child_subreaper_while_entered() -> None:
    _criu_or_skip()
    before = is_subreaper()
    async with CriuCheckpointer(CriuOptions(subreaper=True)):
        assert is_subreaper()
    assert is_subreaper() == before


async def test_a_missing_criu_makes_checkpoints_unavailable_and_says_how_to_fix_it(
        backend: ProcessBackend, spec_factory: Callable[..., ContainerSpec],
        tmp_path: Path) -> None:
    async with CriuCheckpointer(CriuOptions(criu="/nonexistent/criu", subreaper=False)) as cp:
        caps = cp.capabilities(backend)
        assert not caps.checkpoint
        assert any("scripts/setup-criu" in note for note in caps.notes)
        with pytest.raises(CheckpointUnavailable, match="scripts/setup-criu"):
            await cp.checkpoint(backend, "anything", archive_path=str(tmp_path / "a"),
                                leave_running=True)


async def test_a_restored_runtime_keeps_writing_its_own_log_and_exit_status(
        checkpointer: CriuCheckpointer, backend: ProcessBackend,
        spec_factory: Callable[..., ContainerSpec], tmp_path: Path) -> None:
    """A fork writes to its own files (--inherit-fd), not to its source's."""
    workloads = Workloads(backend)
    try:
        spec = dataclasses.replace(spec_factory(fresh_user(), WorkloadRole.RUNTIME))
        source = await workloads.run(spec)
        archive = str(tmp_path / "fork.ckpt")
        await checkpointer.checkpoint(backend, source.handle, archive_path=archive,
                                      leave_running=True)
        fork_spec = dataclasses.replace(spec, name=f"{spec.name}-fork")
        workloads.track(fork_spec.name)
        fork = await checkpointer.restore(backend, archive, spec=fork_spec)
        await value_of(fork.address or "", "import os; os.write(1, b'fork-says-hello\\n')")
        logs = await backend.logs(fork_spec.name)
        assert "fork-says-hello" in logs
        assert "fork-says-hello" not in await backend.logs(spec.name)
        await backend.stop(fork_spec.name, timeout=0)
        assert (await backend.inspect(fork_spec.name)).status == STATUS_EXITED
        assert (await backend.inspect(spec.name)).status == "running"
        assert await answers(source.address)
    finally:
        with trio.CancelScope(shield=True):
            await workloads.remove_all()


async def test_an_archive_records_what_its_restore_depends_on(
        checkpointer: CriuCheckpointer, backend: ProcessBackend,
        spec_factory: Callable[..., ContainerSpec], tmp_path: Path) -> None:
    workloads = Workloads(backend)
    try:
        info = await workloads.run(spec_factory(fresh_user(), WorkloadRole.RUNTIME))
        archive = tmp_path / "a.ckpt"
        result = await checkpointer.checkpoint(backend, info.handle,
                                               archive_path=str(archive), leave_running=True)
        manifest = read_manifest(archive, (FORMAT,))
        assert manifest["depends_on"]["kernel"] == os.uname().release
        assert manifest["depends_on"]["criu"] == checkpointer.process.criu.version  # type: ignore[union-attr]
        assert manifest["depends_on"]["mrmd_python"]
        assert any("python" in exe for exe in manifest["depends_on"]["executables"])
        assert dict(result.depends_on) == manifest["depends_on"]
    finally:
        with trio.CancelScope(shield=True):
            await workloads.remove_all()


async def test_a_changed_kernel_makes_the_archive_incompatible(
        checkpointer: CriuCheckpointer, backend: ProcessBackend,
        spec_factory: Callable[..., ContainerSpec], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    workloads = Workloads(backend)
    try:
        spec = spec_factory(fresh_user(), WorkloadRole.RUNTIME)
        info = await workloads.run(spec)
        archive = str(tmp_path / "a.ckpt")
        await checkpointer.checkpoint(backend, info.handle, archive_path=archive,
                                      leave_running=True)
        import markco_criu.process as process

        monkeypatch.setattr(process.platform, "release", lambda: "9.9.9-other")
        target = dataclasses.replace(spec, name=f"{spec.name}-copy")
        workloads.track(target.name)
        with pytest.raises(RestoreIncompatible, match="kernel was"):
            await checkpointer.restore(backend, archive, spec=target)
        assert target.name not in {i.name for i in await backend.list()}
    finally:
        with trio.CancelScope(shield=True):
            await workloads.remove_all()


def _fake_mountinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(text)
    real_open = open

    def fake_open(path: str, *args: object, **kwargs: object) -> object:
        if path == "/proc/4242/mountinfo":
            return real_open(mountinfo, *args, **kwargs)  # type: ignore[call-overload]
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", fake_open)


def test_mounts_of_container_engines_are_left_out_of_a_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_mountinfo(tmp_path, monkeypatch,
                    "53 1 252:0 / / rw - ext4 /dev/vda rw\n"
                    "65 53 0:5 / /proc rw - proc proc rw\n"
                    "83 53 252:0 /run/netns /run/netns rw - ext4 /dev/vda rw\n"
                    "84 83 0:4 net:[4026532] /run/netns/cni-1 rw - nsfs nsfs rw\n"
                    "90 53 0:60 / /var/lib/containers/storage/overlay/abc/merged rw - "
                    "overlay o rw\n"
                    "91 53 0:61 / /data/my\\040files rw - ext4 /dev/vdb rw\n")
    assert transient_mounts(4242) == ["/var/lib/containers/storage/overlay/abc/merged",
                                      "/run/netns/cni-1", "/run/netns"]


def test_scratch_mounts_the_runtime_does_not_use_are_left_out_of_a_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another program's mount under /tmp may be gone when the runtime wakes; one holding the
    runtime's own files is kept, and so are its private /tmp-like mounts."""
    _fake_mountinfo(tmp_path, monkeypatch,
                    "53 1 252:0 / / rw - ext4 /dev/vda rw\n"
                    "70 53 0:70 / /tmp/markco-faults-x/data rw - tmpfs tmpfs rw\n"
                    "71 53 0:71 / /mnt/data rw - ext4 /dev/vdc rw\n"
                    "72 53 0:72 / /var/tmp rw - tmpfs markco-tmp rw\n"
                    "73 53 0:73 / /dev/shm rw - tmpfs markco-tmp rw\n")
    in_use = {"/mnt/data/users/u1/.ipython/profile_default/history.sqlite", "/usr/bin/python3"}
    assert transient_mounts(4242, in_use) == ["/tmp/markco-faults-x/data"]


async def test_a_checkpoint_that_stops_leaves_no_process_of_the_workload(
        checkpointer: CriuCheckpointer, backend: ProcessBackend,
        spec_factory: Callable[..., ContainerSpec], tmp_path: Path) -> None:
    workloads = Workloads(backend)
    try:
        spec = spec_factory(fresh_user(), WorkloadRole.RUNTIME)
        info = await workloads.run(spec)
        tree = await backend.checkpoint_target(info.handle)
        await checkpointer.checkpoint(backend, info.handle,
                                      archive_path=str(tmp_path / "a.ckpt"),
                                      leave_running=False)
        for procs_file in tree.cgroup_procs:
            assert (await trio.Path(procs_file).read_text()).split() == []
        identity = procs.identify(tree.root_pid)
        assert identity is None or identity.start_ticks != tree.start_ticks or \
            not procs.is_alive(identity)
    finally:
        with trio.CancelScope(shield=True):
            await workloads.remove_all()


async def test_a_checkpoint_whose_archive_cannot_be_written_resumes_the_runtime(
        checkpointer: CriuCheckpointer, backend: ProcessBackend,
        spec_factory: Callable[..., ContainerSpec], tmp_path: Path) -> None:
    """The tree is dumped stopped and only ended once the archive is in place: a failure to
    write it (here: its directory is a file) resumes the runtime, variables intact."""
    workloads = Workloads(backend)
    try:
        info = await workloads.run(spec_factory(fresh_user(), WorkloadRole.RUNTIME))
        await value_of(info.address or "", "x = 42")
        (tmp_path / "not-a-dir").write_text("")
        with pytest.raises(CheckpointError):
            await checkpointer.checkpoint(backend, info.handle,
                                          archive_path=str(tmp_path / "not-a-dir" / "a.ckpt"),
                                          leave_running=False)
        assert (await backend.inspect(info.handle)).status == "running"
        assert await value_of(info.address or "", "x") == "42"
    finally:
        with trio.CancelScope(shield=True):
            await workloads.remove_all()


async def test_a_snapshot_restores_after_the_runtime_ran_more_cells(
        checkpointer: CriuCheckpointer, backend: ProcessBackend,
        spec_factory: Callable[..., ContainerSpec], tmp_path: Path) -> None:
    """Files the runtime holds open for writing (IPython's history database) change after a
    snapshot; they are the user's files, not part of it, and do not stop its restore."""
    workloads = Workloads(backend)
    try:
        spec = spec_factory(fresh_user(), WorkloadRole.RUNTIME)
        info = await workloads.run(spec)
        address = info.address or ""
        await execute(address, "x = 42", store_history=True)
        archive = str(tmp_path / "snap.ckpt")
        await checkpointer.checkpoint(backend, info.handle, archive_path=archive,
                                      leave_running=True)
        history = Path(spec.user_dir, ".ipython", "profile_default", "history.sqlite")
        before = (await trio.Path(history).stat()).st_size
        for i in range(30):
            await execute(address, f"x = {i}\n#" + "a" * 20000, store_history=True)
        with trio.fail_after(20):
            # IPython writes its history from a thread of its own, a moment later.
            while (await trio.Path(history).stat()).st_size <= before:  # noqa: ASYNC110
                await trio.sleep(0.05)
        target = dataclasses.replace(spec, name=f"{spec.name}-snap")
        workloads.track(target.name)
        restored = await checkpointer.restore(backend, archive, spec=target)
        assert await value_of(restored.address or "", "x") == "42"
    finally:
        with trio.CancelScope(shield=True):
            await workloads.remove_all()


async def test_without_namespaces_the_process_backend_cannot_be_checkpointed(
        checkpointer: CriuCheckpointer, data_dir: Path, deployment: str) -> None:
    options = ProcessOptions(state_dir=str(data_dir / "workloads"), namespaces=False)
    async with ProcessBackend(options, deployment_id=deployment, data_dir=data_dir) as backend:
        caps = checkpointer.capabilities(backend)
        assert not caps.checkpoint
        assert any("namespaces" in note for note in caps.notes)
