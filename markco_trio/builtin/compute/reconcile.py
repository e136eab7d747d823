"""Reconciliation at start-up: make the database and the backend agree before `/readyz`.

1. Every open operation of the log is settled: a `stop` is rolled forward (its targets stopped
   and removed); a `start`/`restart`/`recover` whose targets all run is rolled forward (closed
   `done`, the workloads adopted below), otherwise rolled back (what it created removed, its
   records `stopped`) and the start is requested again once the daemon is up — the user wanted
   it running.
2. Every live record is checked against the backend: a workload still running is adopted (its
   user's actor takes it over; a readiness check follows); a dead one is marked `stopped` with
   the reason, and its leftovers removed.
3. Workloads of this deployment with no live record are orphans: a running one whose user has
   no live record of that role is adopted (a record is created), anything else is removed.

Names are deterministic and the schema allows one live record per user and role, so nothing
is ever duplicated: the same name is the same workload.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...errors import MarkcoError, NotFound
from ...records import Operation, OperationState, RuntimeState, WorkloadRole
from ...roles import STATUS_RUNNING, ContainerInfo, workload_name
from .actor import UserActor

if TYPE_CHECKING:
    from .service import ComputeService

log = logging.getLogger("markco.compute.reconcile")

START_KINDS = frozenset({"start", "restart", "recover"})


@dataclass
class Reconciled:
    """What reconciliation did (also published as the `compute.reconciled` event)."""

    adopted: list[UserActor] = field(default_factory=list)
    to_start: list[tuple[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {
        "rolled_forward": 0, "rolled_back": 0, "adopted": 0, "marked_dead": 0,
        "orphans_adopted": 0, "orphans_removed": 0})


def _roles_of(op: Operation) -> list[WorkloadRole]:
    return [role for role in WorkloadRole if role.value in op.targets]


async def _remove(svc: ComputeService, name: str) -> None:
    try:
        await svc.backend.stop(name, timeout=0)
        await svc.backend.remove(name)
    except NotFound:
        pass


async def _settle(svc: ComputeService, op: Operation, containers: dict[str, ContainerInfo],
                  result: Reconciled) -> None:
    storage, now = svc.storage, svc.now()
    roles = _roles_of(op)
    names = {role: str(op.targets[role.value]) for role in roles}
    if op.kind in START_KINDS and roles and all(
            (info := containers.get(names[role])) is not None and info.status == STATUS_RUNNING
            for role in roles):
        await storage.update_operation(op.id, now=now, state=OperationState.DONE,
                                       error="rolled forward at start-up")
        result.counts["rolled_forward"] += 1
        return
    for role in roles:
        await _remove(svc, names[role])
        containers.pop(names[role], None)
        record = await storage.get_live_runtime(op.user_id, role)
        if record is not None:
            why = ("stopped" if op.kind == "stop"
                   else f"{op.kind} interrupted by a daemon restart")
            await storage.update_runtime(record.id, now=now, state=RuntimeState.STOPPED,
                                         reason=why)
    if op.kind == "stop":
        await storage.update_operation(op.id, now=now, state=OperationState.DONE,
                                       error="rolled forward at start-up")
        result.counts["rolled_forward"] += 1
    else:
        await storage.update_operation(op.id, now=now, state=OperationState.ROLLED_BACK,
                                       error="interrupted by a daemon restart; rolled back")
        result.counts["rolled_back"] += 1
        result.to_start.append((op.user_id, f"resuming a {op.kind} interrupted by a restart"))


async def reconcile(svc: ComputeService) -> Reconciled:
    """Run the three passes (see the module doc); return what to adopt and start."""
    storage, backend = svc.storage, svc.backend
    result = Reconciled()
    containers = {info.name: info for info in await backend.list()}
    for op in await storage.list_operations(open_only=True):
        try:
            await _settle(svc, op, containers, result)
        except MarkcoError as exc:
            log.error("reconcile: cannot settle operation %s (%s of user %s): %s", op.id,
                      op.kind, op.user_id, exc)
            await storage.update_operation(op.id, now=svc.now(), state=OperationState.FAILED,
                                           error=f"could not be settled at start-up: {exc}")
    actors: dict[str, UserActor] = {}
    live_roles: set[tuple[str, WorkloadRole]] = set()
    for record in await storage.list_runtimes(live_only=True):
        if record.backend != backend.name:
            continue  # another backend's: not ours to judge
        name = record.handle or workload_name(svc.deployment_id, record.user_id, record.role)
        info = containers.pop(name, None)
        if info is not None and info.status == STATUS_RUNNING:
            actor = actors.setdefault(record.user_id, svc._actor(record.user_id))
            actor.adopt(record.role, record, info.address)
            live_roles.add((record.user_id, record.role))
            result.counts["adopted"] += 1
            continue
        reason = "gone when the daemon started" if info is None else \
            f"{info.status} while the daemon was down (exit code {info.exit_code})"
        if info is not None:
            await _remove(svc, name)
        await storage.update_runtime(record.id, now=svc.now(), state=RuntimeState.STOPPED,
                                     reason=reason)
        result.counts["marked_dead"] += 1
        await svc.publish(f"{record.role.value}.stopped", record.user_id,
                          {"reason": reason, "at_start_up": True})
    for info in containers.values():
        adoptable = info.status == STATUS_RUNNING and \
            (info.user_id, info.role) not in live_roles and \
            await storage.get_user(info.user_id) is not None and \
            await storage.get_live_runtime(info.user_id, info.role) is None
        if not adoptable:
            await _remove(svc, info.name)
            result.counts["orphans_removed"] += 1
            continue
        limits: dict[str, Any] = {}
        record = await storage.create_runtime(
            user_id=info.user_id, role=info.role, backend=backend.name, host=svc.host,
            state=RuntimeState.RUNNING, limits=limits, now=svc.now(), handle=info.handle,
            address=info.address)
        actor = actors.setdefault(info.user_id, svc._actor(info.user_id))
        actor.adopt(info.role, record, info.address)
        live_roles.add((info.user_id, info.role))
        result.counts["orphans_adopted"] += 1
    result.adopted = list(actors.values())
    # A user found with one workload running and the other dead wants both: start the rest.
    for user_id, actor in actors.items():
        if len(actor.desired) < len(WorkloadRole) and \
                all(uid != user_id for uid, _ in result.to_start):
            result.to_start.append((user_id, "a workload was found dead at start-up"))
    await svc.publish("compute.reconciled", None, dict(result.counts))
    log.info("compute: reconciled at start-up: %s", result.counts)
    return result
