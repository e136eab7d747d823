"""Elasticity: what compute does about the monitor's events (DESIGN §4).

The monitor (`markco_trio.builtin.monitor`) samples runtimes and raises events; this policy
decides, one decision at a time per user, rate-limited, and publishes each decision and its
outcome (`elasticity.decision`, then `elasticity.outcome`):

- memory pressure (`migrate`, `urgent-migrate`) → raise the runtime's memory limit in place,
  when the backend changes limits live, the plan's ceiling (`max_memory_mib`) is not reached
  and the host keeps `host_reserve_mib` free (with several hosts: and its `memory_budget_mb`
  in the reservation ledger has room); else, with several hosts, MOVE it (`moves.run_move`,
  memory and all) to another host whose budget has room for the bigger limit and that carries
  the plan's labels, restored there with that limit; else tell the user (the editor's banner
  and the dashboard: "memory almost full");
- `critical` → the same at once, past the rate limit;
- `idle-sleep` → sleep (checkpoint, then stop) through the user's actor; a raised limit is
  kept by the sleep and restored by the wake (`restore_limits`);
- `gpu-hint` → move to a host labelled `gpu` (and the plan's labels) when one has room, else
  recorded.

A raised limit stays while the plan is the same (`kept_limits`, used by the actor's plan
check, a wake and a move); a plan change applies the new plan's limits.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ...errors import MarkcoError
from . import placement

if TYPE_CHECKING:
    from .options import PlanLimits
    from .service import ComputeService

log = logging.getLogger("markco.compute.elasticity")

MiB = 1 << 20
MEMORY_NOTICE = "memory-"  # prefix of the ids of the notices this policy shows
PRESSURE = frozenset({"migrate", "urgent-migrate", "critical"})


@dataclass(frozen=True)
class MonitoredRuntime:
    """A running runtime as the monitor sees it (see `ComputeService.monitored_nowait`)."""

    user_id: str
    handle: str
    plan: str | None
    limits: Mapping[str, Any]
    activity: Mapping[str, float] = field(default_factory=dict)
    executions_in_flight: int = 0
    busy: bool = False


@dataclass(frozen=True)
class PolicySettings:
    """How the policy acts (from `[monitor]`): `raise_factor` multiplies the limit on each
    raise (at least `raise_min_mib` more); `host_reserve_mib` stays free on the host;
    `decision_interval` seconds between two decisions for one user (critical ones excepted)."""

    raise_factor: float = 1.5
    raise_min_mib: int = 64
    host_reserve_mib: int = 512
    decision_interval: float = 30.0


def kept_limits(current: Mapping[str, Any], wanted: dict[str, Any],
                ceiling: int) -> dict[str, Any]:
    """The limits a plan check should leave: `wanted` (the plan's), except that memory
    elasticity raised under the same plan, within its ceiling, stays."""
    raised_from = current.get("raised_from")
    memory = current.get("memory_bytes")
    if raised_from is None or not isinstance(memory, int) or \
            current.get("plan") != wanted.get("plan") or \
            current.get("cpus") != wanted.get("cpus") or \
            raised_from != wanted.get("memory_bytes") or \
            not wanted["memory_bytes"] < memory <= ceiling:
        return wanted
    return {**wanted, "memory_bytes": memory, "raised_from": raised_from}


def with_memory(limits: PlanLimits, memory_bytes: int) -> PlanLimits:
    """`limits` with a memory limit of `memory_bytes` (whole MiB) when that is more, never
    over the plan's ceiling."""
    memory_bytes = min(memory_bytes, limits.max_memory_bytes)
    if memory_bytes <= limits.memory_bytes:
        return limits
    return dataclasses.replace(limits, memory_mib=memory_bytes // MiB,
                               max_memory_mib=limits.max_memory_bytes // MiB)


def restore_limits(current: Mapping[str, Any] | None, plan: str,
                   limits: PlanLimits) -> PlanLimits:
    """The limits a runtime is restored into (a wake, a move): its plan's, with memory raised
    by elasticity under that same plan kept — a CRIU image of a working set over the plan's
    limit is refused under it (the wake would fall back to a cold start, losing variables)."""
    if not current:
        return limits
    wanted = {"plan": plan, "memory_bytes": limits.memory_bytes, "cpus": limits.cpus}
    kept = kept_limits(current, wanted, limits.max_memory_bytes)
    return with_memory(limits, int(kept["memory_bytes"]))


def raised_limits(current: Mapping[str, Any], memory_bytes: int) -> dict[str, Any]:
    """`current` with memory raised to `memory_bytes`, remembering the plan's own."""
    after = dict(current)
    after.setdefault("raised_from", current.get("memory_bytes"))
    after.setdefault("cpus", 1.0)
    after["memory_bytes"] = memory_bytes
    return after


def host_available_bytes() -> int | None:
    """`MemAvailable` of this host (None: unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def next_limit(*, current: int, ceiling: int, available: int | None, reserve: int,
               factor: float, minimum_step: int) -> tuple[int, str]:
    """The raised limit (a whole MiB) and why; equal to `current` when there is no room (the
    reason says whether the plan's ceiling or the host stopped it)."""
    target = max(int(current * factor), current + minimum_step)
    target = min(math.ceil(target / MiB) * MiB, ceiling)
    if target <= current:
        return current, f"the plan's ceiling of {ceiling >> 20} MiB is reached"
    if available is not None:
        room = available - reserve
        if room < target - current:
            target = current + max(0, room) // MiB * MiB
            if target <= current:
                return current, (f"the host has {max(available, 0) >> 20} MiB free and keeps "
                                 f"{reserve >> 20} MiB in reserve")
    return target, "room on this host within the plan's ceiling"


@dataclass
class PolicyStatistics:
    """Counts of decisions by outcome."""

    decisions: int = 0
    raised: int = 0
    notified: int = 0
    slept: int = 0
    moved: int = 0
    failed: int = 0
    skipped_busy: int = 0
    rate_limited: int = 0


class ElasticityPolicy:
    """See the module doc. One per compute service (`ComputeService.elasticity`)."""

    def __init__(self, service: ComputeService, settings: PolicySettings | None = None) -> None:
        self.svc = service
        self.settings = settings or PolicySettings()
        self.stats = PolicyStatistics()
        self._deciding: set[str] = set()
        self._last: dict[str, float] = {}
        self.available = host_available_bytes  # replaceable: tests, and remote hosts later

    def statistics(self) -> PolicyStatistics:
        """The counters."""
        return self.stats

    def _begin(self, user_id: str, *, urgent: bool) -> bool:
        """Whether a decision for `user_id` may be taken now (one at a time, rate-limited)."""
        if user_id in self._deciding or self.svc.busy_nowait(user_id):
            self.stats.skipped_busy += 1
            return False
        now = trio.current_time()
        if not urgent and now - self._last.get(user_id, -math.inf) < \
                self.settings.decision_interval:
            self.stats.rate_limited += 1
            return False
        self._deciding.add(user_id)
        self._last[user_id] = now
        self.stats.decisions += 1
        return True

    async def _decided(self, user_id: str, trigger: str, action: str, reason: str,
                       **data: Any) -> None:
        await self.svc.publish("elasticity.decision", user_id, {
            "trigger": trigger, "action": action, "reason": reason, **data})

    async def _outcome(self, user_id: str, trigger: str, action: str, outcome: str,
                       **data: Any) -> None:
        await self.svc.publish("elasticity.outcome", user_id, {
            "trigger": trigger, "action": action, "outcome": outcome, **data})

    # ------------------------------------------------------------------ memory pressure

    async def on_pressure(self, user_id: str, trigger: str, *, working_set: int,
                          limit: int) -> None:
        """A pressure event (`migrate`, `urgent-migrate`, `critical`) of the user's runtime."""
        if trigger not in PRESSURE or not self._begin(user_id, urgent=trigger == "critical"):
            return
        try:
            await self._relieve(user_id, trigger, working_set=working_set, limit=limit)
        finally:
            self._deciding.discard(user_id)

    async def _relieve(self, user_id: str, trigger: str, *, working_set: int,
                       limit: int) -> None:
        svc = self.svc
        user = await svc.storage.get_user(user_id)
        plan, limits = svc.options.limits_for(user.plan if user else None)
        ceiling = limits.max_memory_bytes
        percent = round(100.0 * working_set / limit, 1) if limit else 0.0
        hosts = placement.hosts_of(svc)
        if not svc.capabilities.update_limits_live:
            target, why = limit, f"the {svc.backend.name} backend cannot change limits live"
        else:
            target, why = next_limit(current=limit, ceiling=ceiling,
                                     available=await self._room_here(user_id, limit),
                                     reserve=self.settings.host_reserve_mib * MiB,
                                     factor=self.settings.raise_factor,
                                     minimum_step=self.settings.raise_min_mib * MiB)
        if target > limit:
            await self._decided(user_id, trigger, "raise_limit", why, plan=plan,
                                memory_percent=percent, from_bytes=limit, to_bytes=target)
            try:
                before, after = await svc.raise_memory(user_id, target)
            except MarkcoError as exc:
                self.stats.failed += 1
                await self._outcome(user_id, trigger, "raise_limit", "failed", error=str(exc))
                if not any(r.user_id == user_id for r in svc.monitored_nowait()):
                    return  # it stopped (or sleeps) meanwhile: nothing to tell
                why = f"raising the limit failed: {exc}"
            else:
                self.stats.raised += 1
                self._clear_notice(user_id)
                if hosts is not None:  # the ledger holds what the runtime may use now
                    await placement.move_reservation(svc, user_id,
                                                     hosts.host_of_user(user_id), target)
                await self._outcome(user_id, trigger, "raise_limit", "done",
                                    before=before, after=after)
                await svc.publish("runtime.limits_changed", user_id,
                                  {"before": before, "after": after, "reason": trigger})
                return
        moving = await self._host_with_room(user_id, limit=limit, ceiling=ceiling)
        if moving is not None:
            host, bigger = moving
            await self._decided(user_id, trigger, "move", f"{why}; {host} has room for "
                                f"{bigger >> 20} MiB", plan=plan, memory_percent=percent,
                                to=host, from_bytes=limit, to_bytes=bigger)
            try:
                result = await svc.move(user_id, host, reason=f"{trigger}: memory "
                                        f"{percent:g} % of {limit >> 20} MiB",
                                        memory_bytes=bigger)
            except MarkcoError as exc:
                self.stats.failed += 1
                await self._outcome(user_id, trigger, "move", "failed", to=host,
                                    error=str(exc))
                if not any(r.user_id == user_id for r in svc.monitored_nowait()):
                    return
                why = f"{why}; moving it to {host} failed: {exc}"
            else:
                self.stats.moved += 1
                self._clear_notice(user_id)
                await self._outcome(user_id, trigger, "move", "done", to=host,
                                    to_bytes=bigger, took_ms=result.get("total_ms"))
                return
        await self._decided(user_id, trigger, "notify", why, plan=plan,
                            memory_percent=percent, limit_bytes=limit)
        notice_id = f"{MEMORY_NOTICE}{trio.current_time():.0f}"
        svc.set_notice(user_id, (
            f"Memory almost full: your runtime uses {percent:g} % of its {limit >> 20} MiB "
            f"and cannot get more ({why}). Free some memory (del big objects) or save your "
            f"work: going over the limit restarts the runtime and loses its variables."),
            notice_id)
        self.stats.notified += 1
        await self._outcome(user_id, trigger, "notify", "done", notice_id=notice_id)

    async def _room_here(self, user_id: str, limit: int) -> int | None:
        """What the runtime's host can still give, as `next_limit`'s `available` (None:
        unknown): this machine's free memory and, with several hosts, what the host's
        `memory_budget_mb` leaves in the ledger beyond the other users' reservations."""
        available = self.available()
        hosts = placement.hosts_of(self.svc)
        if hosts is None:
            return available
        host = hosts.host_of_user(user_id)
        budget = placement.host_budget(hosts, host)
        if budget is None:
            return available
        reserved = (await placement.reservations(self.svc)).get(host, {})
        others = sum(v for user, v in reserved.items() if user != user_id)
        # next_limit keeps `reserve` free of `available`: the budget is the host's own reserve.
        room = budget - others - limit + self.settings.host_reserve_mib * MiB
        return room if available is None else min(available, room)

    async def _host_with_room(self, user_id: str, *, limit: int,
                              ceiling: int) -> tuple[str, int] | None:
        """With several hosts: another host (up, not draining, with the plan's labels) whose
        budget has room for a bigger limit within the plan's ceiling, and that limit; None
        when there is none (or the ceiling is reached: a move would not give more)."""
        hosts = placement.hosts_of(self.svc)
        if hosts is None or len(hosts.host_names()) < 2:
            return None
        bigger, _ = next_limit(current=limit, ceiling=ceiling, available=None, reserve=0,
                               factor=self.settings.raise_factor,
                               minimum_step=self.settings.raise_min_mib * MiB)
        if bigger <= limit:
            return None
        here = hosts.host_of_user(user_id)
        used = {host: sum(v for user, v in users.items() if user != user_id)
                for host, users in (await placement.reservations(self.svc)).items()}
        used[here] = 1 << 62  # never "moved" onto the host it is on
        labels = await placement.plan_labels(self.svc, user_id)
        try:
            return hosts.choose(bigger, labels, used=used), bigger
        except MarkcoError:
            return None

    def relieved(self, user_id: str) -> None:
        """Memory fell back well below the thresholds: the "almost full" notice goes."""
        self._clear_notice(user_id)

    def _clear_notice(self, user_id: str) -> None:
        _, notice_id = self.svc.notice_nowait(user_id)
        if notice_id is not None and notice_id.startswith(MEMORY_NOTICE):
            self.svc.set_notice(user_id, None, None)

    # ------------------------------------------------------------------ idleness and hints

    async def on_idle(self, user_id: str, *, idle_for: float, last: str) -> bool:
        """`idle-sleep`: checkpoint and stop the user's runtime (and editor); True when it
        sleeps now."""
        if not self._begin(user_id, urgent=True):
            return False
        try:
            checkpointer = self.svc.ctx.checkpointer
            if checkpointer is None or \
                    not checkpointer.capabilities(self.svc.backend).checkpoint:
                await self._decided(user_id, "idle-sleep", "none",
                                    "no checkpointer can checkpoint this backend's runtimes: "
                                    "it keeps running", idle_seconds=round(idle_for))
                return False
            await self._decided(user_id, "idle-sleep", "sleep",
                                f"idle for {idle_for:.0f} s (last: {last})",
                                idle_seconds=round(idle_for))
            try:
                await self.svc.sleep(user_id, reason=f"idle for {idle_for:.0f} s")
            except MarkcoError as exc:
                self.stats.failed += 1
                await self._outcome(user_id, "idle-sleep", "sleep", "failed", error=str(exc))
                return False
            self.stats.slept += 1
            await self._outcome(user_id, "idle-sleep", "sleep", "done")
            return True
        finally:
            self._deciding.discard(user_id)

    async def on_hint(self, user_id: str, hint: str, reasons: tuple[str, ...]) -> None:
        """`gpu-hint`: move the runtime to a host labelled `gpu` with room, when there is one
        and it is not there yet (`moves.labelled_host`); otherwise recorded."""
        if hint != "gpu-hint" or not self._begin(user_id, urgent=True):
            return
        try:
            from . import moves

            target = await moves.labelled_host(self.svc, user_id, "gpu")
            if target is None:
                await self._decided(user_id, hint, "record",
                                    "no host labelled gpu has room (or it is already there)",
                                    reasons=list(reasons))
                await self._outcome(user_id, hint, "record", "done")
                return
            await self._decided(user_id, hint, "move", f"to {target}, a host labelled gpu",
                                reasons=list(reasons), to=target)
            try:
                await self.svc.move(user_id, target, reason=f"gpu-hint: {', '.join(reasons)}")
            except MarkcoError as exc:
                await self._outcome(user_id, hint, "move", "failed", error=str(exc))
                return
            await self._outcome(user_id, hint, "move", "done", to=target)
        finally:
            self._deciding.discard(user_id)
