"""What the daemon reports at `/metrics` (DESIGN §7): the front door's counters, storage
latency, users by state, events by type and the durations the lifecycle reports in its events.

Nothing here runs on the proxy's request path: the front door counts in plain attributes and
`collect()` reads them at scrape time. Durations come from the events the lifecycle already
publishes (`took_ms`, `duration_ms`), so compute needs no metrics code of its own; the users'
states are read from storage once per scrape (`refresh()`, bounded by a timeout).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import trio

from .metrics import FAST_BUCKETS, Histogram, Metric, Registry, histogram_samples
from .records import Event, RuntimeState, WorkloadRole
from .roles import EventObserver

if TYPE_CHECKING:
    from .context import PluginContext
    from .proxy.server import FrontDoor

__all__ = ["DaemonMetrics"]

log = logging.getLogger("markco.metrics")

REFRESH_SECONDS = 2.0  # a scrape waits at most this long for storage

# Event type -> (histogram, label value, data key holding milliseconds).
_DURATIONS: dict[str, tuple[str, str, str]] = {
    "runtime.started": ("markco_start_seconds", "runtime", "took_ms"),
    "editor.started": ("markco_start_seconds", "editor", "took_ms"),
    "runtime.sleeping": ("markco_checkpoint_seconds", "sleep", "took_ms"),
    "snapshot.created": ("markco_checkpoint_seconds", "snapshot", "duration_ms"),
    "runtime.woken": ("markco_restore_seconds", "wake", "took_ms"),
    "snapshot.restored": ("markco_restore_seconds", "snapshot", "took_ms"),
    "runtime.moved": ("markco_move_seconds", "move", "took_ms"),
}
_HISTOGRAMS = {
    "markco_start_seconds": ("Time to start a workload (from its events), by role.", "role"),
    "markco_checkpoint_seconds": ("Time to checkpoint a runtime: a sleep or a snapshot.",
                                  "kind"),
    "markco_restore_seconds": ("Time to restore a runtime: a wake or a snapshot restore.",
                               "kind"),
    "markco_move_seconds": ("Time to move a runtime to another host.", "kind"),
}
_USER_STATES = ("active", "sleeping", "failed", "stopped")
_ACTIVE = {RuntimeState.STARTING, RuntimeState.RUNNING, RuntimeState.WAKING,
           RuntimeState.MOVING}


class DaemonMetrics:
    """The daemon's collectors and its event observer, on `ctx.metrics`."""

    def __init__(self, ctx: PluginContext, front_door: Callable[[], FrontDoor | None]) -> None:
        self.ctx = ctx
        self.registry: Registry = ctx.metrics
        self._front_door = front_door
        reg = self.registry
        self.events = reg.counter_family("markco_events_total",
                                         "Events recorded, by type.", ("type",))
        self.starts = reg.counter_family("markco_starts_total",
                                         "Workloads started, by role and operation "
                                         "(start, wake, restart, recover...).",
                                         ("role", "operation"))
        self.durations = {name: reg.histogram_family(name, help, (label,))
                          for name, (help, label) in _HISTOGRAMS.items()}
        self.scrape_seconds = reg.histogram("markco_scrape_refresh_seconds",
                                            "Time the storage reads of a scrape took.",
                                            FAST_BUCKETS)
        self._users: dict[str, int] | None = None
        self._runtimes: dict[tuple[str, str], int] = {}
        reg.add_collector(self.collect)

    def observer(self) -> EventObserver:
        """The event observer counting events and their durations (a non-critical service)."""
        return EventObserver(name="metrics", handle=self.observe_event, buffer=4096)

    async def observe_event(self, event: Event) -> None:
        """Count `event` by type; record the duration it reports, if any."""
        self.record_event(event.type, event.data)

    def record_event(self, type: str, data: dict[str, Any]) -> None:
        """Count one event of `type` with `data` (synchronous: for the observer and tests)."""
        self.events.labels(type).inc()
        if type in ("runtime.started", "editor.started"):
            self.starts.labels(type.split(".", 1)[0], str(data.get("operation", "start"))).inc()
        known = _DURATIONS.get(type)
        if known is None:
            return
        name, label, key = known
        millis = data.get(key)
        if isinstance(millis, int | float) and not isinstance(millis, bool) and millis >= 0:
            self.durations[name].labels(label).observe(millis / 1000)

    async def refresh(self) -> None:
        """Read the users' states from storage (before a scrape); keeps the last reading when
        storage does not answer within `REFRESH_SECONDS`."""
        storage = self.ctx.storage
        if storage is None:
            return
        with self.scrape_seconds.time(), trio.move_on_after(REFRESH_SECONDS):
            try:
                runtimes = await storage.list_runtimes(live_only=False)
            except Exception as exc:  # a broken database must not break the scrape
                log.warning("metrics: cannot read runtimes: %s", exc)
                return
            newest: dict[str, RuntimeState] = {}
            live: dict[tuple[str, str], int] = {}
            for record in runtimes:  # oldest first: the last one per user wins
                if record.role == WorkloadRole.RUNTIME:
                    newest[record.user_id] = record.state
                key = (record.role.value, record.state.value)
                if record.state not in (RuntimeState.STOPPED, RuntimeState.FAILED):
                    live[key] = live.get(key, 0) + 1
            users = dict.fromkeys(_USER_STATES, 0)
            for state in newest.values():
                users["active" if state in _ACTIVE else state.value] += 1
            self._users, self._runtimes = users, live

    def collect(self) -> Iterator[Metric]:
        """The metrics read at scrape time (the registry calls this)."""
        ctx = self.ctx
        if ctx.readiness is not None:
            yield Metric.gauge("markco_ready", "1 when /readyz says ready, else 0.",
                               int(ctx.readiness.snapshot().ready))
        if self._users is not None:
            users = Metric("markco_users", "gauge",
                           "Users by the state of their runtime: active (starting, running, "
                           "waking, moving), sleeping, failed, stopped.")
            for state, count in self._users.items():
                users.add(count, {"state": state})
            yield users
            runtimes = Metric("markco_runtimes", "gauge",
                              "Live workloads by role and state.")
            for (role, state), count in sorted(self._runtimes.items()):
                runtimes.add(count, {"role": role, "state": state})
            yield runtimes
        latency = getattr(ctx.storage, "latency", None)
        if latency is not None:
            yield _histogram_metric("markco_storage_seconds",
                                    "Storage calls (waiting for a connection included), by "
                                    "kind.", "kind", {"read": latency[0], "write": latency[1]})
        if ctx.events is not None:
            stats = ctx.events.statistics()
            dropped = Metric("markco_event_observer_dropped_total", "counter",
                             "Events an observer fell too far behind to receive.")
            for name, (_, lost) in sorted(stats.subscribers.items()):
                dropped.add(lost, {"observer": name})
            yield dropped
        front = self._front_door()
        if front is not None:
            yield from _front_door_metrics(front)


def _histogram_metric(name: str, help: str, label: str,
                      by_value: dict[str, Histogram]) -> Metric:
    metric = Metric(name, "histogram", help)
    for value, hist in by_value.items():
        metric.samples.extend(histogram_samples(hist, ((label, value),)))
    return metric


def _front_door_metrics(front: FrontDoor) -> Iterator[Metric]:
    stats = front.statistics()
    access = front.access_log
    yield Metric.counter("markco_proxy_requests_total",
                         "Requests the front door answered or forwarded.",
                         stats.requests_served)
    responses = Metric("markco_proxy_responses_total", "counter",
                       "Responses through the front door, by status class.")
    for index in range(1, 6):
        responses.add(access.by_class[index], {"code": f"{index}xx"})
    yield responses
    yield Metric.counter("markco_proxy_sent_bytes_total",
                         "Bytes sent to clients in HTTP responses (heads and bodies).",
                         access.bytes_sent)
    tunnel = Metric("markco_proxy_tunnel_bytes_total", "counter",
                    "Bytes moved through WebSocket tunnels, by direction.")
    tunnel.add(stats.tunnel_bytes[0], {"direction": "to_upstream"})
    tunnel.add(stats.tunnel_bytes[1], {"direction": "to_client"})
    yield tunnel
    yield Metric.gauge("markco_proxy_open_connections", "Client connections open now.",
                       stats.open_connections)
    yield Metric.gauge("markco_proxy_active_requests",
                       "Connections in the middle of a request now.", stats.active_requests)
    yield Metric.gauge("markco_proxy_open_tunnels", "WebSocket tunnels open now.",
                       stats.tunnels)
    errors = Metric("markco_proxy_errors_total", "counter",
                    "Front door faults by kind (bad_request, upstream_unavailable, ...).")
    for kind, count in sorted(stats.errors.items()):
        errors.add(count, {"kind": kind})
    yield errors
    yield Metric.counter("markco_proxy_access_lines_dropped_total",
                         "Access log lines dropped (more than the per-second batch holds).",
                         access.lines_dropped)
