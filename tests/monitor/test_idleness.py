"""Idleness by intent on trio's MockClock (DESIGN §3.3): each kind of intent resets it, an
execution in flight keeps a runtime busy however long, CPU above the floor too; WebSocket
traffic does not."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from markco_trio.builtin.monitor.idleness import INTENT_KINDS, Activity, IdleTracker

TIMEOUT = 15 * 60.0
FLOOR = 0.02


def poll(tracker: IdleTracker, activity: Activity | None = None) -> bool:
    return tracker.observe(activity or Activity(last={}), trio.current_time(),
                           timeout=TIMEOUT, cpu_floor=FLOOR)


async def quiet_for(tracker: IdleTracker, seconds: float,
                    activity: Activity | None = None) -> list[bool]:
    """Poll every 5 s for `seconds`; what each poll answered."""
    answers = []
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        await trio.sleep(5)
        answers.append(poll(tracker, activity))
    return answers


async def test_a_quiet_runtime_is_idle_after_the_timeout_once(
        mock_clock: trio.testing.MockClock) -> None:
    tracker = IdleTracker(trio.current_time())
    answers = await quiet_for(tracker, TIMEOUT - 5)
    assert not any(answers)
    answers = await quiet_for(tracker, 60)
    assert answers.count(True) == 1 and answers[0]  # at 15 min, then not again


@pytest.mark.parametrize("kind", INTENT_KINDS)
async def test_each_kind_of_intent_resets_idleness(kind: str,
                                                   mock_clock: trio.testing.MockClock) -> None:
    tracker = IdleTracker(trio.current_time())
    await quiet_for(tracker, TIMEOUT - 60)
    seen = Activity(last={kind: trio.current_time()})
    answers = await quiet_for(tracker, TIMEOUT - 10, seen)
    assert not any(answers), f"{kind} 14 min ago: not idle yet"
    answers = await quiet_for(tracker, 20, seen)
    assert True in answers


async def test_websocket_traffic_is_not_intent(mock_clock: trio.testing.MockClock) -> None:
    tracker = IdleTracker(trio.current_time())
    answers: list[bool] = []
    for _ in range(int(TIMEOUT / 5) + 2):
        await trio.sleep(5)
        answers.append(poll(tracker, Activity(last={"websocket": trio.current_time()})))
    assert True in answers  # a forgotten tab's pings do not keep it awake


async def test_an_execution_in_flight_keeps_the_runtime_busy(
        mock_clock: trio.testing.MockClock) -> None:
    tracker = IdleTracker(trio.current_time())
    started = trio.current_time()  # the cell started, then the browser went away
    running = Activity(last={"execution": started}, executions_in_flight=1, cpu_cores=0.0)
    answers = await quiet_for(tracker, 3 * TIMEOUT, running)
    assert not any(answers)
    done = Activity(last={"execution": started}, executions_in_flight=0, cpu_cores=0.0)
    assert not any(await quiet_for(tracker, TIMEOUT - 10, done))
    assert True in await quiet_for(tracker, 20, done)  # idle from when it ended


async def test_cpu_above_the_floor_is_busy_and_below_it_is_not(
        mock_clock: trio.testing.MockClock) -> None:
    busy = IdleTracker(trio.current_time())
    assert not any(await quiet_for(busy, 2 * TIMEOUT, Activity(last={}, cpu_cores=0.5)))
    calm = IdleTracker(trio.current_time())
    assert True in await quiet_for(calm, TIMEOUT + 10, Activity(last={}, cpu_cores=0.01))


async def test_after_an_idle_period_activity_starts_a_new_one(
        mock_clock: trio.testing.MockClock) -> None:
    tracker = IdleTracker(trio.current_time())
    assert True in await quiet_for(tracker, TIMEOUT + 5)
    back = Activity(last={"navigation": trio.current_time()})
    assert not poll(tracker, back)
    assert not tracker.idle
    assert (await quiet_for(tracker, TIMEOUT + 10, back)).count(True) == 1


async def test_activity_before_the_runtime_was_found_does_not_make_it_idle_at_once(
        mock_clock: trio.testing.MockClock) -> None:
    await trio.sleep(TIMEOUT * 2)
    long_ago = Activity(last={"navigation": 1.0})
    tracker = IdleTracker(trio.current_time())  # found now (just started, or adopted)
    assert not poll(tracker, long_ago)
