"""A runtime whose memory limit elasticity raised beyond its plan sleeps and wakes with that
limit, variables intact — on real parts: the process backend (real mrmd-python in a memory
cgroup) and the REAL `criu` checkpointer. Before `restore_limits`, the wake restored it under
the plan's 256 MiB: the image (over 256 MiB) could not be restored there, and the wake fell
back to a cold start, losing every variable."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from markco_criu.plugin import CriuCheckpointer

from markco_trio.records import RuntimeState, WorkloadRole
from markco_trio.testing.system import missing_system
from tests.compute.harness import Harness, run_harness

MiB = 1 << 20

pytestmark = [pytest.mark.usefixtures("cleanup_workloads"), pytest.mark.slow,
              pytest.mark.system]

# 320 MiB of distinct bytes (over the free plan's 256 MiB, under the raised 448 MiB), in a
# holder with a short repr (mrmd-python reprs every variable after each execution).
ALLOCATE = ("import hashlib, os\n"
            "class Hoard(list):\n"
            "    def __repr__(self):\n"
            "        return f'<{len(self)} MiB>'\n"
            "blob = Hoard(os.urandom(1 << 20) for _ in range(320))\n"
            "def sha(chunks):\n"
            "    h = hashlib.sha256()\n"
            "    for c in chunks:\n"
            "        h.update(c)\n"
            "    return h.hexdigest()\n"
            "digest = sha(blob)\n"
            "x = 42\n")
CHECK = "print(x, len(blob), sha(blob) == digest)\n"


def criu_here() -> bool:
    return os.geteuid() == 0 and bool(shutil.which("criu") or
                                      os.path.exists("/usr/local/sbin/criu"))


@pytest.fixture
async def harness(write_compute_config: Callable[..., Path]) -> AsyncIterator[Harness]:
    if not criu_here():
        missing_system("root and CRIU", "scripts/setup-criu installs CRIU; run as root")
    async with CriuCheckpointer() as criu, \
            run_harness(write_compute_config(), checkpointer=criu) as h:
        yield h


async def execute(h: Harness, user_id: str, code: str) -> str:
    path = h.service.front_path(user_id)
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)),
                                 base_url="http://runtime", timeout=120,
                                 trust_env=False) as front:
        body = (await front.post("/mrp/v1/execute", json={"code": code})).json()
    return str(body.get("stdout") or "") + str(body.get("error") or "")


async def test_a_raised_runtime_wakes_with_its_raised_limit_and_its_variables(
        harness: Harness) -> None:
    user = await harness.user("ada")  # free: 256 MiB, elasticity ceiling 512 MiB
    await harness.service.ensure_started(user.id, reason="test")
    if not harness.backend.capabilities().update_limits_live:
        pytest.fail("the process backend has no memory cgroup here: limits cannot change live")
    await harness.service.raise_memory(user.id, 448 * MiB)
    assert "42 320 True" in await execute(harness, user.id, ALLOCATE + CHECK)

    await harness.service.sleep(user.id, reason="test")
    record = await harness.storage.get_live_runtime(user.id, WorkloadRole.RUNTIME)
    assert record is not None and record.state == RuntimeState.SLEEPING
    assert record.limits["memory_bytes"] == 448 * MiB  # the sleep keeps the raise

    await harness.service.wake(user.id, reason="test")
    state = harness.service.state_nowait(user.id)
    assert state.notice is None, state.notice  # no "started afresh" notice: a real restore
    assert "42 320 True" in await execute(harness, user.id, CHECK)
    [runtime] = [r for r in harness.service.monitored_nowait() if r.user_id == user.id]
    assert (await harness.backend.stats(runtime.handle)).memory_limit == 448 * MiB
    assert runtime.limits["raised_from"] == 256 * MiB
