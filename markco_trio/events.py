"""The event bus: persisted first, then fanned out (DESIGN §1).

`publish` appends the event to the storage's event log, then offers it to every subscriber
through a bounded channel of its own. A subscriber that falls behind loses events (counted in
`statistics()`), it never blocks the producer. Observers contributed by plugins each run in a
task of the daemon's nursery.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from .records import Event

if TYPE_CHECKING:
    from .clock import Clock
    from .roles import EventObserver, Storage

log = logging.getLogger("markco.events")


@dataclass
class _Subscriber:
    name: str
    send: trio.MemorySendChannel[Event]
    types: frozenset[str] | None
    dropped: int = 0
    delivered: int = 0


@dataclass(frozen=True)
class BusStatistics:
    """Published count, and per subscriber: delivered and dropped."""

    published: int
    subscribers: dict[str, tuple[int, int]] = field(default_factory=dict)


class EventBus:
    """Persist-then-fan-out event bus over the storage's event log."""

    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock
        self._subscribers: list[_Subscriber] = []
        self._published = 0
        self._last_seq = 0

    async def publish(self, type: str, *, user_id: str | None = None,
                      data: Mapping[str, Any] | None = None) -> Event:
        """Persist an event, then offer it to every subscriber without waiting for any."""
        event = await self._storage.append_event(type=type, user_id=user_id, data=data or {},
                                                 now=self._clock.now())
        self._published += 1
        self._last_seq = max(self._last_seq, event.seq)
        for sub in list(self._subscribers):
            if sub.types is not None and event.type not in sub.types:
                continue
            try:
                sub.send.send_nowait(event)
                sub.delivered += 1
            except trio.WouldBlock:
                sub.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(sub)
        return event

    def subscribe(self, name: str, *, types: frozenset[str] | None = None,
                  buffer: int = 256) -> trio.MemoryReceiveChannel[Event]:
        """A bounded channel of future events. Close the receiver to unsubscribe."""
        send, receive = trio.open_memory_channel[Event](buffer)
        self._subscribers.append(_Subscriber(name=name, send=send, types=types))
        return receive

    @property
    def last_seq(self) -> int:
        """The seq of the newest event this bus published (0 before the first): where a live
        reader that starts now would begin."""
        return self._last_seq

    def statistics(self) -> BusStatistics:
        """Counts for metrics and tests."""
        return BusStatistics(
            published=self._published,
            subscribers={s.name: (s.delivered, s.dropped) for s in self._subscribers})

    async def run_observer(self, observer: EventObserver, *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Feed one observer until cancelled. An observer's exception is logged and the event
        skipped: one faulty observer must not stop the others or the producer."""
        receive = self.subscribe(observer.name, types=observer.types, buffer=observer.buffer)
        task_status.started()
        async with receive:
            async for event in receive:
                try:
                    await observer.handle(event)
                except Exception:
                    log.exception("event observer %r failed on event %s (%s)", observer.name,
                                  event.seq, event.type)
