"""The event bus: persisted first, then fanned out without ever blocking the producer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from markco_trio.clock import ManualClock
from markco_trio.events import EventBus
from markco_trio.roles import EventObserver
from markco_trio.storage.sqlite import SqliteStorage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    async with SqliteStorage(tmp_path / "m.db") as s:
        await s.upgrade()
        yield s


async def test_an_event_is_persisted_before_it_is_delivered(storage: SqliteStorage) -> None:
    bus = EventBus(storage, ManualClock())
    receive = bus.subscribe("t")
    event = await bus.publish("user.started", user_id=None, data={"n": 1})
    delivered = receive.receive_nowait()
    assert delivered == event
    assert [e.id for e in await storage.list_events()] == [event.id]


async def test_a_slow_subscriber_drops_and_counts_instead_of_blocking(
        storage: SqliteStorage) -> None:
    bus = EventBus(storage, ManualClock())
    bus.subscribe("slow", buffer=2)
    for i in range(5):
        await bus.publish("tick", data={"i": i})
    assert bus.statistics().subscribers["slow"] == (2, 3)


async def test_a_subscriber_only_gets_the_types_it_asked_for(storage: SqliteStorage) -> None:
    bus = EventBus(storage, ManualClock())
    receive = bus.subscribe("t", types=frozenset({"wanted"}))
    await bus.publish("unwanted")
    await bus.publish("wanted")
    assert receive.receive_nowait().type == "wanted"
    with pytest.raises(trio.WouldBlock):
        receive.receive_nowait()


async def test_a_failing_observer_does_not_stop_the_others(storage: SqliteStorage) -> None:
    bus = EventBus(storage, ManualClock())
    seen: list[str] = []

    async def broken(event: object) -> None:
        raise ValueError("observer bug")

    async def good(event: object) -> None:
        seen.append(event.type)  # type: ignore[attr-defined]

    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run_observer, EventObserver("broken", broken))
        await nursery.start(bus.run_observer, EventObserver("good", good))
        await bus.publish("a")
        await bus.publish("b")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert seen == ["a", "b"]
