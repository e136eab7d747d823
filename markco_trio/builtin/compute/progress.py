"""Fan-out of progress events to whoever follows a user's start (the "starting..." page, the
API's event stream). Bounded per subscriber: a slow follower misses events (counted), it never
slows an operation down."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

from .status import Progress

BUFFER = 64


@dataclass
class _Follower:
    send: trio.MemorySendChannel[Progress]
    dropped: int = 0


class ProgressHub:
    """Per-user subscribers of `Progress` events."""

    def __init__(self) -> None:
        self._followers: dict[str, list[_Follower]] = {}
        self.dropped = 0

    @contextmanager
    def subscribe(self, user_id: str) -> Iterator[trio.MemoryReceiveChannel[Progress]]:
        """Receive `user_id`'s progress events while the block runs."""
        send, receive = trio.open_memory_channel[Progress](BUFFER)
        follower = _Follower(send)
        self._followers.setdefault(user_id, []).append(follower)
        try:
            with receive:
                yield receive
        finally:
            followers = self._followers.get(user_id, [])
            if follower in followers:
                followers.remove(follower)
            if not followers:
                self._followers.pop(user_id, None)
            send.close()

    def publish(self, event: Progress) -> None:
        """Offer `event` to every follower of its user, without waiting."""
        for follower in self._followers.get(event.user_id, []):
            try:
                follower.send.send_nowait(event)
            except trio.WouldBlock:
                follower.dropped += 1
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def followers(self, user_id: str) -> int:
        """How many follow `user_id` now."""
        return len(self._followers.get(user_id, []))
