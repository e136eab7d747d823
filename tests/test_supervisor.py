"""Supervision: crashed services restart with backoff; a crash loop stops the daemon."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from markco_trio.config import SupervisionOptions
from markco_trio.readiness import Readiness
from markco_trio.roles import ServiceSpec
from markco_trio.supervisor import Supervisor, TooManyCrashes


class Flaky:
    """A service that crashes its first `crashes` runs, then stays up."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes
        self.runs = 0
        self.started_at: list[float] = []

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        self.started_at.append(trio.current_time())
        task_status.started()
        if self.runs <= self.crashes:
            raise RuntimeError(f"boom {self.runs}")
        await trio.sleep_forever()


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_a_crashed_service_is_restarted(mock_clock: trio.testing.MockClock) -> None:
    readiness = Readiness()
    supervisor = Supervisor(readiness, SupervisionOptions(max_crashes=5))
    service = Flaky(crashes=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.supervise, ServiceSpec("flaky", service.run))
        await trio.sleep(5)
        assert service.runs == 2
        assert supervisor.restarts["flaky"] == 1
        assert readiness.snapshot().ready
        nursery.cancel_scope.cancel()


async def test_restarts_back_off_exponentially(mock_clock: trio.testing.MockClock) -> None:
    supervisor = Supervisor(Readiness(), SupervisionOptions(
        max_crashes=10, backoff_initial=1.0, backoff_max=4.0, window_seconds=1000))
    service = Flaky(crashes=4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.supervise, ServiceSpec("flaky", service.run))
        await trio.sleep(100)
        gaps = [b - a for a, b in zip(service.started_at, service.started_at[1:], strict=False)]
        assert gaps == [1.0, 2.0, 4.0, 4.0]
        nursery.cancel_scope.cancel()


async def test_too_many_crashes_in_the_window_stop_the_daemon(
        mock_clock: trio.testing.MockClock) -> None:
    supervisor = Supervisor(Readiness(), SupervisionOptions(max_crashes=3, window_seconds=60))
    service = Flaky(crashes=100)
    with pytest.raises(TooManyCrashes, match="'flaky' crashed 3 times"):
        await supervisor.supervise(ServiceSpec("flaky", service.run))
    assert service.runs == 3


async def test_crashes_outside_the_window_are_forgiven(mock_clock: trio.testing.MockClock) -> None:
    supervisor = Supervisor(Readiness(), SupervisionOptions(
        max_crashes=2, window_seconds=10, backoff_initial=30, backoff_max=30))
    service = Flaky(crashes=5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor.supervise, ServiceSpec("flaky", service.run))
        await trio.sleep(1000)
        assert service.runs == 6  # never two crashes within 10 s, so never given up
        nursery.cancel_scope.cancel()


async def test_a_crashed_critical_service_makes_the_daemon_not_ready(
        mock_clock: trio.testing.MockClock) -> None:
    readiness = Readiness()
    supervisor = Supervisor(readiness, SupervisionOptions(backoff_initial=10, backoff_max=10))
    gate = trio.Event()

    async def crash_on_demand(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await gate.wait()
        raise RuntimeError("down")

    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.supervise, ServiceSpec("svc", crash_on_demand))
        assert readiness.snapshot().ready
        gate.set()
        await trio.sleep(1)
        assert readiness.snapshot().waiting_for == ("service:svc",)
        nursery.cancel_scope.cancel()
