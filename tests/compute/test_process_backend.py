"""What the process backend promises beyond the contract kit: detached workloads that a
restarted daemon finds, tracked so a recycled PID is never adopted, a clean environment, not
root, their own namespaces, whole-tree stops, and ports outside the ephemeral range."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from markco_trio.builtin.process_backend import ProcessBackend
from markco_trio.builtin.process_backend.accounts import range_conflicts
from markco_trio.builtin.process_backend.ports import ephemeral_range
from markco_trio.dial import http_get
from markco_trio.errors import BackendError, NotFound
from markco_trio.records import WorkloadRole
from markco_trio.roles import STATUS_CRASHED, STATUS_EXITED, STATUS_RUNNING, ContainerSpec
from markco_trio.testing.backend_kit import wait_for_log, wait_for_status
from markco_trio.testing.system import missing_system

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the daemon is not root here")


@pytest.fixture
def deployment(deployment_ids: Callable[[str], str]) -> str:
    return deployment_ids("pb")


@pytest.fixture
async def backend(make_process_backend: Callable[..., Any], deployment: str) -> ProcessBackend:
    backend: ProcessBackend = await make_process_backend(deployment)
    return backend


@pytest.fixture
async def cleanup(backend: ProcessBackend) -> AsyncIterator[list[str]]:
    handles: list[str] = []
    yield handles
    with trio.CancelScope(shield=True):
        for handle in handles:
            try:
                await backend.remove(handle)
            except NotFound:
                pass


@pytest.fixture
def script_spec(deployment: str, process_specs: Callable[[str], Callable[..., ContainerSpec]]
                ) -> Callable[[str], ContainerSpec]:
    make = process_specs(deployment)
    return lambda script: make(uuid.uuid4().hex, WorkloadRole.RUNTIME, script=script)


async def run(backend: ProcessBackend, cleanup: list[str], spec: ContainerSpec) -> str:
    await backend.create(spec)
    cleanup.append(spec.name)
    await backend.start(spec.name)
    return spec.name


REPORT = ("import json, os, time\n"
          "print('REPORT', json.dumps({'uid': os.getuid(), 'pid': os.getpid(),"
          " 'env': dict(os.environ), 'cwd': os.getcwd()}), flush=True)\n"
          "while True:\n    time.sleep(1)\n")


def owner_of(path: str) -> int:
    return os.stat(path).st_uid


def running(pid: int) -> bool:
    """True when `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def answers_within(address: str, path: str, seconds: float) -> bool:
    """Whether `GET path` at `address` (dialled as the daemon does) answers 200 in time."""
    with trio.move_on_after(seconds):
        while True:
            try:
                if (await http_get(address, path))[0] == 200:
                    return True
            except OSError:
                pass
            await trio.sleep(0.05)
    return False


async def report(backend: ProcessBackend, handle: str) -> dict[str, Any]:
    logs = await wait_for_log(backend, handle, "REPORT")
    line = next(x for x in logs.splitlines() if x.startswith("REPORT "))
    result: dict[str, Any] = json.loads(line.removeprefix("REPORT "))
    return result


@needs_root
async def test_workloads_run_as_their_users_own_account(
        backend: ProcessBackend, cleanup: list[str],
        script_spec: Callable[[str], ContainerSpec]) -> None:
    spec = script_spec(REPORT)
    seen = await report(backend, await run(backend, cleanup, spec))
    uid, gid = backend.workload_owner(spec.user_id)  # type: ignore[misc]
    assert seen["uid"] == uid and 200000 <= uid <= 299999 and gid == uid
    assert owner_of(spec.user_dir) == uid
    assert os.stat(spec.user_dir).st_mode & 0o777 == 0o700
    assert os.stat(Path(spec.user_dir).parent).st_mode & 0o777 == 0o711


@needs_root
async def test_two_users_get_two_accounts(backend: ProcessBackend, cleanup: list[str],
                                          script_spec: Callable[[str], ContainerSpec]) -> None:
    first, second = script_spec(REPORT), script_spec(REPORT)
    seen = [await report(backend, await run(backend, cleanup, spec))
            for spec in (first, second)]
    assert seen[0]["uid"] != seen[1]["uid"]


@needs_root
async def test_a_directory_of_the_old_shared_account_is_given_to_the_user(
        backend: ProcessBackend, cleanup: list[str],
        script_spec: Callable[[str], ContainerSpec]) -> None:
    spec = script_spec(REPORT)
    nobody = pwd.getpwnam("nobody")
    notes = Path(spec.user_dir) / "Projects" / "notes.md"
    notes.parent.mkdir(parents=True)
    notes.write_text("mine")
    for path in (Path(spec.user_dir), notes.parent, notes):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    seen = await report(backend, await run(backend, cleanup, spec))
    assert owner_of(str(notes)) == owner_of(str(notes.parent)) == seen["uid"]


@needs_root
async def test_workloads_reach_nothing_but_their_own_loopback(
        backend: ProcessBackend, cleanup: list[str],
        script_spec: Callable[[str], ContainerSpec]) -> None:
    if not backend.capabilities().isolated_network:
        missing_system("network namespaces (unshare --net, iproute2)",
                       "install iproute2; run as root")
    seen = await report(backend, await run(backend, cleanup, script_spec(
        "import json, socket, time\n"
        "names = sorted(n for _, n in socket.if_nameindex())\n"
        "print('REPORT', json.dumps({'uid': 0, 'pid': 0, 'env': {}, 'cwd': '',"
        " 'interfaces': names}), flush=True)\n"
        "while True:\n    time.sleep(1)\n")))
    assert seen["interfaces"] == ["lo"]


@needs_root
async def test_a_workload_is_not_reachable_on_the_hosts_loopback(
        backend: ProcessBackend, cleanup: list[str], deployment: str,
        process_specs: Callable[[str], Callable[..., ContainerSpec]]) -> None:
    if not backend.capabilities().isolated_network:
        missing_system("network namespaces (unshare --net, iproute2)",
                       "install iproute2; run as root")
    spec = process_specs(deployment)(uuid.uuid4().hex, WorkloadRole.EDITOR)  # http.server
    info = await backend.start(await run(backend, cleanup, spec))
    assert info.address is not None and info.address.startswith("netns:")
    port = int(info.address.rpartition(":")[2])
    assert await answers_within(info.address, "/", 15)
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_the_environment_is_only_the_spec_and_the_basics(
        backend: ProcessBackend, cleanup: list[str],
        script_spec: Callable[[str], ContainerSpec], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKCO_DAEMON_SECRET", "do-not-leak")
    spec = dataclasses.replace(script_spec(REPORT),
                               env={"CLOUD_MODE": "1", "PORT": "{port}",
                                    "MARKCO_USER_DIR": "{user_dir}"})
    seen = await report(backend, await run(backend, cleanup, spec))
    env = seen["env"]
    assert "MARKCO_DAEMON_SECRET" not in env
    port = (await backend.inspect(spec.name)).address.rpartition(":")[2]  # type: ignore[union-attr]
    assert env.pop("PORT") == port
    assert env.pop("MARKCO_USER_DIR") == spec.user_dir
    assert env.pop("CLOUD_MODE") == "1"
    assert env.pop("HOME") == spec.user_dir
    env.pop("LC_CTYPE", None)  # Python's own locale coercion may add it
    assert set(env) == {"PATH", "LANG"}
    assert seen["cwd"] == spec.user_dir


async def test_each_workload_has_its_own_pid_namespace(
        backend: ProcessBackend, cleanup: list[str],
        script_spec: Callable[[str], ContainerSpec]) -> None:
    if not backend.capabilities().pid_namespace:
        missing_system("PID namespaces (unshare --pid)",
                       "run as root on a kernel that allows user PID namespaces")
    seen = await report(backend, await run(backend, cleanup, script_spec(REPORT)))
    # PID 1 of the namespace is the waiter that records the exit; before the command it may
    # run a few set-up commands (`ip link set lo up`, a `mount` per private temporary dir).
    assert 2 <= seen["pid"] <= 6


async def test_ports_are_free_and_outside_the_ephemeral_range(
        backend: ProcessBackend, cleanup: list[str],
        script_spec: Callable[[str], ContainerSpec]) -> None:
    low, high = ephemeral_range()
    seen = set()
    for _ in range(3):
        handle = await run(backend, cleanup, script_spec(REPORT))
        port = int((await backend.inspect(handle)).address.rpartition(":")[2])  # type: ignore
        assert 20000 <= port <= 32000 and not low <= port <= high
        seen.add(port)
    assert len(seen) == 3


async def test_a_restarted_daemon_finds_and_stops_running_workloads(
        make_process_backend: Callable[..., Any], backend: ProcessBackend,
        deployment: str, cleanup: list[str],
        script_spec: Callable[[str], ContainerSpec]) -> None:
    handle = await run(backend, cleanup, script_spec(REPORT))
    before = await backend.inspect(handle)
    restarted: ProcessBackend = await make_process_backend(deployment)
    found = await restarted.inspect(handle)
    assert found.status == STATUS_RUNNING and found.address == before.address
    assert [i.handle for i in await restarted.list(user_id=found.user_id)] == [handle]
    assert (await restarted.stats(handle)).memory_working_set > 0
    await restarted.stop(handle, timeout=1)
    assert (await restarted.inspect(handle)).status == STATUS_EXITED


async def test_an_exit_code_is_known_to_a_restarted_daemon(
        make_process_backend: Callable[..., Any], backend: ProcessBackend,
        deployment: str, cleanup: list[str],
        script_spec: Callable[[str], ContainerSpec]) -> None:
    handle = await run(backend, cleanup, script_spec(
        "import sys, time\nprint('waiting', flush=True)\ntime.sleep(0.5)\nsys.exit(7)\n"))
    restarted: ProcessBackend = await make_process_backend(deployment)
    ended = await wait_for_status(restarted, handle, {STATUS_CRASHED, STATUS_EXITED})
    assert (ended.status, ended.exit_code) == (STATUS_CRASHED, 7)


async def test_a_recycled_pid_is_never_adopted(backend: ProcessBackend, cleanup: list[str],
                                               script_spec: Callable[[str], ContainerSpec]
                                               ) -> None:
    handle = await run(backend, cleanup, script_spec(REPORT))
    await backend.stop(handle, timeout=0)
    # An unrelated process now holds a PID; pretend the record points at it.
    stranger = await trio.to_thread.run_sync(lambda: subprocess.Popen(["sleep", "30"]))
    try:
        path = backend.state_dir / handle / "workload.json"
        record = json.loads(path.read_text())
        record.update(pid=stranger.pid, stop_requested=False)  # start time is the old one's
        path.write_text(json.dumps(record))
        assert (await backend.inspect(handle)).status == STATUS_CRASHED
        await backend.stop(handle, timeout=0)
        await backend.remove(handle)
        assert stranger.poll() is None, "the backend killed a process that was not its own"
    finally:
        stranger.kill()
        stranger.wait()


ESCAPE = ("import os, sys, time\n"
          "if os.fork() == 0:\n"
          "    os.setsid()\n"
          "    if os.fork() == 0:\n"
          "        print('GRANDCHILD', os.getpid(), flush=True)\n"
          "        while True:\n            time.sleep(1)\n"
          "    os._exit(0)\n"
          "while True:\n    time.sleep(1)\n")


@pytest.mark.parametrize("options", [{}, {"namespaces": False}, {"cgroups": False}],
                         ids=["namespaces+cgroups", "cgroups-only", "namespaces-only"])
async def test_stop_kills_escaped_grandchildren(make_process_backend: Callable[..., Any],
                                                deployment: str,
                                                process_specs: Callable[[str], Any],
                                                options: dict[str, Any]) -> None:
    backend: ProcessBackend = await make_process_backend(deployment, **options)
    spec = process_specs(deployment)(
        uuid.uuid4().hex, WorkloadRole.RUNTIME, script=ESCAPE)
    await backend.create(spec)
    try:
        await backend.start(spec.name)
        await wait_for_log(backend, spec.name, "GRANDCHILD")
        members = backend._members(backend._load(spec.name))  # the host's view of the tree
        assert len(members) >= 3
        await backend.stop(spec.name, timeout=0.2)
        assert [pid for pid in members if running(pid)] == []
    finally:
        await backend.remove(spec.name)


@needs_root
async def test_an_account_that_cannot_run_the_command_is_told_why(
        backend: ProcessBackend, data_dir: Path, script_spec: Callable[[str], ContainerSpec],
        tmp_path: Path) -> None:
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    program = hidden / "tool"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    spec = dataclasses.replace(script_spec(REPORT), command=(str(program),))
    with pytest.raises(BackendError, match="cannot run .*tool.*private"):
        await backend.create(spec)


async def test_update_limits_is_kept_for_the_next_start(
        backend: ProcessBackend, cleanup: list[str],
        script_spec: Callable[[str], ContainerSpec]) -> None:
    handle = await run(backend, cleanup, script_spec(REPORT))
    await backend.update_limits(handle, memory_bytes=384 << 20, cpus=1.0)
    await backend.stop(handle, timeout=0)
    await backend.start(handle)
    assert (await backend.stats(handle)).memory_limit == 384 << 20


@needs_root
async def test_a_workload_started_without_isolation_is_not_adopted(
        make_process_backend: Callable[..., Any], backend: ProcessBackend, deployment: str,
        cleanup: list[str], script_spec: Callable[[str], ContainerSpec]) -> None:
    # What a daemon upgraded from the shared-account, host-network backend finds running.
    if not backend.capabilities().isolated_network:
        missing_system("network namespaces (unshare --net, iproute2)",
                       "install iproute2; run as root")
    handle = await run(backend, cleanup, script_spec(REPORT))
    path = backend.state_dir / handle / "workload.json"
    record = json.loads(path.read_text())
    record.update(network=False, uid=65534, gid=65534)
    path.write_text(json.dumps(record))
    restarted: ProcessBackend = await make_process_backend(deployment)
    info = await restarted.inspect(handle)
    assert info.status == STATUS_EXITED
    members = restarted._members(restarted._load(handle))
    await restarted.remove(handle)
    assert [pid for pid in members if running(pid)] == []


def test_a_uid_range_shared_with_subordinate_ids_is_found(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("alice:100000:65536\nbob:165536:65536\n")
    (tmp_path / "subgid").write_text("")
    found = range_conflicts((200000, 299999), etc=tmp_path)
    assert found == ["bob's subuid range 165536-231071"]


def test_a_uid_range_holding_a_host_account_is_found(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    assert any("nobody" in c for c in range_conflicts((nobody, nobody), etc=tmp_path))
