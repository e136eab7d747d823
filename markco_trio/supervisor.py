"""Supervision of the daemon's services (DESIGN §1).

A supervised service that raises is logged with its traceback and restarted after a backoff that
doubles with each crash in the window; one that crashes `max_crashes` times within
`window_seconds` stops the daemon (`TooManyCrashes`, a non-zero exit), because a loop of crashes
helps nobody. Times come from trio's clock, so tests drive it with `MockClock`.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import trio

from .config import SupervisionOptions
from .readiness import Readiness
from .roles import ServiceSpec

log = logging.getLogger("markco.supervisor")


class TooManyCrashes(Exception):
    """A service crashed too often within the window; the daemon must stop."""

    def __init__(self, service: str, crashes: int, window: float) -> None:
        super().__init__(f"service {service!r} crashed {crashes} times within {window:g} s; "
                         f"giving up (see the tracebacks above)")
        self.service = service


class _ServiceStatus:
    """The `task_status` a service gets: `started()` marks it up in the readiness report."""

    def __init__(self, name: str, readiness: Readiness, critical: bool,
                 first: trio.TaskStatus[None] | None) -> None:
        self._name = name
        self._readiness = readiness
        self._critical = critical
        self._first = first

    def started(self, value: Any = None) -> None:
        if self._critical:
            self._readiness.mark(f"service:{self._name}")
        if self._first is not None:
            first, self._first = self._first, None
            first.started()


class Supervisor:
    """Runs services with restart-on-crash and the crash-window limit."""

    def __init__(self, readiness: Readiness, options: SupervisionOptions) -> None:
        self._readiness = readiness
        self._options = options
        self.restarts: dict[str, int] = {}

    async def supervise(self, spec: ServiceSpec, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run `spec` until cancelled, restarting it when it crashes or returns.

        `task_status.started()` fires the first time the service reports itself started, so
        `nursery.start(supervisor.supervise, spec)` waits for it; a service that crashes before
        it ever starts is retried like any other crash.
        """
        name = spec.name
        opts = self._options
        if spec.critical:
            self._readiness.require(f"service:{name}")
        crashes: deque[float] = deque()
        first: trio.TaskStatus[None] | None = task_status
        self.restarts.setdefault(name, 0)
        while True:
            status = _ServiceStatus(name, self._readiness, spec.critical, first)
            try:
                await spec.run(task_status=status)
            except Exception as exc:
                log.error("service %r crashed: %s", name, exc, exc_info=exc)
                reason = "crashed"
            else:
                log.error("service %r returned while the daemon was running", name)
                reason = "exited"
            first = status._first  # still pending if it never started
            if spec.critical:
                self._readiness.mark(f"service:{name}", False)
            now = trio.current_time()
            crashes.append(now)
            while crashes and now - crashes[0] > opts.window_seconds:
                crashes.popleft()
            if len(crashes) >= opts.max_crashes:
                raise TooManyCrashes(name, len(crashes), opts.window_seconds)
            delay = min(opts.backoff_initial * 2 ** (len(crashes) - 1), opts.backoff_max)
            self.restarts[name] += 1
            log.warning("restarting service %r (%s) in %.2f s", name, reason, delay)
            await trio.sleep(delay)
