"""What went wrong at the front door, counted by kind and logged without flooding.

Every fault is counted (`statistics()` shows the counts). A kind is logged at most once per
interval: unexpected exceptions with their traceback, expected trouble (an upstream that does
not answer) as one line; how many were left out is said at the next flush. Client mistakes and
disconnects are only counted: they are the internet's weather, not the daemon's.
"""

from __future__ import annotations

import logging

__all__ = ["Faults"]

# Kinds worth a log line, and at which level; every other kind is only counted.
_LOGGED = {
    "internal": logging.ERROR,
    "upstream_unavailable": logging.WARNING,
    "upstream_error": logging.WARNING,
    "gate_error": logging.WARNING,
    # A user's editor is the user's own code: its trouble is worth a line, not an alarm.
    "editor_unavailable": logging.INFO,
    "editor_error": logging.INFO,
}


class Faults:
    """Counts faults by kind; logs each logged kind at most once per `interval` seconds."""

    def __init__(self, logger: logging.Logger, *, interval: float = 60.0) -> None:
        self.counts: dict[str, int] = {}
        self._logger = logger
        self._interval = interval
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def record(self, kind: str, now: float, detail: BaseException | str | None = None) -> None:
        """Count one fault of `kind`; log it if its kind is logged and was not logged lately."""
        counts = self.counts
        counts[kind] = counts.get(kind, 0) + 1
        level = _LOGGED.get(kind)
        if level is None:
            return
        last = self._last_logged.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._last_logged[kind] = now
        if isinstance(detail, BaseException) and kind == "internal":
            self._logger.log(
                level,
                "proxy: unexpected error on a connection (%s): %s",
                type(detail).__name__,
                detail,
                exc_info=detail,
            )
        else:
            self._logger.log(level, "proxy: %s: %s", kind.replace("_", " "), detail)

    def flush(self) -> None:
        """Say how many logged-kind faults were counted but not logged since the last flush."""
        if not self._suppressed:
            return
        summary = ", ".join(f"{kind} x{n}" for kind, n in sorted(self._suppressed.items()))
        self._suppressed.clear()
        self._logger.warning("proxy: further faults not logged individually: %s", summary)
