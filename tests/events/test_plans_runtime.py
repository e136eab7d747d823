"""A plan change reaches the running runtime: through the API at once (its memory limit, as
the backend reports it, is the new plan's when the answer comes), and from the CLI — another
process — within `plan_check_interval`. Real workloads on the process backend (cgroups)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio

from markco_trio.config import load_config
from markco_trio.daemon import Daemon
from markco_trio.records import WorkloadRole
from markco_trio.roles import workload_name
from markco_trio.testing.network import free_port
from markco_trio.testing.workload_python import WorkloadPython
from tests.compute.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    cleanup_workloads,
    compute_root,
    data_dir,
    deployment_ids,
    wpython,
)
from tests.compute.harness import config_text, plugin_modules
from tests.compute.polling import eventually, eventually_async
from tests.compute.test_compute_api import Running

pytestmark = pytest.mark.usefixtures("cleanup_workloads")
ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


@pytest.fixture
async def running(data_dir: Path, wpython: WorkloadPython,  # noqa: F811
                  deployment_ids: Callable[[str], str]) -> AsyncIterator[Running]:  # noqa: F811
    """A daemon with auth and compute on the process backend; plans checked every 0.3 s."""
    port = free_port()
    path = data_dir.parent / f"{data_dir.name}-daemon.toml"
    path.write_text(config_text(
        data_dir, deployment_ids("plans"), wpython, listen=f"127.0.0.1:{port}",
        modules=plugin_modules("markco_trio.builtin.auth"), start_on_login=False,
        plan_check_interval=0.3, extra='\n[auth]\nlogin_link = "never"\n'))
    config, pm = load_config(path, entry_points=False)
    daemon = Daemon(config, pm)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: daemon.run(task_status=task_status, handle_signals=False))
        await eventually(lambda: daemon.readiness.snapshot().ready, what="/readyz")
        yield Running(daemon, bound)
        nursery.cancel_scope.cancel()


async def memory_limit(running: Running, user_id: str) -> int | None:
    assert running.daemon.ctx.backend is not None
    handle = workload_name(running.compute.deployment_id, user_id, WorkloadRole.RUNTIME)
    return (await running.daemon.ctx.backend.stats(handle)).memory_limit


async def test_a_plan_changed_through_the_api_applies_to_the_running_runtime(
        running: Running) -> None:
    alice, admin = await running.user("alice"), await running.user("root", admin=True)
    await running.compute.ensure_started(alice.id, reason="test")
    assert await memory_limit(running, alice.id) == 256 * MiB  # free
    async with running.client() as http:
        response = await http.put(f"/api/v1/users/{alice.id}/plan", json={"plan": "team"},
                                  headers=await running.token(admin))
    assert response.status_code == 200, response.text
    assert response.json()["applied"] is True
    assert await memory_limit(running, alice.id) == 1024 * MiB
    storage = running.daemon.ctx.require_storage()
    kinds = [(e.type, e.data) for e in await storage.list_events(user_id=alice.id)
             if e.type in ("user.plan_changed", "runtime.limits_changed")]
    assert kinds[0] == ("user.plan_changed", {"old": "free", "new": "team", "by": "root"})
    assert kinds[1][0] == "runtime.limits_changed"
    assert kinds[1][1]["after"]["memory_bytes"] == 1024 * MiB


async def test_a_plan_changed_by_the_cli_reaches_the_running_runtime(running: Running) -> None:
    alice = await running.user("alice")
    await running.compute.ensure_started(alice.id, reason="test")
    here = running.daemon.config.data_dir
    config = here.parent / f"{here.name}-daemon.toml"
    done = await trio.run_process(
        [sys.executable, "-m", "markco_trio", "plans", "set", "alice", "pro", "--config",
         str(config)], capture_stdout=True, capture_stderr=True, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr.decode()

    async def applied() -> bool:
        return await memory_limit(running, alice.id) == 512 * MiB

    await eventually_async(applied, within=10, what="the pro plan's 512 MiB limit")


