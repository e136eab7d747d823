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
    """A set of named conditions; the daemon is ready when every one of them holds. A condition
    that fails may say why (`mark(name, False, reason="disk full")`): the report then names it
    as `"storage: disk full"`, so `/readyz` tells an operator what to fix."""

    def __init__(self) -> None:
        self._conditions: dict[str, bool] = {}
        self._reasons: dict[str, str] = {}
        self._draining = False

    def require(self, name: str) -> None:
        """Declare a condition that must hold before the daemon is ready."""
        self._conditions.setdefault(name, False)

    def mark(self, name: str, ok: bool = True, *, reason: str | None = None) -> None:
        """Set a condition (declaring it if needed); `reason`: why it does not hold."""
        self._conditions[name] = ok
        if ok or not reason:
            self._reasons.pop(name, None)
        else:
            self._reasons[name] = reason

    def start_draining(self) -> None:
        """Shutdown has begun: report not ready so load balancers stop sending traffic."""
        self._draining = True

    def snapshot(self) -> ReadinessReport:
        """The current report; cheap and synchronous."""
        missing = tuple(sorted(
            f"{name}: {self._reasons[name]}" if name in self._reasons else name
            for name, ok in self._conditions.items() if not ok))
        if self._draining:
            missing = ("shutdown",) + missing
        return ReadinessReport(ready=not missing, waiting_for=missing)
