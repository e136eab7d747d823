"""The checkpoint routes of `/api/v1` through a real daemon (process backend, real workloads)
with the checkpointer test double (`fake_checkpointer.py`, registered as a plugin module)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from markco_trio.config import load_config
from markco_trio.daemon import Daemon
from markco_trio.testing.network import free_port
from markco_trio.testing.workload_python import WorkloadPython
from tests.compute.harness import config_text, plugin_modules
from tests.compute.polling import eventually
from tests.compute.test_compute_api import Running

pytestmark = pytest.mark.usefixtures("cleanup_workloads")


@pytest.fixture
async def running(data_dir: Path, wpython: WorkloadPython,
                  deployment_ids: Callable[[str], str]) -> AsyncIterator[Running]:
    port = free_port()
    path = data_dir.parent / f"{data_dir.name}-daemon.toml"
    path.write_text(config_text(
        data_dir, deployment_ids("capi"), wpython, listen=f"127.0.0.1:{port}",
        modules=plugin_modules("markco_trio.builtin.auth", "tests.lifecycle.fake_checkpointer"),
        extra='\n[auth]\nlogin_link = "never"\n\n[checkpoint]\nprovider = "fake"\n'))
    config, pm = load_config(path, entry_points=False)
    daemon = Daemon(config, pm)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: daemon.run(task_status=task_status, handle_signals=False))
        running = Running(daemon, bound)
        await eventually(lambda: daemon.readiness.snapshot().ready, what="/readyz")
        yield running
        nursery.cancel_scope.cancel()


async def started(running: Running, name: str = "ada") -> tuple[str, dict[str, str]]:
    user = await running.user(name)
    headers = await running.token(user)
    async with running.client(headers=headers) as http:
        answer = await http.post(f"/api/v1/users/{user.id}/runtimes/start?wait=1")
        assert answer.status_code == 200, answer.text
    return user.id, headers


async def test_sleep_then_wake_through_the_api(running: Running) -> None:
    uid, headers = await started(running)
    async with running.client(headers=headers) as http:
        slept = await http.post(f"/api/v1/users/{uid}/runtimes/sleep")
        assert slept.status_code == 200 and slept.json()["state"]["summary"] == "sleeping"
        woken = await http.post(f"/api/v1/users/{uid}/runtimes/wake?wait=1")
        assert woken.status_code == 200 and woken.json()["state"]["summary"] == "running"


async def test_snapshot_create_list_restore_delete(running: Running) -> None:
    uid, headers = await started(running)
    base = f"/api/v1/users/{uid}/snapshots"
    async with running.client(headers=headers) as http:
        created = await http.post(base, json={"name": "first"})
        assert created.status_code == 201, created.text
        assert "path" not in created.json()["snapshot"]
        listed = (await http.get(base)).json()
        assert [s["name"] for s in listed["items"]] == ["first"]
        assert listed["items"][0]["created_at"].endswith("Z") and listed["next_cursor"] is None
        restored = await http.post(f"{base}/first/restore")
        assert restored.status_code == 200, restored.text
        assert (await http.delete(f"{base}/first")).status_code == 204
        assert (await http.get(base)).json()["items"] == []


async def test_snapshots_page_with_a_cursor(running: Running) -> None:
    uid, headers = await started(running)
    base = f"/api/v1/users/{uid}/snapshots"
    async with running.client(headers=headers) as http:
        for name in ("a", "b", "c"):
            assert (await http.post(base, json={"name": name})).status_code == 201
        first = (await http.get(base, params={"limit": 2})).json()
        second = (await http.get(base, params={"limit": 2,
                                                "cursor": first["next_cursor"]})).json()
    assert [s["name"] for s in first["items"] + second["items"]] == ["a", "b", "c"]
    assert second["next_cursor"] is None


async def test_a_fork_answers_executions_through_the_api(running: Running) -> None:
    uid, headers = await started(running)
    async with running.client(headers=headers) as http:
        made = await http.post(f"/api/v1/users/{uid}/forks", json={"name": "try"})
        assert made.status_code == 201, made.text
        ran = await http.post(made.json()["fork"]["execute"], json={"code": "print(6 * 7)"})
        assert ran.status_code == 200 and ran.json()["stdout"] == "42\n"
        assert (await http.delete(f"/api/v1/users/{uid}/forks/try")).status_code == 204


async def test_a_failed_checkpoint_is_a_409_with_the_reason(running: Running) -> None:
    uid, headers = await started(running)
    async with running.client(headers=headers) as http:
        answer = await http.post(f"/api/v1/users/{uid}/snapshots", json={"name": "../x"})
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "snapshot_failed"


async def test_another_user_may_not_put_a_runtime_to_sleep(running: Running) -> None:
    uid, _ = await started(running)
    other = await running.token(await running.user("eve"))
    async with running.client(headers=other) as http:
        answer = await http.post(f"/api/v1/users/{uid}/runtimes/sleep")
    assert answer.status_code == 403
