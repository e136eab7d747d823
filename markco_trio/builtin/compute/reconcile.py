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

Checkpoint operations (`checkpoints.py`) are settled by their commit points, so a `kill -9` at
any instant ends with exactly one runtime — running, or asleep as a recorded archive:
- `sleep`: a sleep row for its archive → rolled forward (the dumped runtime and the editor
  removed, the record `sleeping`); else a runtime still running → rolled back (it is the
  truth; the archive, if any, is garbage); else a complete archive at its path (renamed into
  place only once whole) → recorded and rolled forward; else nothing survived → the runtime
  is started cold (files intact) and the user told.
- `wake`: the sleep row gone → it had committed; else a restored runtime that answers →
  rolled forward (record `running`, the image released); else rolled back (leftovers removed,
  record `sleeping`) and the wake requested again.
- `snapshot`/`fork`: the runtime was left running; an unrecorded archive is garbage; forks are
  disposable and removed. `restore`: the record's handle says which runtime is the truth.
- A `sleeping` record is kept while its image exists (its workload is expected to be gone).
4. Archive files that no row refers to are removed (garbage collection).
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ...errors import MarkcoError, NotFound
from ...records import Operation, OperationState, Runtime, RuntimeState, WorkloadRole
from ...roles import STATUS_RUNNING, ContainerInfo, ProcessTreeCheckpointing, workload_name
from . import archives, moves, probes
from .actor import UserActor
from .checkpoints import LABEL_FORK

if TYPE_CHECKING:
    from .service import ComputeService

log = logging.getLogger("markco.compute.reconcile")

START_KINDS = frozenset({"start", "restart", "recover"})
CHECKPOINT_KINDS = frozenset({"sleep", "wake", "snapshot", "restore", "fork",
                              "snapshot.delete"})


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
    if op.kind in CHECKPOINT_KINDS:
        await _settle_checkpoint(svc, op, containers, result)
        return
    storage, now = svc.storage, svc.now()
    roles = _roles_of(op)
    names = {role: str(op.targets[role.value]) for role in roles}
    if op.kind in START_KINDS and roles and all(
            (info := containers.get(_key(containers, names[role]))) is not None
            and info.status == STATUS_RUNNING
            for role in roles):
        await storage.update_operation(op.id, now=now, state=OperationState.DONE,
                                       error="rolled forward at start-up")
        result.counts["rolled_forward"] += 1
        return
    for role in roles:
        await _remove(svc, names[role])
        containers.pop(_key(containers, names[role]), None)
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


async def _done(svc: ComputeService, op: Operation, result: Reconciled, *, forward: bool,
                why: str) -> None:
    await svc.storage.update_operation(
        op.id, now=svc.now(), state=OperationState.DONE if forward
        else OperationState.ROLLED_BACK, error=why)
    result.counts["rolled_forward" if forward else "rolled_back"] += 1


def _key(containers: dict[str, ContainerInfo], handle: str | None) -> str:
    """The key of `containers` (workload names) for `handle`, which may be the name or the
    backend's own handle (a docker handle is the container id, not its name)."""
    if not handle or handle in containers:
        return handle or ""
    for name, info in containers.items():
        if info.handle == handle:
            return name
    return handle


async def _running(svc: ComputeService, containers: dict[str, ContainerInfo],
                   handle: str | None) -> ContainerInfo | None:
    info = containers.get(_key(containers, handle))
    return info if info is not None and info.status == STATUS_RUNNING else None


async def _forget(svc: ComputeService, containers: dict[str, ContainerInfo],
                  handle: str | None) -> None:
    if handle:
        await _remove(svc, handle)
        containers.pop(_key(containers, handle), None)


def _continue_tree(root_pid: int) -> None:
    """SIGCONT a process tree (blocking; pids from /proc)."""
    pending = [root_pid]
    while pending:
        pid = pending.pop()
        try:
            os.kill(pid, signal.SIGCONT)
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    pending.extend(int(x) for x in f.read().split())
        except OSError:
            continue


async def _thaw(svc: ComputeService, handle: str | None) -> None:
    """A checkpoint interrupted by a crash may leave its source stopped (CRIU's
    `--leave-stopped` until the archive is written, or a dump cut short): let it run again."""
    backend = svc.backend
    if not handle or not isinstance(backend, ProcessTreeCheckpointing):
        return
    try:
        tree = await backend.checkpoint_target(handle)
    except MarkcoError:
        return
    await trio.to_thread.run_sync(_continue_tree, tree.root_pid)


async def _settle_checkpoint(svc: ComputeService, op: Operation,
                             containers: dict[str, ContainerInfo], result: Reconciled) -> None:
    """Settle an interrupted checkpoint operation by its commit point (see the module doc)."""
    storage, now, targets = svc.storage, svc.now(), op.targets
    runtime_handle = targets.get("runtime")
    archive = targets.get("archive")
    record = await storage.get_live_runtime(op.user_id, WorkloadRole.RUNTIME)
    rows = {s.path: s for s in await storage.list_snapshots(op.user_id)}
    if op.kind == "sleep":
        row = rows.get(archive or "")
        if row is None and await _running(svc, containers, runtime_handle) is not None:
            await _thaw(svc, runtime_handle)
            await _done(svc, op, result, forward=False,
                        why="interrupted before its checkpoint was recorded; still running")
            return
        if row is None and archive and await trio.Path(archive).is_file():
            sha = await trio.to_thread.run_sync(archives.sha256_of, Path(archive))
            size = await trio.to_thread.run_sync(archives.seal, Path(archive))
            row = await storage.create_snapshot(
                user_id=op.user_id, runtime_id=record.id if record else None,
                name=f"sleep-{op.id[:8]}", path=archive, size_bytes=size, sha256=sha,
                depends_on={"recovered": True}, now=now, kind="sleep")
        await _forget(svc, containers, runtime_handle)
        await _forget(svc, containers, targets.get("editor"))
        editor = await storage.get_live_runtime(op.user_id, WorkloadRole.EDITOR)
        if editor is not None:
            await storage.update_runtime(editor.id, now=now, state=RuntimeState.STOPPED,
                                         reason="stopped while the runtime sleeps")
        if row is not None:
            if record is not None and record.state != RuntimeState.SLEEPING:
                await storage.update_runtime(record.id, now=now, state=RuntimeState.SLEEPING,
                                             address=None, reason="asleep")
            await _done(svc, op, result, forward=True, why="rolled forward at start-up")
            return
        if record is not None:
            await storage.update_runtime(
                record.id, now=now, state=RuntimeState.STOPPED,
                reason="the daemon stopped in the middle of a sleep and the runtime could "
                       "not be saved; it was started fresh (files intact)")
        await storage.update_operation(op.id, now=now, state=OperationState.FAILED,
                                       error="nothing of the runtime survived")
        result.to_start.append((op.user_id, "a sleep interrupted by a restart lost the runtime"))
        return
    if op.kind == "wake":
        row = next((s for s in rows.values() if s.id == targets.get("snapshot_id")), None)
        if row is None:  # released: the wake had committed
            await _done(svc, op, result, forward=True, why="rolled forward at start-up")
            return
        info = await _running(svc, containers, runtime_handle)
        if info is not None and info.address and record is not None:
            try:
                await probes.wait_ready(svc.http, svc.backend, info.handle,
                                        WorkloadRole.RUNTIME, info.address,
                                        within=min(svc.options.ready_timeout, 10.0))
            except probes.NotReadyError:
                info = None
            if info is not None:
                await storage.update_runtime(record.id, now=now, state=RuntimeState.RUNNING,
                                             handle=info.handle, address=info.address,
                                             reason=None)
                await storage.delete_snapshot(row.id)
                await trio.to_thread.run_sync(archives.remove_file, Path(row.path))
                await _done(svc, op, result, forward=True, why="rolled forward at start-up")
                return
        await _forget(svc, containers, runtime_handle)
        if record is not None:
            await storage.update_runtime(record.id, now=now, state=RuntimeState.SLEEPING,
                                         address=None, reason="asleep")
        await _done(svc, op, result, forward=False,
                    why="interrupted by a daemon restart; rolled back")
        result.to_start.append((op.user_id, "resuming a wake interrupted by a restart"))
        return
    if op.kind == "restore":
        new = targets.get("new")
        if record is not None and record.handle == new and new != runtime_handle:
            await _forget(svc, containers, runtime_handle)
            await _done(svc, op, result, forward=True, why="rolled forward at start-up")
            return
        if new != runtime_handle:
            await _forget(svc, containers, new)
            await _thaw(svc, runtime_handle)
        safety = targets.get("safety")
        if safety and await trio.Path(safety).is_file() and \
                await _running(svc, containers, runtime_handle) is None:
            # The old runtime was frozen into its safety archive: it is the truth.
            await storage.create_snapshot(
                user_id=op.user_id, runtime_id=record.id if record else None,
                name=f"sleep-{op.id[:8]}", path=safety,
                size_bytes=(await trio.Path(safety).stat()).st_size,
                sha256=await trio.to_thread.run_sync(archives.sha256_of, Path(safety)),
                depends_on={"recovered": True}, now=now, kind="sleep")
            await _forget(svc, containers, runtime_handle)
            if record is not None:
                await storage.update_runtime(record.id, now=now, state=RuntimeState.SLEEPING,
                                             address=None, reason="asleep")
            result.to_start.append((op.user_id, "resuming a restore interrupted by a restart"))
        await _done(svc, op, result, forward=False,
                    why="interrupted by a daemon restart; rolled back")
        return
    if op.kind in ("snapshot", "fork", "restore"):
        await _thaw(svc, runtime_handle)
    if op.kind == "fork":
        await _forget(svc, containers, targets.get("fork"))
    if op.kind == "snapshot.delete" and targets.get("snapshot_id"):
        await storage.delete_snapshot(str(targets["snapshot_id"]))
    # snapshot, fork, snapshot.delete: the runtime was left running; unrecorded archives are
    # garbage (collected below).
    await _done(svc, op, result, forward=op.kind == "snapshot.delete",
                why="interrupted by a daemon restart")


async def _keep_sleeping(svc: ComputeService, record: Runtime,
                         containers: dict[str, ContainerInfo]) -> bool:
    """A `sleeping` (or `waking`) record with its image still there is kept (True)."""
    images = await svc.storage.list_snapshots(record.user_id, kind="sleep")
    if not images or not await trio.Path(images[-1].path).is_file():
        return False
    name = record.handle or workload_name(svc.deployment_id, record.user_id, record.role)
    await _forget(svc, containers, name)
    if record.state == RuntimeState.WAKING:
        await svc.storage.update_runtime(record.id, now=svc.now(), state=RuntimeState.SLEEPING)
    return True


async def collect_garbage(svc: ComputeService) -> list[Path]:
    """Remove archive files no snapshot row refers to."""
    referenced = {s.path for s in await svc.storage.list_snapshots()}
    removed = await trio.to_thread.run_sync(archives.collect_garbage, svc.archive_root,
                                            referenced)
    for path in removed:
        log.info("compute: removed the unreferenced archive %s", path)
    return removed


async def reconcile(svc: ComputeService) -> Reconciled:
    """Run the three passes (see the module doc); return what to adopt and start."""
    storage, backend = svc.storage, svc.backend
    result = Reconciled()
    # Moves first: a move interrupted by a crash may have the runtime's name on two hosts.
    for key, count in (await moves.settle(svc)).items():
        result.counts[key] = count
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
    for fork in [i for i in containers.values() if LABEL_FORK in i.labels]:
        await _forget(svc, containers, fork.name)  # forks are disposable
        result.counts["orphans_removed"] += 1
    for record in await storage.list_runtimes(live_only=True):
        if record.backend != backend.name:
            continue  # another backend's: not ours to judge
        if record.state in (RuntimeState.SLEEPING, RuntimeState.WAKING) and \
                await _keep_sleeping(svc, record, containers):
            actor = svc._actor(record.user_id)
            actor.records[record.role] = await storage.get_runtime(record.id)
            result.counts["asleep"] = result.counts.get("asleep", 0) + 1
            continue
        name = _key(containers, record.handle) or \
            workload_name(svc.deployment_id, record.user_id, record.role)
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
            user_id=info.user_id, role=info.role, backend=backend.name, host=svc.host_of(info),
            state=RuntimeState.RUNNING, limits=limits, now=svc.now(), handle=info.handle,
            address=info.address)
        actor = actors.setdefault(info.user_id, svc._actor(info.user_id))
        actor.adopt(info.role, record, info.address)
        live_roles.add((info.user_id, info.role))
        result.counts["orphans_adopted"] += 1
    result.adopted = list(actors.values())
    await collect_garbage(svc)
    # A user found with one workload running and the other dead wants both: start the rest.
    for user_id, actor in actors.items():
        if len(actor.desired) < len(WorkloadRole) and \
                all(uid != user_id for uid, _ in result.to_start):
            result.to_start.append((user_id, "a workload was found dead at start-up"))
    await svc.publish("compute.reconciled", None, dict(result.counts))
    log.info("compute: reconciled at start-up: %s", result.counts)
    return result
