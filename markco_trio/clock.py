"""Wall-clock time for records (expiries, timestamps), replaceable in tests.

trio's clock is monotonic and per-run; records need POSIX time. Code that stores or compares
times asks `ctx.clock.now()`, so a test can move time with `ManualClock.advance`.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Something that tells POSIX time in seconds."""

    def now(self) -> float: ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        """Current POSIX time."""
        return time.time()


class ManualClock:
    """A wall clock tests move by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        """The time set by the test."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self._now += seconds
