"""Idleness by intent (DESIGN §3.3), for one runtime. Pure: fed observations and a time.

A runtime is idle when, for `timeout` seconds, there was none of: a navigation to the editor,
a non-GET request through `/u/`, user input the editor reported, an execution at the runtime
front (started, or still in flight), and runtime CPU above the floor. Raw WebSocket traffic is
NOT among them: a forgotten tab's keep-alive pings must not keep its user awake forever. A long
execution with the browser closed is not idle: it is in flight at the front until it ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The kinds that reset idleness (besides executions in flight and CPU).
INTENT_KINDS = ("navigation", "request", "input", "execution")


@dataclass(frozen=True)
class Activity:
    """What the monitor saw of a user at one poll: the last time of each intent kind (wall
    clock, None: not seen), executions in flight at the front, CPU in cores (None: unknown)."""

    last: Mapping[str, float | None]
    executions_in_flight: int = 0
    cpu_cores: float | None = None


class IdleTracker:
    """Idleness of one runtime: `observe` answers True once per idle period."""

    __slots__ = ("busy_at", "busy_kind", "idle")

    def __init__(self, since: float) -> None:
        # A runtime the monitor just found is not idle yet, whatever its history.
        self.busy_at = since
        self.busy_kind = "found"
        self.idle = False

    def observe(self, activity: Activity, now: float, *, timeout: float,
                cpu_floor: float) -> bool:
        """Note `activity`; True when the runtime has just become idle (then not again until
        it was busy once more)."""
        for kind in INTENT_KINDS:
            at = activity.last.get(kind)
            if at is not None and at > self.busy_at:
                self.busy_at, self.busy_kind = at, kind
        if activity.executions_in_flight > 0:
            self.busy_at, self.busy_kind = now, "execution in flight"
        if activity.cpu_cores is not None and activity.cpu_cores > cpu_floor:
            self.busy_at, self.busy_kind = now, "cpu"
        if now - self.busy_at < timeout:
            self.idle = False
            return False
        if self.idle:
            return False
        self.idle = True
        return True

    def rearm(self, at: float) -> None:
        """Count idleness afresh from `at` (an idle-sleep that did not happen is tried again
        after another full timeout, not never)."""
        self.busy_at, self.busy_kind, self.idle = at, "retry", False

    def idle_for(self, now: float) -> float:
        """Seconds since the last sign of intent."""
        return max(0.0, now - self.busy_at)
