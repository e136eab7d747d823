"""Fan-out of notifications (file changes, execution output) to every open channel."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

__all__ = ["Hub", "Message", "Subscription"]

Message = dict[str, Any]
"""A JSON-ready notification; its `type` says which kind (`files`, `exec`, ...)."""


class Subscription:
    """One subscriber's queue. Iterate `receive` for messages; the iteration ends when the
    subscription closes, and `dropped` then says whether it was because it fell behind."""

    def __init__(self, buffer: int, accepts: Callable[[Message], bool] | None) -> None:
        self._send, self.receive = trio.open_memory_channel[Message](buffer)
        self.accepts = accepts
        self.dropped = False

    def _offer(self, message: Message) -> bool:
        if self.accepts is not None and not self.accepts(message):
            return True
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self.dropped = True
            self._send.close()
            return False
        except trio.ClosedResourceError:
            return False
        return True

    def _close(self) -> None:
        self._send.close()


class Hub:
    """Publishes each message to all subscribers without ever waiting for one: a subscriber
    whose buffer is full is dropped (its channel closes), so one slow browser cannot stall
    the runtime's output or anyone else's."""

    def __init__(self, buffer: int = 1000) -> None:
        self._buffer = buffer
        self._subscribers: list[Subscription] = []
        self._subscribed = trio.Event()

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    async def wait_subscribed(self) -> None:
        """Return once at least one subscription is open."""
        while not self._subscribers:
            await self._subscribed.wait()

    @contextmanager
    def subscribe(
        self, accepts: Callable[[Message], bool] | None = None
    ) -> Iterator[Subscription]:
        """Receive every message published while the block runs (only those `accepts`
        returns true for, when given)."""
        sub = Subscription(self._buffer, accepts)
        self._subscribers.append(sub)
        self._subscribed.set()
        try:
            yield sub
        finally:
            sub._close()
            if sub in self._subscribers:
                self._subscribers.remove(sub)
            if not self._subscribers:
                self._subscribed = trio.Event()

    def publish(self, message: Message) -> None:
        """Queue `message` for every subscriber; never blocks."""
        for sub in list(self._subscribers):
            if not sub._offer(message):
                self._subscribers.remove(sub)
        if not self._subscribers:
            self._subscribed = trio.Event()
