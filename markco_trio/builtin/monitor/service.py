"""`Monitor`: the supervised service that samples every running runtime (DESIGN §1, §4).

Every `interval` seconds (a fixed rate; a poll that overruns is followed at once by the next,
never overlapped) it asks compute which runtimes run, samples each through the backend
(`ContainerBackend.stats`: cgroup files or a one-shot engine call, never a stream), at most
`concurrency` at once and each within `sample_timeout`, then judges each runtime:

- memory: working set against the runtime's REAL limit (the backend's, not a registered one),
  through `PressureTracker` (thresholds, hysteresis, cooldown) → `pre-provision`, `migrate`,
  `urgent-migrate`, `critical`;
- idleness by intent (`IdleTracker`, CPU from deltas) → `idle-sleep`; a runtime it put to sleep
  found running again → `idle-wake`;
- hints from the code executed since the last poll (`hints.Analyser`) → `gpu-hint`,
  `big-ram-hint`.

Events go on the daemon's bus (persisted, then fanned out) with the original names, and the
policy (compute's `ElasticityPolicy`) decides what to do — in tasks of the monitor's own, so a
slow decision or a slow event log never delays a poll.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from ...errors import MarkcoError
from ...roles import ContainerStats
from ..compute.elasticity import MonitoredRuntime
from .hints import Analyser
from .idleness import Activity, IdleTracker
from .options import MonitorOptions
from .pressure import CpuMeter, MemoryReading, PressureTracker

# Parsing users' code must not hold the daemon's loop: it runs in a worker thread. (Tests on
# trio's MockClock replace this with an inline call: while a thread runs, an autojumping clock
# sees every task waiting and races ahead, which would make cooldowns expire by themselves.)
analyse_off_loop = trio.to_thread.run_sync

log = logging.getLogger("markco.monitor")

# Code parsed for hints in one poll, at most (in a worker thread, but CPU all the same): cells
# past it are dropped, counted in `statistics().hints_skipped`.
HINT_BUDGET = 256 * 1024


def file_size(root: Path, path: str) -> int | None:
    """The size of the regular file `path` names relative to the user's directory `root`
    (where their runtime runs), None when it is not one: absolute paths and paths leading out
    of `root` are never looked at (the daemon must not tell a user about files not theirs)."""
    if not path or os.path.isabs(path) or "\0" in path:
        return None
    try:
        base = root.resolve()
        full = (base / path).resolve()
        if not full.is_relative_to(base):
            return None
        st = full.stat()
    except (OSError, ValueError, RuntimeError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class Compute(Protocol):
    """What the monitor reads of compute (`ComputeService` is one)."""

    def monitored_nowait(self) -> list[MonitoredRuntime]: ...

    def take_executed_nowait(self, user_id: str) -> list[str]: ...


class Sampler(Protocol):
    """What the monitor asks of the backend (`ContainerBackend.stats`)."""

    async def stats(self, handle: str) -> ContainerStats: ...


class Policy(Protocol):
    """What the monitor hands its events to (compute's `ElasticityPolicy` is one)."""

    async def on_pressure(self, user_id: str, trigger: str, *, working_set: int,
                          limit: int) -> None: ...

    async def on_idle(self, user_id: str, *, idle_for: float, last: str) -> bool:
        """Act on idleness; True when the runtime was put to sleep."""
        ...

    async def on_hint(self, user_id: str, hint: str, reasons: tuple[str, ...]) -> None: ...

    def relieved(self, user_id: str) -> None: ...


Publish = Callable[[str, str | None, dict[str, Any]], Awaitable[None]]


@dataclass
class _Watched:
    """What the monitor keeps of one user's runtime between polls."""

    handle: str
    pressure: PressureTracker
    cpu: CpuMeter
    idle: IdleTracker
    analyser: Analyser
    last_event: dict[str, float] = field(default_factory=dict)
    reading: MemoryReading | None = None
    cpu_cores: float | None = None


@dataclass(frozen=True)
class MonitorStatistics:
    """Polls done, the last poll's duration (s) and runtimes, samples that failed or timed out,
    events raised by type, decisions handed to the policy."""

    polls: int
    last_poll_seconds: float
    last_poll_runtimes: int
    sample_errors: int
    sample_timeouts: int
    events: Mapping[str, int]
    overruns: int
    hints_skipped: int = 0


class Monitor:
    """See the module doc."""

    def __init__(self, options: MonitorOptions, *, compute: Compute,
                 backend: Callable[[], Sampler | None], policy: Policy | None,
                 publish: Publish, now: Callable[[], float],
                 metrics: Any = None, user_dir: Callable[[str], Path] | None = None) -> None:
        self.options = options
        self._compute = compute
        self._backend = backend
        self._policy = policy
        self._publish = publish
        self._now = now
        self._user_dir = user_dir
        self._limiter = trio.CapacityLimiter(options.concurrency)
        self._watched: dict[str, _Watched] = {}
        # Users the policy put to sleep for idleness, then those seen gone since: found
        # running again, they raise `idle-wake`.
        self._slept: set[str] = set()
        self._asleep: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._polls = 0
        self._last_poll = 0.0
        self._last_runtimes = 0
        self._errors = 0
        self._timeouts = 0
        self._overruns = 0
        self._events: dict[str, int] = {}
        self._hints_skipped = 0
        self._poll_metric = self._event_metric = self._error_metric = None
        if metrics is not None:
            from ...metrics import FAST_BUCKETS
            self._poll_metric = metrics.histogram(
                "markco_monitor_poll_seconds",
                "One monitor poll: sampling and judging every running runtime.",
                buckets=FAST_BUCKETS)
            self._event_metric = metrics.counter_family(
                "markco_monitor_events_total", "Monitor events raised, by type.", ("type",))
            self._error_metric = metrics.counter(
                "markco_monitor_sample_failures_total",
                "Runtime samples that failed or timed out.")

    def statistics(self) -> MonitorStatistics:
        """The counters (cheap, synchronous)."""
        return MonitorStatistics(polls=self._polls, last_poll_seconds=self._last_poll,
                                 last_poll_runtimes=self._last_runtimes,
                                 sample_errors=self._errors, sample_timeouts=self._timeouts,
                                 events=dict(self._events), overruns=self._overruns,
                                 hints_skipped=self._hints_skipped)

    def reading_nowait(self, user_id: str) -> tuple[MemoryReading | None, float | None]:
        """The last memory reading and CPU (cores) of the user's runtime."""
        watched = self._watched.get(user_id)
        return (watched.reading, watched.cpu_cores) if watched else (None, None)

    def watched_nowait(self) -> list[str]:
        """Users whose runtime the monitor watches now."""
        return sorted(self._watched)

    def view_nowait(self, user_id: str) -> dict[str, Any] | None:
        """What the monitor knows of the user's runtime now (None: not watched), for the API:
        memory (working set, real limit, %), CPU (cores), seconds since the last intent."""
        watched = self._watched.get(user_id)
        if watched is None:
            return None
        reading = watched.reading
        return {"user_id": user_id,
                "memory_used": reading.working_set if reading else None,
                "memory_limit": reading.limit if reading else None,
                "memory_percent": round(reading.percent, 2) if reading else None,
                "cpu_cores": round(watched.cpu_cores, 4) if watched.cpu_cores is not None
                else None,
                "idle_seconds": round(watched.idle.idle_for(self._now()), 1),
                "last_activity": watched.idle.busy_kind}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Poll every `interval` seconds until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            if not self.options.enabled:
                await trio.sleep_forever()
            next_at = trio.current_time()
            while True:
                await self.poll()
                next_at += self.options.interval
                now = trio.current_time()
                if next_at < now:  # overran: start again at once, never overlap
                    self._overruns += 1
                    next_at = now
                await trio.sleep_until(next_at)

    async def poll(self) -> None:
        """One poll: sample every running runtime, judge each."""
        started = time.perf_counter()
        backend = self._backend()
        runtimes = self._compute.monitored_nowait() if backend is not None else []
        running = {r.user_id for r in runtimes}
        for user_id in list(self._watched):
            if user_id not in running:
                del self._watched[user_id]
        gone = self._slept - running
        self._asleep |= gone
        self._slept -= gone
        samples: dict[str, ContainerStats] = {}
        if backend is not None and runtimes:
            async with trio.open_nursery() as nursery:
                for runtime in runtimes:
                    nursery.start_soon(self._sample, backend, runtime, samples)
        now = self._now()
        for runtime in runtimes:
            try:
                self._judge(runtime, samples.get(runtime.user_id), now)
            except Exception:  # one runtime's trouble never stops the others' monitoring
                log.exception("monitor: judging the runtime of %s failed", runtime.user_id)
        if self.options.hints and runtimes:
            await self._hints(runtimes, now)
        self._polls += 1
        self._last_runtimes = len(runtimes)
        self._last_poll = time.perf_counter() - started
        if self._poll_metric is not None:
            self._poll_metric.observe(self._last_poll)

    async def _sample(self, backend: Sampler, runtime: MonitoredRuntime,
                      into: dict[str, ContainerStats]) -> None:
        async with self._limiter:
            with trio.move_on_after(self.options.sample_timeout) as scope:
                try:
                    into[runtime.user_id] = await backend.stats(runtime.handle)
                except (MarkcoError, OSError) as exc:
                    self._errors += 1
                    if self._error_metric is not None:
                        self._error_metric.inc()
                    log.debug("monitor: no sample of %s: %s", runtime.handle, exc)
            if scope.cancelled_caught:
                self._timeouts += 1
                if self._error_metric is not None:
                    self._error_metric.inc()

    def _watch(self, runtime: MonitoredRuntime, now: float) -> _Watched:
        watched = self._watched.get(runtime.user_id)
        if watched is None or watched.handle != runtime.handle:
            options = self.options
            watched = _Watched(
                handle=runtime.handle,
                pressure=PressureTracker(options.levels, margin=options.margin,
                                         cooldown=options.cooldown_for),
                cpu=CpuMeter(), idle=IdleTracker(now),
                analyser=Analyser(file_size=partial(file_size, self._user_dir(runtime.user_id))
                                  if self._user_dir is not None else None),
                last_event=watched.last_event if watched else {})
            self._watched[runtime.user_id] = watched
        return watched

    def _judge(self, runtime: MonitoredRuntime, sample: ContainerStats | None,
               now: float) -> None:
        user_id, options = runtime.user_id, self.options
        watched = self._watch(runtime, now)
        if user_id in self._asleep:
            self._asleep.discard(user_id)
            self._raise(user_id, "idle-wake", {"handle": runtime.handle}, now)
        if sample is not None:
            limit = sample.memory_limit or int(runtime.limits.get("memory_bytes") or 0)
            reading = MemoryReading(sample.memory_working_set, limit)
            watched.reading = reading
            watched.cpu_cores = watched.cpu.observe(sample.cpu_usage_seconds,
                                                    sample.sampled_at)
            kind = watched.pressure.observe(reading.percent, now)
            if kind is not None:
                self._raise(user_id, kind, {
                    "handle": runtime.handle, "memory_used": reading.working_set,
                    "memory_limit": reading.limit,
                    "memory_percent": round(reading.percent, 2)}, now,
                    decide=self._pressure_decision(user_id, kind, reading))
            elif reading.percent < options.pre_provision - options.margin and \
                    self._policy is not None:
                self._policy.relieved(user_id)
            # Idleness only with a fresh sample: without CPU a busy runtime could look idle.
            activity = Activity(last=runtime.activity,
                                executions_in_flight=runtime.executions_in_flight,
                                cpu_cores=watched.cpu_cores)
            timeout = options.idle_timeout_for(runtime.plan)
            if watched.idle.observe(activity, now, timeout=timeout,
                                    cpu_floor=options.cpu_floor) and not runtime.busy:
                idle_for, last = watched.idle.idle_for(now), watched.idle.busy_kind
                decide = None
                if options.idle_sleep and self._policy is not None:
                    policy = self._policy

                    tracker = watched.idle

                    async def decide() -> None:
                        if await policy.on_idle(user_id, idle_for=idle_for, last=last):
                            self._slept.add(user_id)
                        else:  # refused or failed: try again after another idle period
                            tracker.rearm(self._now())
                self._raise(user_id, "idle-sleep", {
                    "handle": runtime.handle, "idle_seconds": round(idle_for, 1),
                    "idle_timeout": timeout, "last_activity": last}, now, decide=decide,
                    cooldown=False)

    def _pressure_decision(self, user_id: str, kind: str, reading: MemoryReading
                           ) -> Callable[[], Awaitable[None]] | None:
        policy = self._policy
        if policy is None or kind == "pre-provision":
            return None

        async def decide() -> None:
            await policy.on_pressure(user_id, kind, working_set=reading.working_set,
                                     limit=reading.limit)
        return decide

    async def _hints(self, runtimes: list[MonitoredRuntime], now: float) -> None:
        """Analyse the code executed since the last poll (within `HINT_BUDGET`, in a worker
        thread: parsing must not hold the daemon's loop), then raise the hints."""
        work: list[tuple[MonitoredRuntime, Analyser, str]] = []
        budget = HINT_BUDGET
        for runtime in runtimes:
            watched = self._watched.get(runtime.user_id)
            for code in self._compute.take_executed_nowait(runtime.user_id):
                if watched is None or len(code) > budget:
                    self._hints_skipped += 1
                    continue
                budget -= len(code)
                work.append((runtime, watched.analyser, code))
        if not work:
            return
        results = await analyse_off_loop(
            lambda: [(runtime, analyser.analyse(code)) for runtime, analyser, code in work])
        for runtime, hints in results:
            for kind, reasons in (("gpu-hint", hints.gpu), ("big-ram-hint", hints.big_ram)):
                if not reasons:
                    continue
                policy = self._policy
                decide = None
                if policy is not None:
                    async def decide(kind: str = kind, reasons: tuple[str, ...] = reasons,
                                     policy: Policy = policy,
                                     user_id: str = runtime.user_id) -> None:
                        await policy.on_hint(user_id, kind, reasons)
                self._raise(runtime.user_id, kind, {"handle": runtime.handle,
                                                    "reasons": list(reasons)}, now,
                            decide=decide)

    def _raise(self, user_id: str, kind: str, data: dict[str, Any], now: float, *,
               decide: Callable[[], Awaitable[None]] | None = None,
               cooldown: bool = True) -> None:
        """Publish `kind` (per-type cooldown per user for idle and hint events; pressure
        events have theirs in the tracker), then let the policy decide — in a task of its
        own."""
        watched = self._watched.get(user_id)
        if cooldown and kind not in ("pre-provision", "migrate", "urgent-migrate", "critical") \
                and watched is not None:
            last = watched.last_event.get(kind, -math.inf)
            if now - last < self.options.cooldown_for(kind):
                return
            watched.last_event[kind] = now
        self._events[kind] = self._events.get(kind, 0) + 1
        if self._event_metric is not None:
            self._event_metric.labels(kind).inc()
        log.info("monitor: %s for %s (%s)", kind, user_id, data)
        if self._nursery is None:
            return
        self._nursery.start_soon(self._publish_then_decide, user_id, kind, data, decide)

    async def _publish_then_decide(self, user_id: str, kind: str, data: dict[str, Any],
                                   decide: Callable[[], Awaitable[None]] | None) -> None:
        try:
            await self._publish(kind, user_id, data)
            if decide is not None:
                await decide()
        except Exception:
            log.exception("monitor: acting on %s for %s failed", kind, user_id)
