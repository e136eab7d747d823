"""What `/readyz` reports: storage reachable, services up, start-up reconciliation done.

The daemon owns one `Readiness`; the supervisor marks services up and down, the daemon marks the
one-off conditions, and the proxy asks `snapshot()` without awaiting anything.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReadinessReport:
    """Ready or not, and what is still missing (for the body of `/readyz`)."""

    ready: bool
    waiting_for: tuple[str, ...]


class Readiness:
    """A set of named conditions; the daemon is ready when every one of them holds."""

    def __init__(self) -> None:
        self._conditions: dict[str, bool] = {}
        self._draining = False

    def require(self, name: str) -> None:
        """Declare a condition that must hold before the daemon is ready."""
        self._conditions.setdefault(name, False)

    def mark(self, name: str, ok: bool = True) -> None:
        """Set a condition (declaring it if needed)."""
        self._conditions[name] = ok

    def start_draining(self) -> None:
        """Shutdown has begun: report not ready so load balancers stop sending traffic."""
        self._draining = True

    def snapshot(self) -> ReadinessReport:
        """The current report; cheap and synchronous."""
        missing = tuple(sorted(name for name, ok in self._conditions.items() if not ok))
        if self._draining:
            missing = ("shutdown",) + missing
        return ReadinessReport(ready=not missing, waiting_for=missing)
