"""Memory pressure of one runtime: which event a sample raises, with hysteresis and cooldown.

Pure (no trio, no I/O): fed a percentage and a time, it answers the event to raise or None.

- Only the HIGHEST threshold crossed is considered (the original's rule): 96 % raises
  `critical`, not also `urgent-migrate`, `migrate` and `pre-provision`.
- Hysteresis: an event that fired is disarmed, with every lower one; it re-arms only once usage
  falls `margin` points below its threshold. Usage that stays at 80 % raises `migrate` once,
  not on every poll (the original re-fired every 60 s and re-migrated each time).
- Cooldown per type: an armed event within its cooldown of its last firing waits (it stays
  armed and fires once the cooldown is over, if usage is still above).
- A rise to a higher level fires at once: each type has its own arming and cooldown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryReading:
    """One runtime's memory now: working set against its real limit."""

    working_set: int
    limit: int

    @property
    def percent(self) -> float:
        """Working set as a percentage of the limit (0 when the limit is unknown)."""
        return 100.0 * self.working_set / self.limit if self.limit > 0 else 0.0


class PressureTracker:
    """The threshold state of one runtime (see the module doc)."""

    __slots__ = ("_armed", "_cooldown", "_last", "_levels", "_margin")

    def __init__(self, levels: Sequence[tuple[str, float]], *, margin: float,
                 cooldown: Callable[[str], float]) -> None:
        self._levels = sorted(levels, key=lambda level: level[1], reverse=True)
        self._margin = margin
        self._cooldown = cooldown
        self._armed = {kind: True for kind, _ in self._levels}
        self._last = {kind: -math.inf for kind, _ in self._levels}

    def observe(self, percent: float, now: float) -> str | None:
        """The event this sample raises (None: none)."""
        for kind, threshold in self._levels:
            if percent < threshold - self._margin:
                self._armed[kind] = True
        for index, (kind, threshold) in enumerate(self._levels):
            if percent < threshold:
                continue
            if not self._armed[kind] or now - self._last[kind] < self._cooldown(kind):
                return None
            for lower, _ in self._levels[index:]:
                self._armed[lower] = False
            self._last[kind] = now
            return kind
        return None

    def armed(self, kind: str) -> bool:
        """Whether `kind` would fire on crossing (for tests and the status page)."""
        return self._armed[kind]


class CpuMeter:
    """CPU of one runtime from the deltas of its cumulative CPU time between samples (the
    original read podman's average since the container started: useless for idleness)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def observe(self, cpu_seconds: float, now: float) -> float | None:
        """Cores used since the previous sample (None on the first one, or when the counter
        went back: the runtime was restarted or restored)."""
        last, self._last = self._last, (cpu_seconds, now)
        if last is None or now <= last[1] or cpu_seconds < last[0]:
            return None
        return (cpu_seconds - last[0]) / (now - last[1])
