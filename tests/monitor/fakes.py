"""Fakes for the monitor's unit tests (MockClock): mocks, because these tests are about the
monitor's timing and decisions, not the backends (the backend kit and the end-to-end tests
cover real ones). Shared by bench/monitor.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio
import trio.lowlevel

from markco_trio.builtin.compute.elasticity import MonitoredRuntime
from markco_trio.errors import BackendError
from markco_trio.roles import ContainerStats

MiB = 1 << 20


@dataclass
class Usage:
    """What a fake runtime uses: working set, limit, cumulative CPU seconds."""

    working_set: int = 50 * MiB
    limit: int = 256 * MiB
    cpu_seconds: float = 0.0


class FakeBackend:
    """`stats()` from a table; some handles hang or fail; counts concurrency."""

    name = "fake"

    def __init__(self) -> None:
        self.usage: dict[str, Usage] = {}
        self.hanging: set[str] = set()
        self.broken: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0

    async def stats(self, handle: str) -> ContainerStats:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await trio.lowlevel.checkpoint()
            if handle in self.hanging:
                await trio.sleep_forever()
            if handle in self.broken:
                raise BackendError(f"fake backend: {handle} is not running, so it has no stats")
            usage = self.usage[handle]
            return ContainerStats(memory_working_set=usage.working_set,
                                  memory_limit=usage.limit, cpu_usage_seconds=usage.cpu_seconds,
                                  sampled_at=trio.current_time())
        finally:
            self.in_flight -= 1


@dataclass
class FakeCompute:
    """compute's view of running runtimes, under the test's control."""

    runtimes: dict[str, MonitoredRuntime] = field(default_factory=dict)
    executed: dict[str, list[str]] = field(default_factory=dict)

    def add(self, user_id: str, *, plan: str = "free", memory_bytes: int = 256 * MiB,
            **kwargs: Any) -> MonitoredRuntime:
        runtime = MonitoredRuntime(user_id=user_id, handle=f"rt-{user_id}", plan=plan,
                                   limits={"plan": plan, "memory_bytes": memory_bytes,
                                           "cpus": 1.0}, **kwargs)
        self.runtimes[user_id] = runtime
        return runtime

    def set(self, user_id: str, **changes: Any) -> None:
        old = self.runtimes[user_id]
        self.runtimes[user_id] = MonitoredRuntime(**{**old.__dict__, **changes})

    def monitored_nowait(self) -> list[MonitoredRuntime]:
        return list(self.runtimes.values())

    def take_executed_nowait(self, user_id: str) -> list[str]:
        return self.executed.pop(user_id, [])


@dataclass
class FakePolicy:
    """Records what the monitor handed it."""

    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    relieved_users: list[str] = field(default_factory=list)
    sleeps: bool = True  # what on_idle answers

    async def on_pressure(self, user_id: str, trigger: str, *, working_set: int,
                          limit: int) -> None:
        self.calls.append((user_id, trigger, (working_set, limit)))

    async def on_idle(self, user_id: str, *, idle_for: float, last: str) -> bool:
        self.calls.append((user_id, "idle-sleep", (idle_for, last)))
        return self.sleeps

    async def on_hint(self, user_id: str, hint: str, reasons: tuple[str, ...]) -> None:
        self.calls.append((user_id, hint, reasons))

    def relieved(self, user_id: str) -> None:
        self.relieved_users.append(user_id)


@dataclass
class Published:
    """The events the monitor published, in order."""

    events: list[tuple[str, str | None, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, kind: str, user_id: str | None, data: dict[str, Any]) -> None:
        self.events.append((kind, user_id, data))

    def kinds(self, user_id: str | None = None) -> list[str]:
        return [k for k, u, _ in self.events if user_id is None or u == user_id]
