"""Issue 11, items 1, 2 and 4: the state shown is that of both workloads; a manual recovery
begins a new crash window; every failed operation tells whoever follows the progress, and a
later attempt succeeds without anyone restarting anything."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from markco_trio.builtin.compute.actor import UserActor
from markco_trio.errors import StorageError
from markco_trio.records import Runtime, RuntimeState, WorkloadRole
from markco_trio.roles import workload_name
from tests.compute.harness import Harness, run_harness
from tests.compute.test_compute_lifecycle import payload_pid


def record(role: WorkloadRole, state: RuntimeState, reason: str | None = None) -> Runtime:
    return Runtime(id=role.value, user_id="u1", role=role, backend="process", host="local",
                   handle=workload_name("d", "u1", role), address="127.0.0.1:1", state=state,
                   limits={}, created_at=1.0, updated_at=1.0, reason=reason)


def actor_with(runtime: RuntimeState, runtime_ready: bool) -> UserActor:
    actor = UserActor(SimpleNamespace(), "u1")  # type: ignore[arg-type]
    actor.records[WorkloadRole.RUNTIME] = record(WorkloadRole.RUNTIME, runtime, "crashed 5 times")
    actor.records[WorkloadRole.EDITOR] = record(WorkloadRole.EDITOR, RuntimeState.RUNNING)
    actor.ready[WorkloadRole.EDITOR] = True
    actor.ready[WorkloadRole.RUNTIME] = runtime_ready
    return actor


def test_a_failed_runtime_next_to_a_ready_editor_is_not_ready() -> None:
    state = actor_with(RuntimeState.FAILED, runtime_ready=False).snapshot()
    assert not state.ready


def test_a_failed_runtime_next_to_a_ready_editor_reads_failed() -> None:
    assert actor_with(RuntimeState.FAILED, runtime_ready=False).snapshot().summary == "failed"


def test_both_workloads_answering_read_running() -> None:
    state = actor_with(RuntimeState.RUNNING, runtime_ready=True).snapshot()
    assert state.ready and state.summary == "running"


def test_a_crashed_runtime_awaiting_its_restart_is_not_ready() -> None:
    assert not actor_with(RuntimeState.STARTING, runtime_ready=False).snapshot().ready


async def crash(h: Harness, user_id: str) -> None:
    os.kill(payload_pid(h, user_id, WorkloadRole.RUNTIME), signal.SIGKILL)


@pytest.mark.usefixtures("cleanup_workloads")
async def test_a_manual_start_after_failed_begins_a_new_crash_window(
        write_compute_config: Callable[..., Path]) -> None:
    config = write_compute_config(max_crashes=2, crash_window=600.0)
    async with run_harness(config) as h:
        user = await h.user("crashy")
        await h.service.ensure_started(user.id, reason="test")
        await crash(h, user.id)
        await h.wait_event("runtime.restarted", user.id)
        await crash(h, user.id)
        await h.wait_event("runtime.failed", user.id)
        await h.service.ensure_started(user.id, reason="the user pressed Start")
        await crash(h, user.id)
        await h.wait_event("runtime.restarted", user.id, count=2)
        assert h.kinds(user.id).count("runtime.failed") == 1


@pytest.mark.usefixtures("cleanup_workloads")
async def test_a_start_failing_on_storage_tells_the_progress_followers(
        write_compute_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    async with run_harness(write_compute_config()) as h:
        user = await h.user("unlucky")
        real = h.storage.create_operation
        failures = [StorageError("the database is read-only")]

        async def flaky(**kwargs: Any) -> Any:
            if failures:
                raise failures.pop()
            return await real(**kwargs)

        monkeypatch.setattr(h.storage, "create_operation", flaky)
        with h.service.subscribe_progress(user.id) as events:
            h.service.request_start(user.id, reason="navigation")
            with trio.fail_after(20):
                async for event in events:
                    if event.failed:
                        break
        assert event.done and "read-only" in event.message


@pytest.mark.usefixtures("cleanup_workloads")
async def test_a_start_after_a_storage_failure_succeeds(
        write_compute_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    async with run_harness(write_compute_config()) as h:
        user = await h.user("unlucky")
        real = h.storage.create_operation
        failures = [StorageError("the database is read-only")]

        async def flaky(**kwargs: Any) -> Any:
            if failures:
                raise failures.pop()
            return await real(**kwargs)

        monkeypatch.setattr(h.storage, "create_operation", flaky)
        with pytest.raises(Exception, match="read-only"):
            await h.service.ensure_started(user.id, reason="navigation")
        state = await h.service.ensure_started(user.id, reason="navigation again")
        assert state.ready
