"""Fixtures of the compute tests: a directory the workloads' account can reach, a Python it can
run, and process backends on throw-away deployments (their cgroups removed afterwards)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from markco_trio.builtin.process_backend import ProcessBackend, ProcessOptions
from markco_trio.builtin.process_backend.cgroups import CGROUP_MOUNT, CONTROLLERS
from markco_trio.records import WorkloadRole
from markco_trio.roles import LABEL_ROLE, LABEL_USER, ContainerSpec, workload_name
from markco_trio.testing.workload_python import WorkloadPython, workload_python


@pytest.fixture(scope="session")
def compute_root() -> Iterator[Path]:
    """A directory under /tmp that `nobody` can traverse (pytest's own tmp_path lives under a
    0700 directory, which the workloads' account could not enter)."""
    root = Path(tempfile.mkdtemp(prefix="markco-compute-", dir="/tmp"))
    os.chmod(root, 0o711)
    yield root
    # Each test's own cleanup removes its workloads: any left now outlived it (a leak that,
    # without a PID namespace, would run on with init as its parent). Killed, then reported.
    leaked = workload_processes_under(root)
    described = _describe(leaked)
    kill_workloads_under(root)
    shutil.rmtree(root, ignore_errors=True)
    assert not leaked, f"workload processes outlived their tests (killed at session end): " \
        f"{described}"


@pytest.fixture(scope="session")
def wpython(compute_root: Path) -> WorkloadPython:
    """A Python (and mrmd-python, markco-editor) the workloads' account can run."""
    return workload_python(compute_root)


@pytest.fixture
def data_dir(compute_root: Path) -> Path:
    """A fresh data dir for one test, reachable by the workloads' account."""
    path = compute_root / uuid.uuid4().hex[:12]
    path.mkdir(mode=0o711)
    return path


def deployment_cgroup_pids(deployment_id: str, parent: str = "markco") -> list[int]:
    """Processes still in a deployment's cgroups (any controller, any workload)."""
    pids: set[int] = set()
    for controller in CONTROLLERS:
        path = CGROUP_MOUNT / controller / parent / deployment_id
        for procs in path.glob("**/cgroup.procs"):
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except (OSError, ValueError):
                continue
    return sorted(pid for pid in pids if _running(pid))


def _running(pid: int) -> bool:
    """Not gone, and not a zombie (an exited process waiting for its parent to collect it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


def remove_deployment_cgroups(deployment_id: str, parent: str = "markco") -> None:
    """Remove the cgroups a test deployment made (the kernel may take a moment to release a
    cgroup after its last process). Their processes must be gone by now: any left (a test
    whose cleanup missed them) are killed, and AssertionError says which."""
    deadline = time.monotonic() + 3
    # A process killed a moment ago may still be exiting (a large one takes a while).
    while (left := deployment_cgroup_pids(deployment_id, parent)) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        described = _describe(left)
        deadline = time.monotonic() + 5
        while (alive := deployment_cgroup_pids(deployment_id, parent)) and \
                time.monotonic() < deadline:
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
    deadline = time.monotonic() + 2
    for controller in CONTROLLERS:
        path = CGROUP_MOUNT / controller / parent / deployment_id
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
    if left:
        raise AssertionError(f"deployment {deployment_id}: processes outlived the test and its "
                             f"cleanup (killed now): {described}")


@pytest.fixture
def deployment_ids() -> Iterator[Callable[[str], str]]:
    """Make unique deployment ids; their cgroups are removed at teardown."""
    made: list[str] = []

    def make(prefix: str = "t") -> str:
        made.append(f"{prefix}-{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield make
    errors = []
    for deployment in made:
        try:
            remove_deployment_cgroups(deployment)
        except AssertionError as error:
            errors.append(str(error))
    assert not errors, "\n".join(errors)


@pytest.fixture
async def make_process_backend(
        data_dir: Path, deployment_ids: Callable[[str], str],
) -> AsyncIterator[Callable[..., object]]:
    """`await make(deployment_id=..., **options)` → an entered ProcessBackend; all are left
    at teardown (their workloads are removed by the tests' own fixtures)."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:

        async def make(deployment_id: str | None = None, *, state_dir: Path | None = None,
                       **options: object) -> ProcessBackend:
            deployment = deployment_id or deployment_ids("pb")
            opts = ProcessOptions(state_dir=str(state_dir or data_dir / "workloads"),
                                  **options)  # type: ignore[arg-type]
            backend = ProcessBackend(opts, deployment_id=deployment, data_dir=data_dir)
            return await stack.enter_async_context(backend)

        yield make


def spec_factory_for(deployment: str, data_dir: Path,
                     wpython: WorkloadPython) -> Callable[..., ContainerSpec]:
    """Specs for the process backend: mrmd-python for a runtime, a script when asked."""

    def make(user_id: str, role: WorkloadRole, *, script: str | None = None) -> ContainerSpec:
        if script is not None:
            command: tuple[str, ...] = (wpython.python, "-u", "-c", script)
            stop_signal = "SIGTERM"
        elif role == WorkloadRole.RUNTIME:
            command = (wpython.script("mrmd-python"), "--foreground", "--managed", "--host",
                       "{host}", "--port", "{port}", "--cwd", "{user_dir}")
            stop_signal = "SIGKILL"
        else:
            command = (wpython.python, "-m", "http.server", "--bind", "{host}", "{port}")
            stop_signal = "SIGTERM"
        return ContainerSpec(
            name=workload_name(deployment, user_id, role), user_id=user_id, role=role,
            command=command, env={"MARKCO_TEST": "1"},
            user_dir=str(data_dir / "users" / user_id), memory_bytes=256 << 20, cpus=1.0,
            labels={LABEL_USER: user_id, LABEL_ROLE: role.value}, stop_signal=stop_signal)

    return make


@pytest.fixture
def process_specs(data_dir: Path, wpython: WorkloadPython
                  ) -> Callable[[str], Callable[..., ContainerSpec]]:
    """`process_specs(deployment)` → the kit's `spec_factory` for that deployment."""
    return lambda deployment: spec_factory_for(deployment, data_dir, wpython)


@pytest.fixture
def write_compute_config(data_dir: Path, wpython: WorkloadPython,
                         deployment_ids: Callable[[str], str]) -> Callable[..., Path]:
    """`write(**workloads_options)` → a config file for an in-process compute harness (the
    same deployment id for every file of one test: a "restarted daemon" finds its work)."""
    from .harness import config_text

    deployment = deployment_ids("c")

    def write(name: str = "markco.toml", **options: object) -> Path:
        path = data_dir.parent / f"{data_dir.name}-{name}"
        path.write_text(config_text(data_dir, deployment, wpython, **options))
        return path

    return write


def workload_processes_under(root: Path) -> list[int]:
    """Live processes of workloads whose files are under `root`: every process whose command
    line names a path under `root` (launchers, waiters, unshare, the payload: mrmd-python's
    `--cwd` is the user dir) or whose working directory is under it, and every member of a
    session such a process leads (a payload's children, whatever their command line). Never
    this process, nor anything of its own session."""
    marker = os.fsencode(str(root)) + b"/"
    prefix = str(root) + "/"
    own = {os.getpid(), os.getsid(0)}
    found: set[int] = set()
    leaders: set[int] = set()
    sessions: dict[int, int] = {}
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] in "ZX" or pid in own:
            continue
        sid = int(fields[3])
        if sid in own:
            continue
        sessions[pid] = sid
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd") + "/"
        except OSError:
            cwd = ""
        if marker in argv or cwd.startswith(prefix):
            found.add(pid)
            if sid == pid:
                leaders.add(pid)
    found.update(pid for pid, sid in sessions.items() if sid in leaders)
    return sorted(found)


def kill_workloads_under(root: Path) -> int:
    """SIGKILL every process of the workloads whose files are under `root` (see
    `workload_processes_under`: the whole tree, not only the session leaders — without a PID
    namespace, killing a waiter leaves its command running, reparented to init), again until
    none is left. Returns how many were killed; raises AssertionError when some survive."""
    killed: set[int] = set()
    deadline = time.monotonic() + 10
    while True:
        alive = workload_processes_under(root)
        if not alive or time.monotonic() > deadline:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    # Wait until the killed are gone: an exiting process no longer shows its command line
    # (so it is not found above) but is still in its cgroups, holding its memory.
    while time.monotonic() < deadline and any(_running(pid) for pid in killed):
        time.sleep(0.02)
    alive = sorted(set(alive) | {pid for pid in killed if _running(pid)})
    if alive:
        raise AssertionError(f"workload processes under {root} survived SIGKILL: "
                             f"{_describe(alive)}")
    return len(killed)


def _describe(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            argv = b" ".join(Path(f"/proc/{pid}/cmdline").read_bytes().split())
        except OSError:
            argv = b"?"
        out.append(f"{pid} ({argv.decode(errors='replace')[:160].strip()})")
    return "; ".join(out)


@pytest.fixture
def cleanup_workloads(data_dir: Path, deployment_ids: Callable[[str], str]) -> Iterator[None]:
    """After the test: kill every workload left from its data dir, whatever made it (a
    failing test must not leave processes behind). Synchronous on purpose: pytest-trio only
    runs async fixtures that a test takes as arguments, and this one is used as a marker.
    It takes `deployment_ids` so that the deployments' cgroups are removed after it."""
    yield
    kill_workloads_under(data_dir)
