"""Elasticity inside compute, on real parts (the process backend: real processes in cgroups,
real mrmd-python): a raise changes the running runtime's real limit and its record, survives
the actor's plan check, and a plan change replaces it; compute reports each activity kind to
the monitor; the "memory almost full" notice reaches the user's state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from markco_trio.records import WorkloadRole
from tests.compute.harness import Harness, run_harness

MiB = 1 << 20

pytestmark = pytest.mark.usefixtures("cleanup_workloads")


@pytest.fixture
async def harness(write_compute_config: Callable[..., Path]) -> AsyncIterator[Harness]:
    async with run_harness(write_compute_config(plan_check_interval=0.2)) as h:
        yield h


async def started(harness: Harness, plan: str = "free") -> str:
    user = await harness.user("ada", plan=plan)
    await harness.service.ensure_started(user.id, reason="test")
    return user.id


def runtime_handle(harness: Harness, user_id: str) -> str:
    [runtime] = [r for r in harness.service.monitored_nowait() if r.user_id == user_id]
    return runtime.handle


async def test_a_raise_changes_the_real_limit_and_survives_the_plan_check(
        harness: Harness) -> None:
    user_id = await started(harness)
    if not harness.backend.capabilities().update_limits_live:
        pytest.fail("the process backend has no memory cgroup here: limits cannot change live")
    before, after = await harness.service.raise_memory(user_id, 384 * MiB)
    assert before["memory_bytes"] == 256 * MiB
    assert after == {**before, "memory_bytes": 384 * MiB, "raised_from": 256 * MiB}
    handle = runtime_handle(harness, user_id)
    assert (await harness.backend.stats(handle)).memory_limit == 384 * MiB
    assert not await harness.service.apply_plan(user_id)  # same plan: the raise stays
    assert (await harness.backend.stats(handle)).memory_limit == 384 * MiB
    record = await harness.storage.get_live_runtime(user_id, WorkloadRole.RUNTIME)
    assert record is not None and record.limits["memory_bytes"] == 384 * MiB


async def test_a_plan_change_replaces_a_raised_limit(harness: Harness) -> None:
    user_id = await started(harness)
    await harness.service.raise_memory(user_id, 384 * MiB)
    await harness.storage.update_user(user_id, plan="pro")
    assert await harness.service.apply_plan(user_id)
    handle = runtime_handle(harness, user_id)
    assert (await harness.backend.stats(handle)).memory_limit == 512 * MiB
    [runtime] = harness.service.monitored_nowait()
    assert "raised_from" not in runtime.limits and runtime.plan == "pro"


async def test_each_activity_kind_reaches_the_monitor(harness: Harness) -> None:
    user_id = await started(harness)
    for kind in ("navigation", "request", "input"):
        harness.service.record_activity(user_id, kind)
    [runtime] = harness.service.monitored_nowait()
    assert set(runtime.activity) == {"navigation", "request", "input"}
    assert runtime.executions_in_flight == 0 and not runtime.busy


async def test_the_memory_notice_reaches_the_users_state(harness: Harness) -> None:
    user_id = await started(harness)
    harness.service.set_notice(user_id, "Memory almost full: ...", "memory-1")
    assert harness.service.state_nowait(user_id).notice == "Memory almost full: ..."
    harness.service.set_notice(user_id, None, None)
    assert harness.service.state_nowait(user_id).notice is None
