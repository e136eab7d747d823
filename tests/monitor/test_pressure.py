"""Memory pressure on trio's MockClock: the original's thresholds (only the highest crossed
fires), hysteresis (re-armed only a margin below), per-type cooldown; CPU from deltas."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from markco_trio.builtin.monitor.options import MonitorOptions
from markco_trio.builtin.monitor.pressure import CpuMeter, MemoryReading, PressureTracker

OPTIONS = MonitorOptions()  # 50 / 75 / 90 / 95 %, margin 5, cooldown 60 s
MiB = 1 << 20


def tracker(options: MonitorOptions = OPTIONS) -> PressureTracker:
    return PressureTracker(options.levels, margin=options.margin,
                           cooldown=options.cooldown_for)


def at(track: PressureTracker, percent: float) -> str | None:
    return track.observe(percent, trio.current_time())


async def test_each_threshold_raises_its_event_and_only_the_highest(
        mock_clock: trio.testing.MockClock) -> None:
    # The original's test figures: a 512 MiB limit.
    cases = [(200, None), (260, "pre-provision"), (400, "migrate"), (470, "urgent-migrate"),
             (490, "critical")]
    for used, expected in cases:
        percent = MemoryReading(used * MiB, 512 * MiB).percent
        assert at(tracker(), percent) == expected, (used, percent)


async def test_usage_that_stays_high_fires_once_not_every_cooldown(
        mock_clock: trio.testing.MockClock) -> None:
    track = tracker()
    fired = []
    for _ in range(120):  # ten minutes of polls at 80 %
        fired.append(at(track, 80.0))
        await trio.sleep(5)
    assert [f for f in fired if f] == ["migrate"]


async def test_an_event_re_arms_only_after_falling_a_margin_below(
        mock_clock: trio.testing.MockClock) -> None:
    track = tracker()
    assert at(track, 80.0) == "migrate"
    await trio.sleep(120)
    assert at(track, 71.0) is None  # under 75 but not under 70: still disarmed
    assert at(track, 80.0) is None
    assert at(track, 69.0) is None  # re-armed (and above 50 - 5: pre-provision stays quiet)
    assert at(track, 80.0) == "migrate"


async def test_a_re_armed_event_waits_for_its_cooldown(
        mock_clock: trio.testing.MockClock) -> None:
    track = tracker()
    assert at(track, 80.0) == "migrate"
    await trio.sleep(10)
    assert at(track, 60.0) is None  # re-armed
    await trio.sleep(10)
    assert at(track, 80.0) is None  # 20 s after the last migrate: cooling down
    await trio.sleep(41)
    assert at(track, 80.0) == "migrate"  # 61 s: the cooldown is over, still above


async def test_cooldowns_are_per_type(mock_clock: trio.testing.MockClock) -> None:
    track = tracker(MonitorOptions(cooldowns={"critical": 5.0}))
    assert at(track, 96.0) == "critical"
    assert at(track, 60.0) is None
    await trio.sleep(6)
    assert at(track, 96.0) == "critical"  # its own 5 s, not the default 60 s
    assert at(track, 60.0) is None
    # migrate never fired: its cooldown does not depend on critical's
    assert at(track, 80.0) == "migrate"


async def test_a_rise_to_a_higher_level_fires_at_once(
        mock_clock: trio.testing.MockClock) -> None:
    track = tracker()
    assert at(track, 52.0) == "pre-provision"
    assert at(track, 80.0) == "migrate"
    assert at(track, 91.0) == "urgent-migrate"
    assert at(track, 97.0) == "critical"
    assert at(track, 85.0) is None  # falling back does not fire the lower ones again


async def test_a_limit_of_zero_is_no_pressure() -> None:
    assert MemoryReading(300 * MiB, 0).percent == 0.0


async def test_cpu_comes_from_deltas_between_samples(
        mock_clock: trio.testing.MockClock) -> None:
    meter = CpuMeter()
    # 100 s of CPU since the runtime started (a busy past): the first sample says nothing.
    assert meter.observe(100.0, trio.current_time()) is None
    await trio.sleep(5)
    cores = meter.observe(100.05, trio.current_time())
    assert cores is not None and abs(cores - 0.01) < 1e-9  # 1 % now, whatever the past


async def test_a_counter_that_went_back_is_a_restart_not_negative_cpu(
        mock_clock: trio.testing.MockClock) -> None:
    meter = CpuMeter()
    meter.observe(50.0, 0.0)
    assert meter.observe(0.2, 5.0) is None
    assert meter.observe(0.7, 10.0) == pytest.approx(0.1)
