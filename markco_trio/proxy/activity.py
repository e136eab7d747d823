"""The activity record: what each user's editor saw through the front door, and when.

DESIGN §3.3 decides idleness by intent. The front door sees three kinds of traffic per editor
owner and keeps the wall-clock time of the last of each: a `navigation` (a person opened the
editor), a `request` that is not GET/HEAD/OPTIONS (a save, an execution...), and `websocket`
traffic (any bytes through an editor's WebSocket). The monitor reads them all here
(`last_nowait`); the intent kinds are also reported to compute as they happen
(`compute.record_activity(user_id, kind)`). Raw WebSocket traffic is recorded but not reported:
a forgotten tab's keep-alive pings would keep its user awake forever.

Everything is a dict store (no await, no lock): it runs inside every forwarded request and for
every WebSocket read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

__all__ = ["INTENT_KINDS", "ActivityRecord", "UserActivity"]

NAVIGATION: Final = "navigation"
REQUEST: Final = "request"
WEBSOCKET: Final = "websocket"
INTENT_KINDS: Final = frozenset([NAVIGATION, REQUEST])


@dataclass(frozen=True, slots=True)
class UserActivity:
    """Wall-clock times (seconds since the epoch) of a user's last activity of each kind."""

    navigation: float | None
    request: float | None
    websocket: float | None


class ActivityRecord:
    """Per editor owner, the last time of each kind of traffic; intent kinds are reported to
    `report(user_id, kind)` (compute's `record_activity`) when given."""

    __slots__ = ("_navigation", "_request", "_websocket", "_report", "_clock", "report_errors")

    def __init__(
        self,
        report: Callable[[str, str], None] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._navigation: dict[str, float] = {}
        self._request: dict[str, float] = {}
        self._websocket: dict[str, float] = {}
        self._report = report
        self._clock = clock
        self.report_errors = 0

    def navigation(self, user_id: str) -> None:
        """A navigation to `user_id`'s editor."""
        self._navigation[user_id] = self._clock()
        self._tell(user_id, NAVIGATION)

    def request(self, user_id: str) -> None:
        """A state-changing (non-GET) request to `user_id`'s editor."""
        self._request[user_id] = self._clock()
        self._tell(user_id, REQUEST)

    def websocket(self, user_id: str) -> None:
        """Bytes through one of `user_id`'s editor WebSockets (recorded, not reported)."""
        self._websocket[user_id] = self._clock()

    def last_nowait(self, user_id: str) -> UserActivity:
        """The user's last activity of each kind (None: not seen since the daemon started)."""
        return UserActivity(
            self._navigation.get(user_id),
            self._request.get(user_id),
            self._websocket.get(user_id),
        )

    def _tell(self, user_id: str, kind: str) -> None:
        if self._report is None:
            return
        try:
            self._report(user_id, kind)
        except Exception:  # the record must never fail the request it notes
            self.report_errors += 1
