"""Compute's elasticity policy, on trio's MockClock, against a stand-in compute service (a mock:
these tests are about the decisions; tests/monitor/test_*_e2e.py run them on real parts):
raise in place within the plan's ceiling and the host's room, else tell the user; critical at
once; one decision at a time, rate-limited; each decision and its outcome an event."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from markco_trio.builtin.compute.actor import OperationFailed
from markco_trio.builtin.compute.elasticity import (
    ElasticityPolicy,
    PolicySettings,
    kept_limits,
    next_limit,
)
from markco_trio.builtin.compute.options import PlanLimits, WorkloadsOptions

MiB = 1 << 20
GiB = 1 << 30


@dataclass
class StandIn:
    """What the policy uses of `ComputeService`."""

    live: bool = True
    limit: int = 256 * MiB
    checkpointer: Any = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    notice: tuple[str | None, str | None] = (None, None)
    refuse: bool = False
    slow: trio.Event | None = None
    slept: int = 0
    limits: dict[str, Any] = field(default_factory=dict)
    working_set: int = 100 * MiB
    running: bool = True

    def __post_init__(self) -> None:
        self.options = WorkloadsOptions(plans={"free": PlanLimits(256, 0.5,
                                                                  max_memory_mib=512)})
        self.storage = SimpleNamespace(get_user=self._get_user)
        self.backend = SimpleNamespace(name="fake", stats=self._stats)
        self.ctx = SimpleNamespace(checkpointer=self.checkpointer)

    async def _get_user(self, user_id: str) -> Any:
        return SimpleNamespace(plan="free")

    @property
    def capabilities(self) -> Any:
        return SimpleNamespace(update_limits_live=self.live)

    async def _stats(self, handle: str) -> Any:
        return SimpleNamespace(memory_working_set=self.working_set)

    def monitored_nowait(self) -> list[Any]:
        return [SimpleNamespace(user_id="ada", handle="rt-ada", limits=self.limits)] \
            if self.running else []

    def busy_nowait(self, user_id: str) -> bool:
        return False

    async def raise_memory(self, user_id: str, memory_bytes: int) -> tuple[dict[str, Any],
                                                                         dict[str, Any]]:
        if self.slow is not None:
            await self.slow.wait()
        if self.refuse:
            raise OperationFailed("the backend did not change the limit: engine said no")
        before = {"memory_bytes": self.limit}
        self.limit = memory_bytes
        return before, {"memory_bytes": memory_bytes}

    def set_notice(self, user_id: str, text: str | None, notice_id: str | None) -> None:
        self.notice = (text, notice_id)

    def notice_nowait(self, user_id: str) -> tuple[str | None, str | None]:
        return self.notice

    async def publish(self, kind: str, user_id: str | None, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    async def sleep(self, user_id: str, *, reason: str) -> None:
        self.slept += 1

    def decisions(self) -> list[tuple[str, str]]:
        return [(d["action"], d.get("outcome", "")) for k, d in self.events
                if k.startswith("elasticity.")]


def policy(svc: StandIn, *, available: int | None = 8 * GiB, **settings: Any
           ) -> ElasticityPolicy:
    made = ElasticityPolicy(svc, PolicySettings(**settings))  # type: ignore[arg-type]
    made.available = lambda: available
    return made


async def pressure(p: ElasticityPolicy, svc: StandIn, trigger: str = "migrate") -> None:
    await p.on_pressure("ada", trigger, working_set=int(svc.limit * 0.8), limit=svc.limit)


async def test_pressure_raises_the_limit_in_place(mock_clock: trio.testing.MockClock) -> None:
    svc = StandIn()
    await pressure(policy(svc), svc)
    assert svc.limit == 384 * MiB  # × 1.5
    assert svc.decisions() == [("raise_limit", ""), ("raise_limit", "done")]
    assert [k for k, _ in svc.events][-1] == "runtime.limits_changed"


async def test_the_plans_ceiling_stops_raising_and_the_user_is_told(
        mock_clock: trio.testing.MockClock) -> None:
    svc = StandIn()
    p = policy(svc, decision_interval=0)
    await pressure(p, svc)
    await pressure(p, svc)
    assert svc.limit == 512 * MiB  # 384 × 1.5 = 576, capped at max_memory_mib
    await pressure(p, svc, "critical")
    assert svc.limit == 512 * MiB
    assert svc.decisions()[-2:] == [("notify", ""), ("notify", "done")]
    text, notice_id = svc.notice
    assert text and "Memory almost full" in text and "ceiling of 512 MiB" in text
    assert notice_id and notice_id.startswith("memory-")


async def test_a_host_without_room_means_telling_the_user(
        mock_clock: trio.testing.MockClock) -> None:
    svc = StandIn()
    await pressure(policy(svc, available=576 * MiB, host_reserve_mib=512), svc)
    assert svc.limit == 256 * MiB + 64 * MiB  # only the room above the reserve
    svc2 = StandIn()
    await pressure(policy(svc2, available=500 * MiB, host_reserve_mib=512), svc2)
    assert svc2.limit == 256 * MiB
    assert svc2.notice[0] and "the host has 500 MiB free" in svc2.notice[0]


async def test_a_backend_without_live_limits_means_telling_the_user(
        mock_clock: trio.testing.MockClock) -> None:
    svc = StandIn(live=False)
    await pressure(policy(svc), svc)
    assert svc.limit == 256 * MiB and svc.decisions()[0] == ("notify", "")


async def test_a_refused_raise_is_a_failed_outcome_and_the_user_is_told(
        mock_clock: trio.testing.MockClock) -> None:
    svc = StandIn(refuse=True)
    await pressure(policy(svc), svc)
    assert svc.decisions() == [("raise_limit", ""), ("raise_limit", "failed"), ("notify", ""),
                               ("notify", "done")]
    assert svc.notice[0] and "engine said no" in svc.notice[0]


async def test_a_runtime_gone_meanwhile_is_no_notice(
        mock_clock: trio.testing.MockClock) -> None:
    svc = StandIn(refuse=True, running=False)  # it went to sleep between event and decision
    await pressure(policy(svc), svc)
    assert svc.decisions() == [("raise_limit", ""), ("raise_limit", "failed")]
    assert svc.notice == (None, None)


async def test_decisions_are_rate_limited_but_critical_is_taken_at_once(
        mock_clock: trio.testing.MockClock) -> None:
    svc = StandIn()
    p = policy(svc, decision_interval=30)
    await pressure(p, svc)
    await trio.sleep(10)
    await pressure(p, svc, "urgent-migrate")
    assert svc.limit == 384 * MiB and p.statistics().rate_limited == 1
    await pressure(p, svc, "critical")
    assert svc.limit == 512 * MiB
    await trio.sleep(31)


async def test_one_decision_at_a_time_per_user(mock_clock: trio.testing.MockClock) -> None:
    svc = StandIn(slow=trio.Event())
    p = policy(svc)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pressure, p, svc, "critical")
        await trio.sleep(1)
        await pressure(p, svc, "critical")  # the first is still under way: skipped
        assert p.statistics().skipped_busy == 1
        assert svc.slow is not None
        svc.slow.set()
    assert svc.limit == 384 * MiB and p.statistics().decisions == 1


async def test_idleness_without_a_checkpointer_keeps_the_runtime_running(
        mock_clock: trio.testing.MockClock) -> None:
    svc = StandIn()
    assert not await policy(svc).on_idle("ada", idle_for=900, last="navigation")
    assert svc.slept == 0 and svc.decisions() == [("none", "")]


async def test_idleness_with_a_checkpointer_sleeps_the_runtime(
        mock_clock: trio.testing.MockClock) -> None:
    able = SimpleNamespace(capabilities=lambda backend: SimpleNamespace(checkpoint=True))
    svc = StandIn(checkpointer=able)
    assert await policy(svc).on_idle("ada", idle_for=900, last="navigation")
    assert svc.slept == 1 and svc.decisions() == [("sleep", ""), ("sleep", "done")]


async def test_a_raised_runtime_is_put_to_sleep_too(
        mock_clock: trio.testing.MockClock) -> None:
    """Its wake restores the raised limit (`restore_limits`), so its size is no reason to
    keep it running (test_compute_elasticity proves the wake on a real runtime)."""
    able = SimpleNamespace(capabilities=lambda backend: SimpleNamespace(checkpoint=True))
    raised = {"plan": "free", "memory_bytes": 384 * MiB, "raised_from": 256 * MiB}
    svc = StandIn(checkpointer=able, limits=raised, working_set=300 * MiB)
    assert await policy(svc).on_idle("ada", idle_for=900, last="navigation")
    assert svc.slept == 1 and svc.decisions() == [("sleep", ""), ("sleep", "done")]


async def test_a_gpu_hint_is_recorded_until_gpu_hosts_exist(
        mock_clock: trio.testing.MockClock) -> None:
    svc = StandIn()
    await policy(svc).on_hint("ada", "gpu-hint", ("import torch",))
    assert svc.decisions() == [("record", ""), ("record", "done")]
    assert svc.events[0][1]["reasons"] == ["import torch"]


def test_a_raise_survives_the_plan_check_while_the_plan_is_the_same() -> None:
    wanted = {"plan": "free", "memory_bytes": 256 * MiB, "cpus": 0.5}
    raised = {**wanted, "memory_bytes": 384 * MiB, "raised_from": 256 * MiB}
    assert kept_limits(raised, dict(wanted), 512 * MiB) == raised
    assert kept_limits({**raised, "plan": "pro"}, dict(wanted), 512 * MiB) == wanted
    assert kept_limits(raised, dict(wanted), 320 * MiB) == wanted  # ceiling lowered
    assert kept_limits(wanted, dict(wanted), 512 * MiB) == wanted


@pytest.mark.parametrize(("current", "ceiling", "available", "expected"), [
    (256, 512, 8192, 384),
    (256, 300, 8192, 300),
    (512, 512, 8192, 512),
    (100, 4096, 8192, 164),  # at least raise_min (64 MiB)
    (256, 1024, None, 384),  # host memory unknown (a remote engine): the plan decides
])
def test_the_next_limit(current: int, ceiling: int, available: int | None,
                        expected: int) -> None:
    limit, _ = next_limit(current=current * MiB, ceiling=ceiling * MiB,
                          available=available * MiB if available else None,
                          reserve=512 * MiB, factor=1.5, minimum_step=64 * MiB)
    assert limit == expected * MiB
