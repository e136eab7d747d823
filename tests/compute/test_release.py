"""Per-user resources end with the user's workloads: once a user is stopped, their actor's task
and runtime front (unix socket, TCP forwarder) are released — the daemon's sockets and file
descriptors are what they were before the user started — and they come back when the user
starts again. Readiness checks leave no connection behind (none in CLOSE_WAIT)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from markco_trio.records import RuntimeState

from .harness import Harness, run_harness
from .polling import eventually

pytestmark = pytest.mark.usefixtures("cleanup_workloads")

USERS = 3
# Workloads share the host's network: the fronts also listen on TCP (RUNTIME_PORT), and the
# readiness checks' connections are in this process's network namespace, where they can be seen.
SHARED_NETWORK = "[compute.process]\nnamespaces = false\n"


@pytest.fixture
async def harness(write_compute_config: Callable[..., Path]) -> AsyncIterator[Harness]:
    async with run_harness(write_compute_config(extra=SHARED_NETWORK)) as h:
        yield h


def own_sockets() -> Counter[str]:
    """This process's sockets by kind: unix listening / connected, tcp by state; `other` for
    sockets found in neither table (another network namespace)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    kinds: Counter[str] = Counter()
    seen = set()
    for line in Path("/proc/self/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        inode = int(fields[6])
        if inode in inodes:
            seen.add(inode)
            listening = int(fields[3], 16) & 0x10000  # __SO_ACCEPTCON
            kinds["unix listening" if listening else "unix"] += 1
    states = {"01": "established", "06": "time-wait", "08": "close-wait", "0A": "listening"}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            inode = int(fields[9])
            if inode in inodes and inode not in seen:
                seen.add(inode)
                kinds[f"tcp {states.get(fields[3], fields[3])}"] += 1
    kinds["other"] = len(inodes - seen)
    return +kinds


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def start_and_stop(h: Harness, names: list[str]) -> list[str]:
    ids = []
    for name in names:
        user = await h.user(name)
        await h.service.ensure_started(user.id, reason="test")
        ids.append(user.id)
    for user_id in ids:
        await h.service.stop(user_id, reason="test")
    return ids


async def all_released(h: Harness) -> None:
    await eventually(lambda: h.service.active_actors() == 0, within=15,
                     what="every stopped user's actor released")


async def test_stopped_users_leave_no_socket_or_fd_behind(harness: Harness) -> None:
    # A first user warms up what the daemon opens once (pools, the thread cache).
    await start_and_stop(harness, ["warm"])
    await all_released(harness)
    sockets, fds = own_sockets(), open_fds()
    await start_and_stop(harness, [f"user{i}" for i in range(USERS)])
    await all_released(harness)
    assert own_sockets() == sockets
    assert open_fds() == fds


async def test_a_running_users_front_listens_on_its_socket_and_port(harness: Harness) -> None:
    before = own_sockets()
    user = await harness.user("ada")
    await harness.service.ensure_started(user.id, reason="test")
    after = own_sockets()
    assert after["unix listening"] == before["unix listening"] + 1
    assert after["tcp listening"] == before["tcp listening"] + 1
    assert harness.service.front_path(user.id).exists()


async def test_a_stopped_users_front_is_closed_and_its_socket_file_removed(
        harness: Harness) -> None:
    [user_id] = await start_and_stop(harness, ["ada"])
    await all_released(harness)
    assert not harness.service.front_path(user_id).exists()
    assert harness.service.users() == [user_id]  # its state is kept: the dashboard shows it
    assert harness.service.state_nowait(user_id).runtime.state is None  # stopped: no record


async def test_readiness_checks_leave_no_connection_open(harness: Harness) -> None:
    user = await harness.user("ada")
    await harness.service.ensure_started(user.id, reason="test")
    kinds = own_sockets()
    assert kinds["tcp established"] == 0 and kinds["tcp close-wait"] == 0, kinds
    await harness.service.stop(user.id, reason="test")
    assert own_sockets()["tcp close-wait"] == 0


async def test_a_released_user_starts_again_with_a_listening_front(harness: Harness) -> None:
    [user_id] = await start_and_stop(harness, ["ada"])
    await all_released(harness)
    state = await harness.service.ensure_started(user_id, reason="test again")
    assert state.ready and state.runtime.state == RuntimeState.RUNNING
    assert harness.service.active_actors() == 1
    assert harness.service.front_path(user_id).exists()


async def test_a_failed_start_releases_the_actor_and_keeps_the_reason(
        write_compute_config: Callable[..., Path]) -> None:
    config = write_compute_config(extra=SHARED_NETWORK,
                                  editor_command=["/bin/sh", "-c", "echo broken; exit 3"])
    async with run_harness(config) as h:
        user = await h.user("ada")
        with pytest.raises(Exception, match="broken"):
            await h.service.ensure_started(user.id, reason="test")
        await all_released(h)
        state = h.service.state_nowait(user.id)
        assert state.editor.state == RuntimeState.FAILED and "broken" in (state.editor.reason
                                                                           or "")
