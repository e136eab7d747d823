"""A user's compute, end to end on real processes: start (workspace, runtime, editor, both
answering), the runtime reached only through the front, stop, restart, concurrent starts, crash
restarts with backoff, failure after repeated crashes, OOM counted apart, plan changes."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from markco_trio.builtin.compute import StartFailed
from markco_trio.records import OperationState, RuntimeState, WorkloadRole
from markco_trio.roles import workload_name
from markco_trio.testing.dialing import workload_client

from .harness import Harness, run_harness
from .polling import eventually

pytestmark = pytest.mark.usefixtures("cleanup_workloads")


@pytest.fixture
async def harness(write_compute_config: Callable[..., Path]) -> AsyncIterator[Harness]:
    async with run_harness(write_compute_config()) as h:
        yield h


def front_client(h: Harness, user_id: str) -> httpx.AsyncClient:
    path = h.service.front_path(user_id)
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)),
                             base_url="http://runtime", timeout=30, trust_env=False)


def payload_pid(h: Harness, user_id: str, role: WorkloadRole) -> int:
    """The pid of the workload's command itself (not its wrappers)."""
    handle = workload_name(h.service.deployment_id, user_id, role)
    state = h.backend._load(handle)
    members = [p for p in h.backend._members(state) if p != state.pid]
    for pid in members:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        wrapper = argv[0].endswith((b"sh", b"unshare", b"setpriv", b"setsid"))
        if not wrapper and any(b"mrmd-python" in a or b"markco-editor" in a for a in argv):
            return pid
    raise AssertionError(f"no payload process among {members}")


def environ_of(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


async def test_start_brings_up_the_runtime_then_the_editor(harness: Harness) -> None:
    user = await harness.user("ada")
    state = await harness.service.ensure_started(user.id, reason="test")
    assert state.ready and state.runtime.ready and state.editor.ready
    assert state.runtime.state == state.editor.state == RuntimeState.RUNNING
    assert state.runtime.limits == {"plan": "free", "memory_bytes": 256 << 20, "cpus": 0.5}
    await harness.settled()
    kinds = harness.kinds(user.id)
    assert kinds.index("runtime.started") < kinds.index("editor.started")
    host, port = harness.service.editor_address_nowait(user.id)  # type: ignore[misc]
    async with workload_client(f"{host}:{port}") as http:
        assert (await http.get("/health")).status_code == 200
    ops = await harness.storage.list_operations(user_id=user.id)
    assert [(o.kind, o.state) for o in ops] == [("start", OperationState.DONE)]
    assert ops[0].targets["runtime"] == workload_name(harness.service.deployment_id, user.id,
                                                      WorkloadRole.RUNTIME)


async def test_the_runtime_answers_through_the_front(harness: Harness) -> None:
    user = await harness.user("grace")
    await harness.service.ensure_started(user.id, reason="test")
    async with front_client(harness, user.id) as front:
        response = await front.post("/mrp/v1/execute", json={"code": "x = 21\nprint(x * 2)"})
    assert response.json()["stdout"] == "42\n"
    stats = harness.service.front_statistics_nowait(user.id)
    assert stats is not None and stats.executions == 1
    assert harness.service.state_nowait(user.id).last_activity_at is not None


async def test_the_workspace_is_scaffolded_for_the_workloads_account(harness: Harness) -> None:
    user = await harness.user("hopper")
    await harness.service.ensure_started(user.id, reason="test")
    user_dir = harness.service.user_dir(user.id)
    welcome = user_dir / "Projects" / "Scratch" / "01-welcome.md"
    assert "```python" in welcome.read_text() and "Hopper" in welcome.read_text()
    assert (user_dir / "Projects" / "Scratch" / "mrmd.md").read_text().startswith("---\n")
    if os.geteuid() == 0:
        uid, _ = harness.service.backend.workload_owner(user.id)  # type: ignore[misc]
        assert {p.stat().st_uid for p in [user_dir, *user_dir.rglob("*")]} == {uid}


async def test_the_editor_gets_exactly_the_contract_environment(harness: Harness) -> None:
    user = await harness.user("lovelace", plan="pro")
    await harness.service.ensure_started(user.id, reason="test")
    pid = payload_pid(harness, user.id, WorkloadRole.EDITOR)
    raw = environ_of(pid)
    env = dict(item.decode().split("=", 1) for item in raw if item)
    host, port = harness.service.editor_address_nowait(user.id)  # type: ignore[misc]
    front = harness.service.front_statistics_nowait(user.id)
    assert front is not None
    expected = {
        "CLOUD_MODE": "1", "HOST": "127.0.0.1", "PORT": str(port),
        "MARKCO_PUBLIC_URL": harness.ctx.config.server.public_url,
        "BASE_PATH": f"/u/{user.id}/", "MARKCO_USER_DIR": str(harness.service.user_dir(user.id)),
        "MARKCO_RUNTIME_SOCKET": str(harness.service.front_path(user.id)),
        "CLOUD_USER_ID": user.id, "CLOUD_USER_NAME": "Lovelace",
        "CLOUD_USER_USERNAME": "lovelace", "CLOUD_USER_EMAIL": "lovelace@example.org",
        "CLOUD_USER_AVATAR": "", "CLOUD_USER_PLAN": "pro",
    }
    if harness.service.capabilities.isolated_network:
        assert "RUNTIME_PORT" not in env  # no host port: the socket is the only way
    else:
        assert env.pop("RUNTIME_PORT").isdigit()
    assert {k: env.pop(k) for k in list(expected)} == expected
    assert env.pop("HOME") == str(harness.service.user_dir(user.id))
    env.pop("LC_CTYPE", None)  # Python's own locale coercion
    assert set(env) == {"PATH", "LANG"}


async def test_with_a_shared_network_the_runtime_port_forwarder_reaches_the_runtime(
        write_compute_config: Callable[..., Path]) -> None:
    # Only workloads that share the host's network (namespaces off) get a RUNTIME_PORT; with
    # network namespaces (the default as root) tests/tenancy checks that nothing listens.
    config = write_compute_config(extra="[compute.process]\nnamespaces = false\n")
    async with run_harness(config) as harness:
        assert not harness.service.capabilities.isolated_network
        await _forwarder_reaches_the_runtime(harness)


async def _forwarder_reaches_the_runtime(harness: Harness) -> None:
    user = await harness.user("turing")
    await harness.service.ensure_started(user.id, reason="test")
    pid = payload_pid(harness, user.id, WorkloadRole.EDITOR)
    environ = environ_of(pid)
    port = next(e.split(b"=")[1].decode() for e in environ if e.startswith(b"RUNTIME_PORT="))
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.post(f"http://127.0.0.1:{port}/mrp/v1/execute",
                                   json={"code": "print('tcp')"})
    assert response.json()["stdout"] == "tcp\n"


async def test_two_concurrent_starts_make_one_runtime_and_one_editor(harness: Harness) -> None:
    user = await harness.user("noether")
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(lambda: harness.service.ensure_started(user.id, reason="login"))
        harness.service.request_start(user.id, reason="navigation")
    workloads = await harness.backend.list(user_id=user.id)
    assert sorted(i.role.value for i in workloads) == ["editor", "runtime"]
    await harness.settled()
    assert harness.kinds(user.id).count("runtime.started") == 1
    assert harness.kinds(user.id).count("editor.started") == 1
    live = await harness.storage.list_runtimes(user_id=user.id)
    assert len(live) == 2


async def test_stop_removes_the_workloads_and_keeps_the_files(harness: Harness) -> None:
    user = await harness.user("curie")
    await harness.service.ensure_started(user.id, reason="test")
    state = await harness.service.stop(user.id, reason="test")
    assert not state.ready and state.runtime.state is None
    assert await harness.backend.list(user_id=user.id) == []
    assert await harness.storage.list_runtimes(user_id=user.id) == []
    history = await harness.storage.list_runtimes(user_id=user.id, live_only=False)
    assert {r.state for r in history} == {RuntimeState.STOPPED}
    assert (harness.service.user_dir(user.id) / "Projects").is_dir()
    await harness.settled()
    assert harness.kinds(user.id)[-2:] == ["editor.stopped", "runtime.stopped"]


async def test_restart_gives_a_fresh_runtime(harness: Harness) -> None:
    user = await harness.user("meitner")
    await harness.service.ensure_started(user.id, reason="test")
    async with front_client(harness, user.id) as front:
        await front.post("/mrp/v1/execute", json={"code": "kept = 1"})
        await harness.service.restart(user.id, reason="test")
        response = await front.post("/mrp/v1/execute", json={"code": "print('kept' in dir())"})
    assert response.json()["stdout"] == "False\n"
    assert harness.service.state_nowait(user.id).ready


async def test_an_execute_through_the_front_starts_a_stopped_runtime(harness: Harness) -> None:
    user = await harness.user("franklin")
    await harness.service.ensure_started(user.id, reason="test")
    actor = harness.service._actors[user.id]
    async with actor.lock:  # stop only the runtime, as an idle sleep will
        op = await actor._open_operation("stop", frozenset({WorkloadRole.RUNTIME}), "idle")
        await actor.run_stop(op, frozenset({WorkloadRole.RUNTIME}), reason="idle")
    async with front_client(harness, user.id) as front:
        refused = await front.get("/mrp/v1/capabilities")
        assert refused.status_code == 503
        woken = await front.post("/mrp/v1/execute", json={"code": "print('awake')"})
    assert woken.json()["stdout"] == "awake\n"
    assert harness.service.state_nowait(user.id).runtime.ready


async def test_a_killed_runtime_is_restarted_and_the_event_recorded(harness: Harness) -> None:
    user = await harness.user("hamilton")
    await harness.service.ensure_started(user.id, reason="test")
    os.kill(payload_pid(harness, user.id, WorkloadRole.RUNTIME), signal.SIGKILL)
    await harness.wait_event("runtime.restarted", user.id)
    crashed = next(e for e in harness.events if e.type == "runtime.crashed")
    assert crashed.data["oom"] is False and crashed.data["restarts"] == 1
    state = harness.service.state_nowait(user.id)
    assert state.runtime.ready and state.runtime.restarts == 1
    async with front_client(harness, user.id) as front:
        response = await front.post("/mrp/v1/execute", json={"code": "print('back')"})
    assert response.json()["stdout"] == "back\n"
    kinds = [o.kind for o in await harness.storage.list_operations(user_id=user.id)]
    assert kinds == ["start", "recover"]


async def test_a_killed_editor_is_restarted(harness: Harness) -> None:
    user = await harness.user("shannon")
    await harness.service.ensure_started(user.id, reason="test")
    os.kill(payload_pid(harness, user.id, WorkloadRole.EDITOR), signal.SIGKILL)
    await harness.wait_event("editor.restarted", user.id)
    await eventually(lambda: harness.service.editor_address_nowait(user.id) is not None)


async def test_out_of_memory_is_counted_apart_and_the_runtime_restarted(
        harness: Harness) -> None:
    user = await harness.user("babbage")
    await harness.service.ensure_started(user.id, reason="test")
    async with front_client(harness, user.id) as front:
        response = await front.post("/mrp/v1/execute", json={
            "code": "chunks = [b'x' * (32 << 20) for _ in range(20)]"})
    assert response.status_code in (502, 200)  # the runtime died mid-request
    await harness.wait_event("runtime.restarted", user.id)
    crashed = next(e for e in harness.events if e.type == "runtime.crashed")
    assert crashed.data["oom"] is True
    record = (await harness.storage.list_runtimes(user_id=user.id))[0]
    record = next(r for r in await harness.storage.list_runtimes(user_id=user.id)
                  if r.role == WorkloadRole.RUNTIME)
    assert (record.oom_kills, record.restarts) == (1, 1)
    assert "memory" in (crashed.data["reason"] or "")


async def test_repeated_crashes_end_in_failed_with_a_reason(
        write_compute_config: Callable[..., Path]) -> None:
    async with run_harness(write_compute_config(max_crashes=2)) as h:
        user = await h.user("gauss")
        await h.service.ensure_started(user.id, reason="test")
        os.kill(payload_pid(h, user.id, WorkloadRole.RUNTIME), signal.SIGKILL)
        await h.wait_event("runtime.restarted", user.id)
        os.kill(payload_pid(h, user.id, WorkloadRole.RUNTIME), signal.SIGKILL)
        await h.wait_event("runtime.failed", user.id)
        failed = [r for r in await h.storage.list_runtimes(user_id=user.id, live_only=False)
                  if r.state == RuntimeState.FAILED]
        assert len(failed) == 1 and "crashed 2 times" in (failed[0].reason or "")
        state = h.service.state_nowait(user.id)
        assert state.phase == "failed" and state.runtime.state == RuntimeState.FAILED
        assert "crashed 2 times" in (state.runtime.reason or "")
        names = [i.role for i in await h.backend.list(user_id=user.id)]
        assert names == [WorkloadRole.EDITOR]  # the failed runtime is not left behind


async def test_a_start_that_cannot_succeed_fails_with_the_reason(
        write_compute_config: Callable[..., Path], wpython: Any) -> None:
    config = write_compute_config(runtime_command=[wpython.python, "-c",
                                                   "print('no runtime here'); raise SystemExit(3)"])
    async with run_harness(config) as h:
        user = await h.user("fermat")
        with pytest.raises(StartFailed, match="no runtime here"):
            await h.service.ensure_started(user.id, reason="test")
        assert await h.backend.list(user_id=user.id) == []  # nothing leaked
        ops = await h.storage.list_operations(user_id=user.id)
        assert ops[-1].state == OperationState.FAILED
        assert "runtime.failed" in h.kinds(user.id)


async def test_a_plan_change_applies_to_the_running_runtime(harness: Harness) -> None:
    user = await harness.user("cantor")
    await harness.service.ensure_started(user.id, reason="test")
    handle = workload_name(harness.service.deployment_id, user.id, WorkloadRole.RUNTIME)
    assert (await harness.backend.stats(handle)).memory_limit == 256 << 20
    await harness.storage.update_user(user.id, plan="pro")
    assert await harness.service.apply_plan(user.id)
    assert (await harness.backend.stats(handle)).memory_limit == 512 << 20
    assert harness.service.state_nowait(user.id).runtime.limits["plan"] == "pro"
    await harness.wait_event("runtime.limits_changed", user.id)


async def test_one_users_failure_leaves_the_others_alone(harness: Harness) -> None:
    good, bad = await harness.user("euler"), await harness.user("broken")
    await harness.storage.update_user(bad.id, disabled=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: harness.service.ensure_started(good.id, reason="test"))
        with pytest.raises(StartFailed):
            await harness.service.ensure_started(bad.id, reason="test")
    assert harness.service.state_nowait(good.id).ready
