"""The monitor service on trio's MockClock with a fake backend and compute (mocks: see
`fakes.py`): its rate, the real limit, events with the original names handed to the policy,
idleness from compute's activity, hints from executed code, bounded and fault-tolerant
sampling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from markco_trio.builtin.monitor import service as monitor_service
from markco_trio.builtin.monitor.options import MonitorOptions
from markco_trio.builtin.monitor.service import HINT_BUDGET, Monitor, file_size
from markco_trio.metrics import Registry

from .conftest import TrioWallClock
from .fakes import FakeBackend, FakeCompute, FakePolicy, MiB, Published, Usage


@dataclass
class Rig:
    monitor: Monitor
    backend: FakeBackend
    compute: FakeCompute
    policy: FakePolicy
    published: Published
    clock: TrioWallClock


@asynccontextmanager
async def running(options: MonitorOptions | None = None) -> AsyncIterator[Rig]:
    backend, compute, policy, published = FakeBackend(), FakeCompute(), FakePolicy(), Published()
    clock = TrioWallClock()
    monitor = Monitor(options or MonitorOptions(), compute=compute, backend=lambda: backend,
                      policy=policy, publish=published, now=clock.now)  # type: ignore[arg-type]
    rig = Rig(monitor, backend, compute, policy, published, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        yield rig
        nursery.cancel_scope.cancel()


async def after_polls(rig: Rig, count: int) -> None:
    """Until `count` more polls are done and what they raised is out. (The hints are parsed
    in a worker thread, which the MockClock does not wait for: it counts polls, not time.)"""
    await after_polls_of(rig.monitor, count)


async def after_polls_of(monitor: Monitor, count: int) -> None:
    """`after_polls` of a monitor running outside a `Rig`."""
    target = monitor.statistics().polls + count
    while monitor.statistics().polls < target:  # noqa: ASYNC110 - a counter, no event
        await trio.sleep(0.5)
    await trio.testing.wait_all_tasks_blocked()


@pytest.fixture(autouse=True)
def analyse_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hints parsed inline, not in a worker thread: on the autojumping MockClock a thread's
    wall time lets virtual time race ahead (a 60 s cooldown could pass between two polls)."""
    async def inline(fn: Any) -> Any:
        return fn()

    monkeypatch.setattr(monitor_service, "analyse_off_loop", inline)


def add(rig: Rig, user_id: str, usage: Usage | None = None, **kwargs: object) -> None:
    rig.compute.add(user_id, **kwargs)  # type: ignore[arg-type]
    rig.backend.usage[f"rt-{user_id}"] = usage or Usage()


async def test_it_polls_every_interval(mock_clock: trio.testing.MockClock) -> None:
    async with running(MonitorOptions(interval=5.0)) as rig:
        await trio.sleep(60.1)
        assert rig.monitor.statistics().polls == 13  # at 0, 5, ..., 60


async def test_memory_is_judged_against_the_backends_real_limit(
        mock_clock: trio.testing.MockClock) -> None:
    async with running() as rig:
        # The record says 1 GiB (the original registered 0); the runtime really has 256 MiB.
        add(rig, "ada", Usage(working_set=200 * MiB, limit=256 * MiB), memory_bytes=1 << 30)
        await trio.sleep(5.1)
    assert rig.published.kinds("ada") == ["migrate"]
    kind, user, data = rig.published.events[0]
    assert data["memory_limit"] == 256 * MiB and data["memory_percent"] == 78.12
    assert rig.policy.calls == [("ada", "migrate", (200 * MiB, 256 * MiB))]


async def test_pre_provision_is_an_event_without_a_decision(
        mock_clock: trio.testing.MockClock) -> None:
    async with running() as rig:
        add(rig, "ada", Usage(working_set=140 * MiB))
        await trio.sleep(5.1)
    assert rig.published.kinds() == ["pre-provision"]
    assert rig.policy.calls == []


async def test_a_quiet_runtime_raises_idle_sleep_and_activity_postpones_it(
        mock_clock: trio.testing.MockClock) -> None:
    async with running(MonitorOptions(idle_timeout=60.0)) as rig:
        add(rig, "ada")
        add(rig, "bob")
        await trio.sleep(40)
        rig.compute.set("bob", activity={"navigation": rig.clock.now()})
        await trio.sleep(30)
        assert rig.published.kinds("ada") == ["idle-sleep"]
        assert rig.published.kinds("bob") == []
        await trio.sleep(40)
        assert rig.published.kinds("bob") == ["idle-sleep"]
    assert ("ada", "idle-sleep") in [(u, k) for u, k, _ in rig.policy.calls]


async def test_an_execution_in_flight_is_never_idle(mock_clock: trio.testing.MockClock) -> None:
    async with running(MonitorOptions(idle_timeout=60.0)) as rig:
        add(rig, "ada", executions_in_flight=1)
        await trio.sleep(600)
        assert rig.published.kinds("ada") == []
        rig.compute.set("ada", executions_in_flight=0)
        await trio.sleep(70)
        assert rig.published.kinds("ada") == ["idle-sleep"]


async def test_the_idle_timeout_follows_the_plan(mock_clock: trio.testing.MockClock) -> None:
    options = MonitorOptions(idle_timeout=600.0, idle_timeout_by_plan={"free": 30.0})
    async with running(options) as rig:
        add(rig, "ada", plan="free")
        add(rig, "bob", plan="team")
        await trio.sleep(60)
        assert rig.published.kinds("ada") == ["idle-sleep"]
        assert rig.published.kinds("bob") == []


async def test_a_runtime_found_again_after_an_idle_sleep_raises_idle_wake(
        mock_clock: trio.testing.MockClock) -> None:
    async with running(MonitorOptions(idle_timeout=30.0)) as rig:
        add(rig, "ada")
        await trio.sleep(40)
        del rig.compute.runtimes["ada"]  # asleep
        await trio.sleep(20.5)
        add(rig, "ada")  # a navigation woke it
        await trio.sleep(5)
        assert rig.published.kinds("ada") == ["idle-sleep", "idle-wake"]


async def test_executed_code_raises_hints(mock_clock: trio.testing.MockClock) -> None:
    async with running() as rig:
        add(rig, "ada")
        rig.compute.executed["ada"] = ["import torch\nmodel.cuda()", "import pandas as pd",
                                       "pd.read_parquet('x.parquet')"]
        await after_polls(rig, 1)
    assert sorted(rig.published.kinds("ada")) == ["big-ram-hint", "gpu-hint"]
    assert ("ada", "gpu-hint", ("import torch", ".cuda()")) in rig.policy.calls


async def test_hints_of_one_type_are_cooled_down(mock_clock: trio.testing.MockClock) -> None:
    async with running(MonitorOptions(cooldown=60.0)) as rig:
        add(rig, "ada")
        for _ in range(5):
            rig.compute.executed["ada"] = ["import torch"]
            await after_polls(rig, 1)  # 5 s each: all within the 60 s cooldown
        assert rig.published.kinds("ada") == ["gpu-hint"]


async def test_sampling_is_bounded_and_a_hanging_sample_does_not_hold_the_others(
        mock_clock: trio.testing.MockClock) -> None:
    options = MonitorOptions(concurrency=4, sample_timeout=2.0, interval=5.0)
    async with running(options) as rig:
        for i in range(40):
            add(rig, f"u{i}", Usage(working_set=200 * MiB))
        rig.backend.hanging.add("rt-u0")
        rig.backend.broken.add("rt-u1")
        await trio.sleep(7.5)  # the poll at 5 s waits 2 s for the hanging sample
        stats = rig.monitor.statistics()
    assert rig.backend.max_in_flight == 4
    assert stats.sample_timeouts == 1 and stats.sample_errors == 1
    assert sorted(str(u) for k, u, _ in rig.published.events if k == "migrate") == \
        sorted(f"u{i}" for i in range(2, 40))


async def test_memory_falling_well_below_tells_the_policy(
        mock_clock: trio.testing.MockClock) -> None:
    async with running() as rig:
        add(rig, "ada", Usage(working_set=200 * MiB))
        await trio.sleep(5)
        rig.backend.usage["rt-ada"].limit = 512 * MiB  # raised: now 39 %
        await trio.sleep(5)
    assert rig.policy.relieved_users and set(rig.policy.relieved_users) == {"ada"}


async def test_a_disabled_monitor_samples_nothing(mock_clock: trio.testing.MockClock) -> None:
    async with running(MonitorOptions(enabled=False)) as rig:
        add(rig, "ada", Usage(working_set=250 * MiB))
        await trio.sleep(60)
    assert rig.backend.calls == 0 and rig.published.events == []


async def test_polls_and_events_are_in_the_metrics(mock_clock: trio.testing.MockClock) -> None:
    registry = Registry()
    backend, compute = FakeBackend(), FakeCompute()
    compute.add("ada")
    backend.usage["rt-ada"] = Usage(working_set=200 * MiB)
    monitor = Monitor(MonitorOptions(), compute=compute, backend=lambda: backend,
                      policy=None, publish=Published(), now=TrioWallClock().now,
                      metrics=registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        await trio.sleep(12)
        nursery.cancel_scope.cancel()
    text = registry.render().decode()
    assert "markco_monitor_poll_seconds_count 3" in text
    assert 'markco_monitor_events_total{type="migrate"} 1' in text


async def test_hint_analysis_is_bounded_per_poll(mock_clock: trio.testing.MockClock) -> None:
    async with running() as rig:
        cell = "import torch\n" + "x = 1\n" * (HINT_BUDGET // 4 // 6 - 3)  # a quarter each
        users = ["ada", "bob", "cyd", "dan", "eve"]
        for user in users:
            add(rig, user)
            rig.compute.executed[user] = [cell]
        await after_polls(rig, 1)
        stats = rig.monitor.statistics()
    assert stats.hints_skipped == 1
    assert len([u for k, u, _ in rig.published.events if k == "gpu-hint"]) == 4


async def test_an_idle_sleep_that_did_not_happen_is_tried_again_a_timeout_later(
        mock_clock: trio.testing.MockClock) -> None:
    async with running(MonitorOptions(idle_timeout=60.0)) as rig:
        rig.policy.sleeps = False  # e.g. the checkpoint failed: the runtime keeps running
        add(rig, "ada")  # found by the poll at 5 s: idle at 65 s
        await trio.sleep(67)
        assert rig.published.kinds("ada") == ["idle-sleep"]
        await trio.sleep(53)  # 120 s
        assert rig.published.kinds("ada") == ["idle-sleep"]
        await trio.sleep(10)  # 130 s: idle again since the failure at 65 s
        assert rig.published.kinds("ada") == ["idle-sleep", "idle-sleep"]


def test_file_sizes_are_read_only_inside_the_users_directory(tmp_path: Path) -> None:
    home = tmp_path / "users" / "ada"
    home.mkdir(parents=True)
    (home / "small.csv").write_text("a,b\n1,2\n")
    (tmp_path / "secret").write_text("x" * 1000)
    (home / "link").symlink_to(tmp_path / "secret")
    assert file_size(home, "small.csv") == 8
    assert file_size(home, "../../secret") is None
    assert file_size(home, str(tmp_path / "secret")) is None
    assert file_size(home, "link") is None  # a symlink out of the directory
    assert file_size(home, "missing.csv") is None
    assert file_size(home, ".") is None  # not a regular file


async def test_a_reader_of_a_small_file_in_the_users_directory_is_no_hint(
        mock_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    (tmp_path / "ada").mkdir()
    (tmp_path / "ada" / "small.csv").write_text("a,b\n1,2\n")
    with (tmp_path / "ada" / "big.csv").open("wb") as f:
        f.truncate(200 << 20)  # sparse: 200 MiB by its size
    backend, compute, published = FakeBackend(), FakeCompute(), Published()
    compute.add("ada")
    backend.usage["rt-ada"] = Usage()
    monitor = Monitor(MonitorOptions(), compute=compute, backend=lambda: backend, policy=None,
                      publish=published, now=TrioWallClock().now,
                      user_dir=lambda user_id: tmp_path / user_id)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)
        compute.executed["ada"] = ["import pandas as pd\npd.read_csv('small.csv')"]
        await after_polls_of(monitor, 1)
        assert published.kinds("ada") == []
        compute.executed["ada"] = ["pd.read_csv('big.csv')"]
        await after_polls_of(monitor, 1)
        assert published.kinds("ada") == ["big-ram-hint"]
        nursery.cancel_scope.cancel()
