"""Moving a user's runtime between hosts, memory and all, without ever losing it.

A move is an actor operation (`kind = "move"`), persisted step by step:

1. `dump` — the front holds new requests (bounded, then 503) and lets running ones finish; the
   source engine checkpoints the runtime FROZEN (`leaveRunning=false`: it never runs again
   while its final state is copied) and streams the archive out of its API...
2. `transfer` — ...straight into the target engine's restore API: a bounded channel of a few
   blocks between the two HTTP streams, never the whole archive in memory or on disk here.
3. `restore` — the target has the whole archive and restores it with the user's current limits;
   the restored runtime must answer.
4. `switch` — THE commit point: the runtime record names the target (host, handle, address),
   the backend routes the user there, the reservation moves, the front forwards there.
5. `cleanup` — only now the source container is removed.

Any failure before the switch removes whatever the target has and resumes the source from the
engine's own copy of the checkpoint (it answers again with its variables); the user ends with
exactly one working runtime. After a `kill -9` of the daemon, `settle` (run before the rest of
reconciliation) finishes an open move the same way from its last persisted step: before the
switch → rolled back; at the switch with the target running → rolled forward; at cleanup →
the source removed.

Every move is measured into the `migrations` table: checkpoint (until the first archive byte),
transfer (until the last), restore (until the target answers), switch durations, and bytes.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ...errors import MarkcoError, NotFound
from ...records import Operation, OperationState, RuntimeState, WorkloadRole
from ...roles import STATUS_RUNNING, ContainerInfo, workload_name
from . import checkpoints, placement, specs

if TYPE_CHECKING:
    from .actor import Ticket, UserActor
    from .service import ComputeService

log = logging.getLogger("markco.compute.moves")

RUNTIME = WorkloadRole.RUNTIME
STEPS = ("dump", "transfer", "restore", "switch", "cleanup")
BEFORE_SWITCH = frozenset({"prepare", "dump", "transfer", "restore"})
# Archive blocks in flight between the two engines (each up to the engine's 4 MiB blocks).
CHANNEL_BLOCKS = 2

# Tests inject failures here: step → an async callable run as the step begins (it raises, or
# kills the daemon). Never set in production.
FaultHook = Callable[[str], Awaitable[None]]


class MoveFailed(MarkcoError):
    """A move did not happen; the runtime stays (working) where it was."""


# The daemon-level tests' fault injection: `MARKCO_FAULT_MOVE=STEP` fails a move as STEP begins,
# `MARKCO_FAULT_MOVE=kill:STEP` kill -9s the daemon there. Unset in production.
FAULT_ENV = "MARKCO_FAULT_MOVE"


class InjectedFault(MarkcoError):
    """A failure injected by `MARKCO_FAULT_MOVE` (tests only)."""


async def _fault(svc: ComputeService, step: str) -> None:
    hook: FaultHook | None = getattr(svc, "move_fault", None)
    if hook is not None:
        await hook(step)
    wanted = os.environ.get(FAULT_ENV, "")
    if wanted == f"kill:{step}":
        log.error("compute: %s=%s: killing the daemon at %s", FAULT_ENV, wanted, step)
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted == step:
        raise InjectedFault(f"failure injected at {step} ({FAULT_ENV})")


def _hosts(svc: ComputeService) -> placement.HostSet:
    hosts = placement.hosts_of(svc)
    if hosts is None:
        raise MoveFailed("this deployment has one host: configure [[compute.docker.hosts]] "
                         "to move runtimes between hosts")
    return hosts


async def resume_source(svc: ComputeService, host: str, handle: str) -> ContainerInfo | None:
    """Make the source runtime run again (restored in place from the engine's own copy of the
    checkpoint when the dump had stopped it); its info, None when it is gone."""
    return await _hosts(svc).resume_on(host, handle)


async def remove_on(svc: ComputeService, host: str, handle: str) -> bool:
    """Stop and remove `handle` on `host` (True if it was there)."""
    backend = _hosts(svc).backend_on(host)
    try:
        await backend.stop(handle, timeout=0)
        await backend.remove(handle)
    except NotFound:
        return False
    return True


async def run_move(actor: UserActor, ticket: Ticket) -> dict[str, Any]:
    """The `move` operation (see the module doc); its measurements."""
    from .actor import OperationFailed

    svc = actor.svc
    hosts = _hosts(svc)
    to_host = str(ticket.args["to"])
    hosts.backend_on(to_host)  # NotFound names the configured hosts
    if not hosts.is_up(to_host):
        raise OperationFailed(f"host {to_host} does not answer ({hosts.down.get(to_host)}): "
                              f"not moving there")
    record = await actor.live_record(RUNTIME)
    if record is None:
        # Nothing runs: the user simply starts on the target next time.
        hosts.assign(actor.user_id, to_host)
        return {"moved": "nothing running", "to": to_host}
    from_host = record.host
    if from_host == to_host:
        raise OperationFailed(f"the runtime of {actor.user_id} is already on {to_host}")
    user = await svc.storage.get_user(actor.user_id)
    if user is None:
        raise OperationFailed(f"user {actor.user_id} does not exist")
    plan, limits = svc.options.limits_for(user.plan)
    missing = sorted(set(limits.labels) - placement.host_labels(hosts, to_host))
    if missing:
        raise OperationFailed(f"{to_host} lacks the host label(s) {', '.join(missing)} that "
                              f"the plan {plan!r} needs: not moving there")
    # Restored with the memory it has (a limit raised by elasticity is kept: its working set
    # would not fit the plan's), or the bigger one elasticity asks for, within the ceiling.
    from . import elasticity

    limits = elasticity.restore_limits(record.limits, plan, limits)
    if ticket.args.get("memory_bytes") is not None:
        limits = elasticity.with_memory(limits, int(ticket.args["memory_bytes"]))
    new_limits = dict(record.limits or {})
    if limits.memory_bytes != new_limits.get("memory_bytes"):
        new_limits = elasticity.raised_limits(new_limits, limits.memory_bytes)
    migration = await svc.storage.create_migration(
        runtime_id=record.id, user_id=actor.user_id, from_host=from_host, to_host=to_host,
        strategy="asleep" if record.state == RuntimeState.SLEEPING else "checkpoint",
        now=svc.now())
    asleep = record.state == RuntimeState.SLEEPING
    if asleep:
        # A sleeper's image is restored where it was made (a CRIU image restored on another
        # engine after its container is gone is refused by podman 4.3), then moved live like
        # any runtime, then put back to sleep on the target: its state survives by the one
        # path that is proven, and its image ends on the target's side.
        from .actor import BOTH, Ticket

        hosts.pinned[actor.user_id] = from_host
        try:
            await checkpoints.run_wake(actor, Ticket("wake", BOTH, ticket.reason))
        finally:
            hosts.pinned.pop(actor.user_id, None)
        record = await actor.live_record(RUNTIME)
        if record is None or record.state != RuntimeState.RUNNING:
            raise OperationFailed("the sleeping runtime could not be woken to be moved")
    if record.state != RuntimeState.RUNNING or not record.handle:
        raise OperationFailed(f"the runtime is {record.state.value}: only a running or "
                              f"sleeping runtime can be moved")
    source = record.handle
    op = await actor.open_operation("move", frozenset({RUNTIME}), ticket.reason,
                                    from_host=from_host, to_host=to_host, source=source,
                                    migration=migration.id)
    timings: dict[str, int] = {}
    step = "prepare"
    marks: dict[str, float] = {"start": trio.current_time()}
    moved = 0
    try:
        step = "dump"
        await actor.step(op, step)
        await _fault(svc, step)
        await checkpoints._drain(actor)
        spec = specs.runtime_spec(deployment_id=svc.deployment_id, user=user,
                                  user_dir=svc.user_dir(actor.user_id), limits=limits,
                                  options=svc.options, caps=svc.capabilities,
                                  operation_id=op.id)
        source_backend = hosts.backend_on(from_host)
        target_backend = hosts.backend_on(to_host)
        send, receive = trio.open_memory_channel[bytes](CHANNEL_BLOCKS)
        info: ContainerInfo | None = None

        async def chunks() -> AsyncIterator[bytes]:
            async with receive:
                async for block in receive:
                    yield block

        async def write(block: bytes) -> None:
            nonlocal moved, step
            if moved == 0:
                marks["first_byte"] = trio.current_time()
                step = "transfer"
                await actor.step(op, step)
                await _fault(svc, step)
            moved += len(block)
            await send.send(block)

        async def produce() -> None:
            nonlocal step
            async with send:
                await source_backend.export_checkpoint(source, write, leave_running=False)
            marks["last_byte"] = trio.current_time()
            step = "restore"
            await actor.step(op, step)
            await _fault(svc, step)

        async def consume() -> None:
            nonlocal info
            info = await target_backend.import_checkpoint(spec, chunks())

        async with svc.checkpoint_limiter, trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            nursery.start_soon(consume)
        assert info is not None
        hosts.remember(info.handle, to_host)
        await actor.await_ready(RUNTIME, info)
        marks["restored"] = trio.current_time()
        step = "switch"
        await actor.step(op, step)
        await _fault(svc, step)
        await actor.update(RUNTIME, host=to_host, handle=info.handle, address=info.address,
                           state=RuntimeState.RUNNING, operation_id=op.id, reason=None,
                           limits=new_limits)
    except BaseException as exc:
        leaf = exc
        if isinstance(exc, BaseExceptionGroup):
            from .actor import first_leaf

            leaf = first_leaf(exc)
        with trio.CancelScope(shield=True):
            await _roll_back(actor, op, from_host, to_host, source, step, leaf,
                             migration.id, timings_of(marks, moved))
        if isinstance(exc, Exception):
            raise OperationFailed(f"the move to {to_host} failed at {step} ({leaf}); the "
                                  f"runtime stays on {from_host}, as it was") from exc
        raise
    # Committed: the target is the runtime from here on.
    hosts.assign(actor.user_id, to_host)
    actor.addresses[RUNTIME] = actor.parse(info.address)
    actor.ready[RUNTIME] = True
    actor.changed()
    marks["switched"] = trio.current_time()
    await placement.move_reservation(svc, actor.user_id, to_host, limits.memory_bytes)
    step = "cleanup"
    await actor.step(op, step)
    error = None
    try:
        await _fault(svc, step)
        await remove_on(svc, from_host, source)
    except Exception as exc:
        # The user has their (one) working runtime on the target; the stopped source is
        # removed at the next start-up (the operation stays open at `cleanup`).
        error = f"the source on {from_host} could not be removed yet: {exc}"
        log.warning("compute: move of %s: %s", actor.user_id, error)
    timings = timings_of(marks, moved)
    if error is None:
        await actor.close(op, OperationState.DONE)
    await _finish(svc, migration.id, "done", timings, error)
    await svc.publish("runtime.moved", actor.user_id, {
        "from": from_host, "to": to_host, "address": info.address, **timings,
        "took_ms": timings.get("total_ms", 0)})
    actor.reset_crashes(frozenset({RUNTIME}))
    await _editor_follows(actor, op, from_host, to_host)
    if asleep:
        from .actor import BOTH, Ticket

        await checkpoints.run_sleep(actor, Ticket("sleep", BOTH, ticket.reason))
    return {"from": from_host, "to": to_host, "asleep": asleep, **timings}


async def _editor_follows(actor: UserActor, op: Operation, from_host: str,
                          to_host: str) -> None:
    """The editor holds no state of its own (the user's files are shared storage): it is
    started again on the runtime's new host, so a drained host ends empty. Its failure
    leaves the runtime moved; the editor starts again on the next visit."""
    editor = await actor.live_record(WorkloadRole.EDITOR)
    if editor is None or editor.host != from_host or \
            editor.state != RuntimeState.RUNNING:
        return
    try:
        await actor.remove_workload(WorkloadRole.EDITOR)
        await actor.start_editor(op)
        await actor.update(WorkloadRole.EDITOR, host=to_host)
    except Exception as exc:
        log.warning("compute: move of %s: the editor did not start on %s: %s",
                    actor.user_id, to_host, exc)


def timings_of(marks: dict[str, float], moved: int) -> dict[str, int]:
    """Milliseconds of each phase from the marks taken so far, and the bytes moved."""
    def ms(a: str, b: str) -> int | None:
        return round((marks[b] - marks[a]) * 1000) if a in marks and b in marks else None

    found = {"checkpoint_ms": ms("start", "first_byte"),
             "transfer_ms": ms("first_byte", "last_byte"),
             "restore_ms": ms("last_byte", "restored"), "switch_ms": ms("restored", "switched"),
             "total_ms": ms("start", "switched")}
    result = {key: value for key, value in found.items() if value is not None}
    result["bytes"] = moved
    return result


async def _finish(svc: ComputeService, migration_id: str, status: str, timings: dict[str, int],
                  error: str | None) -> None:
    await svc.storage.finish_migration(
        migration_id, status=status, now=svc.now(), checkpoint_ms=timings.get("checkpoint_ms"),
        transfer_ms=timings.get("transfer_ms"), restore_ms=timings.get("restore_ms"),
        error=error)
    storage: Any = svc.storage
    await storage._write(lambda tx: tx.execute(
        "UPDATE migrations SET switch_ms = ?, bytes = ? WHERE id = ?",
        (timings.get("switch_ms"), timings.get("bytes"), migration_id)))


async def _roll_back(actor: UserActor, op: Operation, from_host: str, to_host: str,
                     source: str, step: str, exc: BaseException, migration_id: str,
                     timings: dict[str, int]) -> None:
    """Before the switch: the target's copy removed, the source resumed and ready again."""
    svc = actor.svc
    name = workload_name(svc.deployment_id, actor.user_id, RUNTIME)
    what = f"the move of {actor.user_id} to {to_host} failed at {step}: {exc}"
    try:
        removed = await remove_on(svc, to_host, name)
        info = await resume_source(svc, from_host, source)
        if info is not None and info.status == STATUS_RUNNING:
            await actor.await_ready(RUNTIME, info)
            actor.addresses[RUNTIME] = actor.parse(info.address)
            await actor.update(RUNTIME, address=info.address, state=RuntimeState.RUNNING)
            actor.ready[RUNTIME] = True
            actor.changed()
        log.warning("compute: %s; the target's copy %s, the source resumed on %s", what,
                    "removed" if removed else "never made", from_host)
    except Exception as cleanup_exc:
        log.error("compute: %s, and rolling it back failed too: %s", what, cleanup_exc)
    await actor.close(op, OperationState.ROLLED_BACK, error=what)
    await _finish(svc, migration_id, "rolled_back", timings, str(exc))
    await svc.publish("runtime.move_failed", actor.user_id, {
        "from": from_host, "to": to_host, "step": step, "error": str(exc)})


# ------------------------------------------------------------------------------ after a crash


async def settle(svc: ComputeService) -> dict[str, int]:
    """Before the rest of reconciliation: route every live record to its host, and finish
    every open move from its last persisted step (see the module doc)."""
    hosts = placement.hosts_of(svc)
    counts = {"moves_rolled_forward": 0, "moves_rolled_back": 0}
    if hosts is None:
        return counts
    for record in await svc.storage.list_runtimes(live_only=True):
        if record.host in hosts.host_names():
            hosts.assign(record.user_id, record.host)
            if record.handle:
                hosts.remember(record.handle, record.host)
    for op in await svc.storage.list_operations(open_only=True):
        if op.kind != "move":
            continue
        try:
            forward = await _settle_one(svc, hosts, op)
        except MarkcoError as exc:
            log.error("reconcile: cannot settle move %s of %s: %s", op.id, op.user_id, exc)
            await svc.storage.update_operation(op.id, now=svc.now(),
                                               state=OperationState.FAILED,
                                               error=f"could not be settled: {exc}")
            continue
        counts["moves_rolled_forward" if forward else "moves_rolled_back"] += 1
    return counts


async def _settle_one(svc: ComputeService, hosts: placement.HostSet, op: Operation) -> bool:
    targets = op.targets
    from_host, to_host = str(targets["from_host"]), str(targets["to_host"])
    source, migration_id = str(targets["source"]), str(targets["migration"])
    name = workload_name(svc.deployment_id, op.user_id, RUNTIME)
    record = await svc.storage.get_live_runtime(op.user_id, RUNTIME)
    target: ContainerInfo | None = None
    try:
        target = await hosts.backend_on(to_host).inspect(name)
    except NotFound:
        target = None
    forward = op.step == "cleanup" or (
        op.step == "switch" and target is not None and target.status == STATUS_RUNNING)
    if forward and target is not None and record is not None:
        await svc.storage.update_runtime(record.id, now=svc.now(), host=to_host,
                                         handle=target.handle, address=target.address,
                                         state=RuntimeState.RUNNING)
        hosts.assign(op.user_id, to_host)
        hosts.remember(target.handle, to_host)
        await remove_on(svc, from_host, source)
        await svc.storage.update_operation(op.id, now=svc.now(), state=OperationState.DONE,
                                           error=f"rolled forward at start-up from {op.step}")
        await _finish(svc, migration_id, "done", {}, "finished at start-up")
        log.warning("reconcile: move of %s to %s rolled forward from %s", op.user_id,
                    to_host, op.step)
        return True
    await remove_on(svc, to_host, name)
    info = await resume_source(svc, from_host, source)
    if record is not None:
        await svc.storage.update_runtime(
            record.id, now=svc.now(), host=from_host, handle=source,
            address=info.address if info else record.address,
            state=RuntimeState.RUNNING if info else record.state)
    hosts.assign(op.user_id, from_host)
    hosts.remember(source, from_host)
    await svc.storage.update_operation(
        op.id, now=svc.now(), state=OperationState.ROLLED_BACK,
        error=f"interrupted at {op.step} by a daemon restart; rolled back, the source resumed")
    await _finish(svc, migration_id, "rolled_back", {}, f"interrupted at {op.step}")
    log.warning("reconcile: move of %s to %s rolled back from %s", op.user_id, to_host,
                op.step)
    return False


async def labelled_host(svc: ComputeService, user_id: str, label: str) -> str | None:
    """A host carrying `label` with room for the user's runtime, when they are not on one
    already (the monitor's `gpu-hint`); None otherwise."""
    hosts = placement.hosts_of(svc)
    if hosts is None:
        return None
    record = await svc.storage.get_live_runtime(user_id, RUNTIME)
    if record is None:
        return None
    options: dict[str, Any] = getattr(hosts, "host_options", {})
    if label in getattr(options.get(record.host), "labels", ()):
        return None
    used = {h: sum(users.values()) for h, users in (await placement.reservations(svc)).items()}
    used[record.host] = used.get(record.host, 0) - int(record.limits.get("memory_bytes") or 0)
    labels = (label, *await placement.plan_labels(svc, user_id))
    try:
        return hosts.choose(int(record.limits.get("memory_bytes") or 0), labels, used=used)
    except MarkcoError:
        return None


async def drain(svc: ComputeService, host: str, *, reason: str) -> dict[str, str]:
    """Move every user off `host` (sleeping ones included) to the other hosts, placed by the
    ledger; nothing new is placed on it. User → "moved to X" or why not."""
    hosts = _hosts(svc)
    hosts.backend_on(host)
    hosts.draining.add(host)
    await placement.record_host_state(svc, host, "draining", reason)
    outcome: dict[str, str] = {}
    for record in await svc.storage.list_runtimes(live_only=True):
        if record.role != RUNTIME or record.host != host:
            continue
        limits = record.limits.get("memory_bytes", 0) if record.limits else 0
        try:
            used = await placement.reservations(svc)
            sums = {h: sum(users.values()) for h, users in used.items()}
            sums[host] = 0
            target = hosts.choose(int(limits or 0),
                                  await placement.plan_labels(svc, record.user_id), used=sums)
            await svc.move(record.user_id, target, reason=reason)
            outcome[record.user_id] = f"moved to {target}"
        except MarkcoError as exc:
            outcome[record.user_id] = f"not moved: {exc}"
    return outcome
