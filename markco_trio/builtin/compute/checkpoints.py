"""Sleep, wake, snapshots, restore and forks: the user's operations on top of the
`Checkpointer` role (DESIGN §4), run by the user's actor under its lock, one at a time.

Every operation is persisted in the operation log with its targets fixed before anything is
written (the workload handles and the ARCHIVE PATH), advanced step by step, and closed; every
step is idempotent, and `reconcile.py` settles one interrupted by a daemon crash. What makes
each one safe against `kill -9` at any instant:

- **sleep**: the front's connections are drained, the runtime is checkpointed with
  `leave_running=False` into `<data_dir>/snapshots/<user>/sleep-<op>.img`, the archive is
  fsynced, then ONE ROW (kind `sleep`) records it — the commit point — and the runtime record
  turns `sleeping`; only then are the (stopped) runtime and the stateless editor removed. Before
  the row, the runtime is still the truth (a failed checkpoint leaves it running); after it, the
  archive is.
- **wake**: the runtime record turns `waking`; the archive is restored (the checkpointer
  checks its sha256 against the row's in the pass that reads it) while the editor starts IN
  PARALLEL; once the restored runtime answers, its record turns `running` and only then are
  the sleep row and file removed. A restore that cannot work
  (`RestoreIncompatible`, a damaged archive, CRIU failing) falls back to a cold start with the
  user's files intact, and the user is told (a notice in the state, the progress stream, an
  event `runtime.restore_failed`).
- **snapshot** (named): the same checkpoint with `leave_running=True`; a row records it;
  retention keeps the newest `snapshots_keep`.
- **restore** of a named snapshot: with a checkpointer that can restore next to the original
  (`restore_as_new`), the snapshot is restored under the other of two names, and the old
  runtime is removed only after the restored one answers (the record's handle switching is the
  commit point). Otherwise (one port per runtime) the old runtime is first checkpointed into a
  safety archive and stopped, the snapshot restored, and any failure restores the safety
  archive: the user never ends with no runtime.
- **fork**: a live checkpoint restored as a second, disposable runtime under another name;
  reachable through the API (`POST /api/v1/users/<id>/forks/<name>/execute`), never adopted
  after a daemon restart (forks are removed at start-up).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ...dial import http_request
from ...errors import (
    CheckpointError,
    CheckpointUnavailable,
    Conflict,
    MarkcoError,
    NotFound,
    RestoreIncompatible,
)
from ...records import Operation, OperationState, RuntimeState, Snapshot, WorkloadRole
from ...roles import STATUS_RUNNING, Checkpointer, ContainerInfo, ContainerSpec, workload_name
from . import archives, elasticity, probes, specs
from .status import (
    PHASE_ASLEEP,
    PHASE_FAILED,
    PHASE_READY,
    PHASE_SLEEPING,
    PHASE_SNAPSHOT,
    PHASE_WAKING,
)

if TYPE_CHECKING:
    from pathlib import Path

    from .actor import Ticket, UserActor

log = logging.getLogger("markco.compute.checkpoints")

RUNTIME, EDITOR = WorkloadRole.RUNTIME, WorkloadRole.EDITOR
LABEL_FORK = "markco.fork"
ALTERNATE_SUFFIX = "-r"
_FORK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")


def new_token() -> str:
    """A fresh name part for an archive, fixed before its operation is logged."""
    return uuid.uuid4().hex


def checkpointer_for(actor: UserActor, *, new_name: bool = False) -> Checkpointer:
    """The configured checkpointer, if it can checkpoint this backend's runtimes."""
    from .actor import OperationFailed

    svc = actor.svc
    checkpointer = svc.ctx.checkpointer
    if checkpointer is None:
        raise OperationFailed("checkpointing is not configured on this markco: set "
                              "[checkpoint] provider = \"criu\"")
    caps = checkpointer.capabilities(svc.backend)
    if not caps.checkpoint:
        raise OperationFailed("the checkpointer cannot checkpoint this backend's runtimes"
                              + (f": {'; '.join(caps.notes)}" if caps.notes else ""))
    if new_name and not caps.restore_as_new:
        raise OperationFailed("this checkpointer cannot restore a runtime next to its original"
                              + (f": {'; '.join(caps.notes)}" if caps.notes else ""))
    return checkpointer


def alternate_handle(actor: UserActor, current: str) -> str:
    """The other of the two names a user's runtime alternates between across restores."""
    base = workload_name(actor.svc.deployment_id, actor.user_id, RUNTIME)
    return base + ALTERNATE_SUFFIX if current == base else base


def fork_handle(actor: UserActor, name: str) -> str:
    """The workload name of the fork `name`."""
    return workload_name(actor.svc.deployment_id, actor.user_id, RUNTIME) + f"-fork-{name}"


async def _runtime_spec(actor: UserActor, op: Operation, *, name: str,
                        port: int | None) -> ContainerSpec:
    svc = actor.svc
    user = await svc.storage.get_user(actor.user_id)
    if user is None:
        from .actor import OperationFailed

        raise OperationFailed(f"user {actor.user_id} does not exist")
    plan, limits = svc.options.limits_for(user.plan)
    # A limit elasticity raised (kept by the sleep's record) is restored: the image does not
    # fit the plan's own limit.
    record = await actor.live_record(RUNTIME)
    limits = elasticity.restore_limits(record.limits if record else None, plan, limits)
    spec = specs.runtime_spec(deployment_id=svc.deployment_id, user=user,
                              user_dir=svc.user_dir(actor.user_id), limits=limits,
                              options=svc.options, caps=svc.capabilities, operation_id=op.id)
    return dataclasses.replace(spec, name=name, port=port)


def _port_of(address: str | None) -> int | None:
    if not address:
        return None
    return int(address.rpartition(":")[2])


async def _stats_bytes(actor: UserActor, handle: str) -> int:
    try:
        return (await actor.svc.backend.stats(handle)).memory_working_set
    except MarkcoError:
        return 64 * archives.MiB


async def _check_room(actor: UserActor, handle: str) -> Path:
    svc, options = actor.svc, actor.svc.options
    directory = await trio.to_thread.run_sync(archives.user_archive_dir, svc.archive_root,
                                              actor.user_id)
    need = int(await _stats_bytes(actor, handle) * 1.1)
    try:
        await trio.to_thread.run_sync(lambda: archives.check_room(
            directory, need_bytes=need, max_bytes=options.snapshots_max_mib * archives.MiB,
            min_free_bytes=options.snapshots_min_free_mib * archives.MiB))
    except archives.NoRoom as exc:
        from .actor import OperationFailed

        raise OperationFailed(f"{exc}; your runtime keeps running") from None
    return directory


async def _drain(actor: UserActor) -> None:
    """Hold new requests at the front (the runtime is not `ready`) and let the ones being
    forwarded finish (bounded), so no connection to the runtime is open during the dump."""
    actor.ready[RUNTIME] = False
    actor.changed()
    if actor.front is not None:
        cut = await actor.front.drain(actor.svc.options.sleep_drain_seconds)
        if cut:
            log.info("compute: %s request(s) to the runtime of %s were cut for a checkpoint",
                     cut, actor.user_id)


async def _room_and_drain(actor: UserActor, op: Operation, handle: str) -> None:
    """Before a checkpoint of `handle`: room for its archive (`_check_room`), then the step
    `drain` and the front drained (`_drain`)."""
    await _check_room(actor, handle)
    await actor.step(op, "drain")
    await _drain(actor)


async def _resume(actor: UserActor, handle: str) -> None:
    """After a checkpoint that left the runtime running (or failed): ready again if it runs."""
    try:
        info = await actor.svc.backend.inspect(handle)
    except NotFound:
        return
    if info.status == STATUS_RUNNING:
        actor.ready[RUNTIME] = True
        actor.changed()


async def _checkpoint(actor: UserActor, checkpointer: Checkpointer, handle: str, path: Path, *,
                      leave_running: bool, op: Operation | None = None) -> tuple[Any, int]:
    """Dump `handle` into `path` and seal it (0600, fsynced). Disk-full errors get a clear
    message; a failed checkpoint leaves no file and the workload as it was."""
    from .actor import OperationFailed

    try:
        result = await checkpointer.checkpoint(actor.svc.backend, handle,
                                               archive_path=str(path),
                                               leave_running=leave_running)
        if op is not None:
            await actor.step(op, "fsync")
        size = await trio.to_thread.run_sync(archives.seal, path)
    except (CheckpointError, OSError) as exc:
        await trio.to_thread.run_sync(archives.remove_file, path)
        if archives.is_disk_full(exc):
            raise OperationFailed("the disk is full: the checkpoint could not be written; "
                                  "your runtime keeps running") from exc
        raise OperationFailed(f"the checkpoint failed: {exc}") from exc
    return result, size


async def _checkpoint_step(actor: UserActor, checkpointer: Checkpointer, op: Operation,
                           handle: str, path: Path, *, leave_running: bool,
                           fsync_step: bool = False) -> tuple[Any, int]:
    """The step `checkpoint` of `op`: `_checkpoint` under the daemon's checkpoint limiter
    (`fsync_step`: with its own step `fsync`)."""
    await actor.step(op, "checkpoint")
    async with actor.svc.checkpoint_limiter:
        return await _checkpoint(actor, checkpointer, handle, path,
                                 leave_running=leave_running, op=op if fsync_step else None)


# ------------------------------------------------------------------------------------ sleep


async def run_sleep(actor: UserActor, ticket: Ticket) -> None:
    """Checkpoint the runtime and stop it; stop the editor (see the module doc)."""
    from .actor import OperationFailed

    svc = actor.svc
    record = await actor.live_record(RUNTIME)
    if record is not None and record.state == RuntimeState.SLEEPING:
        actor.progress(PHASE_ASLEEP, "asleep", done=True)
        return
    if record is None or not actor.ready[RUNTIME]:
        raise OperationFailed("the runtime is not running: there is nothing to put to sleep")
    checkpointer = checkpointer_for(actor)
    handle = actor.handle(RUNTIME)
    path = archives.archive_path(svc.archive_root, actor.user_id, "sleep", new_token())
    op = await actor.open_operation("sleep", frozenset({RUNTIME, EDITOR}), ticket.reason,
                                    runtime=handle, archive=str(path), runtime_id=record.id)
    started = trio.current_time()
    actor.progress(PHASE_SLEEPING, "putting your runtime to sleep")
    try:
        await _room_and_drain(actor, op, handle)
        # The critical section: a checkpoint half-done is worse than a slow exit.
        with trio.CancelScope(shield=True):
            result, size = await _checkpoint_step(actor, checkpointer, op, handle, path,
                                                  leave_running=False, fsync_step=True)
            await actor.step(op, "record")
            snapshot = await svc.storage.create_snapshot(
                user_id=actor.user_id, runtime_id=record.id, name=f"sleep-{op.id[:8]}",
                path=str(path), size_bytes=size, sha256=result.sha256,
                depends_on=dict(result.depends_on), now=svc.now(), kind="sleep")
            # Committed: the archive is the runtime now.
            actor.addresses[RUNTIME] = None
            await actor.update(RUNTIME, state=RuntimeState.SLEEPING, address=None,
                               operation_id=op.id, reason=f"asleep ({ticket.reason})")
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await _resume(actor, handle)
            if isinstance(exc, Exception):
                await actor.close(op, OperationState.FAILED, error=str(exc))
        raise
    # Committed. What remains — removing the dumped runtime, stopping the stateless editor —
    # is tidying up: done right after, under the actor's lock, so the caller does not wait for
    # the editor's stop (a wake queued meanwhile goes first and makes it moot). At shutdown
    # (`inline`) it is done here: the actor's tasks are about to end.
    took = round((trio.current_time() - started) * 1000)
    actor.desired.difference_update({RUNTIME, EDITOR})
    actor.ready[EDITOR] = False
    actor.addresses[EDITOR] = None
    actor.changed()
    if ticket.args.get("inline"):
        with trio.CancelScope(shield=True):
            await _finish_sleep(actor, op, handle)
    else:
        actor.spawn(partial(_finish_sleep_later, actor, op, handle))
    steps = actor.step_timings(op)
    log.info("compute: %s asleep in %d ms (%s), archive %.1f MiB", actor.user_id, took,
             steps, size / archives.MiB)
    await svc.publish("runtime.sleeping", actor.user_id, {
        "reason": ticket.reason, "operation_id": op.id, "snapshot_id": snapshot.id,
        "size_bytes": size, "took_ms": took, "steps_ms": steps})
    actor.progress(PHASE_ASLEEP, "asleep: open the editor or run code to wake it", done=True)


async def _finish_sleep(actor: UserActor, op: Operation, handle: str) -> None:
    """The last step of a sleep: the dumped runtime and the editor removed (at once), the
    editor's record `stopped`, the operation closed. Idempotent."""
    await actor.step(op, "remove")

    async def stop_editor() -> None:
        await actor.remove_workload(EDITOR)
        if actor.records[EDITOR] is not None:
            await actor.update(EDITOR, state=RuntimeState.STOPPED,
                               reason="stopped while the runtime sleeps")
            actor.records[EDITOR] = None

    async with trio.open_nursery() as nursery:
        nursery.start_soon(actor.remove_handle, handle)
        nursery.start_soon(stop_editor)
    await actor.close(op, OperationState.DONE)


async def _finish_sleep_later(actor: UserActor, op: Operation, handle: str) -> None:
    """`_finish_sleep` under the actor's lock — unless a wake (or a start) came first: it has
    removed the dumped runtime itself and kept the editor, so only the operation is closed."""
    async with actor.lock:
        try:
            record = actor.records[RUNTIME]
            if record is not None and record.state == RuntimeState.SLEEPING:
                with trio.CancelScope(shield=True):
                    await _finish_sleep(actor, op, handle)
            else:
                await actor.close(op, OperationState.DONE)
        except Exception:
            log.exception("compute: tidying up after the sleep of %s failed (reconciliation "
                          "finishes it at the next start)", actor.user_id)
        finally:
            actor.changed()


# ------------------------------------------------------------------------------------- wake


async def latest_sleep_image(actor: UserActor) -> Snapshot | None:
    """The user's newest sleep image."""
    images = await actor.svc.storage.list_snapshots(actor.user_id, kind="sleep")
    return images[-1] if images else None


async def run_wake(actor: UserActor, ticket: Ticket) -> None:
    """Restore the runtime from its sleep image while the editor starts; fall back to a cold
    start (files intact, the user told) when the restore cannot work."""
    from .actor import OperationFailed, first_leaf

    svc = actor.svc
    record = await actor.live_record(RUNTIME)
    assert record is not None
    image = await latest_sleep_image(actor)
    roles = ticket.roles | {RUNTIME}
    op = await actor.open_operation("wake", frozenset(roles), ticket.reason,
                                    runtime=actor.handle(RUNTIME),
                                    snapshot_id=image.id if image else None,
                                    archive=image.path if image else None)
    started = trio.current_time()
    actor.desired.update(roles)
    actor.notice = actor.notice_id = None
    actor.progress(PHASE_WAKING, "waking your runtime")
    await actor.update(RUNTIME, state=RuntimeState.WAKING, operation_id=op.id)
    restored: dict[str, Any] = {"restored": False, "why": None}
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_wake_runtime, actor, op, record.address, image, restored)
            if EDITOR in roles and not actor.ready[EDITOR]:
                nursery.start_soon(actor.start_editor, op)
    except ExceptionGroup as group:
        exc = first_leaf(group)
        with trio.CancelScope(shield=True):
            await actor.start_failed(op, frozenset(roles), exc if isinstance(exc, Exception)
                                     else RuntimeError(str(exc)))
        raise OperationFailed(str(exc)) from None
    # Committed: the runtime answers. Only now does the sleep image go.
    with trio.CancelScope(shield=True):
        await actor.step(op, "release")
        if image is not None:
            await release_image(actor, image)
        await actor.close(op, OperationState.DONE)
    actor.reset_crashes()
    took = round((trio.current_time() - started) * 1000)
    steps = actor.step_timings(op)
    log.info("compute: %s awake in %d ms (%s)", actor.user_id, took, steps)
    await svc.publish("runtime.woken", actor.user_id, {
        "reason": ticket.reason, "operation_id": op.id, "took_ms": took, "steps_ms": steps,
        "restored": restored["restored"], "fallback_reason": restored["why"]})
    actor.progress(PHASE_READY, actor.notice or "ready", ready=True, done=True)


async def release_image(actor: UserActor, image: Snapshot) -> None:
    """Forget a sleep image: the row first (a file without a row is garbage), then the file."""
    await actor.svc.storage.delete_snapshot(image.id)
    await trio.to_thread.run_sync(archives.remove_file, archives_path(image))


def archives_path(image: Snapshot) -> Path:
    from pathlib import Path

    return Path(image.path)


async def _wake_runtime(actor: UserActor, op: Operation, address: str | None,
                        image: Snapshot | None, outcome: dict[str, Any]) -> None:
    svc = actor.svc
    handle = actor.handle(RUNTIME)
    why: str | None = None
    info: ContainerInfo | None = None
    if image is None:
        why = "its sleep image is missing"
    else:
        try:
            checkpointer = checkpointer_for(actor)
            await actor.step(op, "runtime.restore")
            info = await restore_archive(actor, checkpointer, op, image, name=handle,
                                         port=_port_of(address))
            await actor.step(op, "runtime.ready")
            await actor.await_ready(RUNTIME, info)
            outcome["restored"] = True
        except (CheckpointError, MarkcoError, probes.NotReadyError) as exc:
            why = str(exc)
            await actor.remove_handle(handle)
            info = None
    if info is None:
        actor.notice = (f"Your runtime could not be restored ({why}), so a fresh one was "
                        f"started: your files are intact, your variables are not.")
        actor.notice_id = op.id
        outcome["why"] = why
        log.warning("compute: waking %s: %s", actor.user_id, actor.notice)
        await svc.publish("runtime.restore_failed", actor.user_id, {
            "reason": why, "operation_id": op.id,
            "snapshot_id": image.id if image else None})
        actor.progress(PHASE_WAKING, actor.notice)
        await actor.step(op, "runtime.launch")
        info = await actor.launch_runtime(op)
        await actor.await_ready(RUNTIME, info)
    actor.addresses[RUNTIME] = actor.parse(info.address)
    await actor.update(RUNTIME, state=RuntimeState.RUNNING, handle=info.handle,
                       address=info.address, reason=None, operation_id=op.id)
    actor.ready[RUNTIME] = True
    actor.changed()
    await svc.publish("runtime.started", actor.user_id, {
        "address": info.address, "operation": "wake", "operation_id": op.id,
        "restored": outcome["restored"]})
    # The runtime answers; what is left of the wake (if anything) is the editor's start, so
    # `steps_ms` says how long the page waited for the editor, apart from the runtime.
    await actor.step(op, "editor")


async def restore_archive(actor: UserActor, checkpointer: Checkpointer, op: Operation,
                          snapshot: Snapshot, *, name: str, port: int | None) -> ContainerInfo:
    """Restore `snapshot`'s archive as the workload `name` (a leftover of that name — the
    dumped runtime, a half-restored one — is removed first). The checkpointer verifies the
    archive against the sha256 its row recorded in the pass that reads it, before anything
    is restored (`RestoreIncompatible` when damaged): it is read once, not hashed here first."""
    await actor.remove_handle(name)
    spec = await _runtime_spec(actor, op, name=name, port=port)
    await actor.step(op, "runtime.restore.criu")
    async with actor.svc.checkpoint_limiter:
        return await checkpointer.restore(actor.svc.backend, snapshot.path, spec=spec,
                                          sha256=snapshot.sha256)


# --------------------------------------------------------------------------------- snapshots


async def run_snapshot(actor: UserActor, ticket: Ticket) -> Snapshot:
    """A named snapshot of the running runtime, which keeps running."""
    from .actor import OperationFailed

    svc = actor.svc
    name = str(ticket.args.get("name") or "")
    if not archives.snapshot_name_ok(name):
        raise OperationFailed("a snapshot name is 1 to 64 letters, digits, '.', '_' or '-'")
    if any(s.name == name for s in await svc.storage.list_snapshots(actor.user_id,
                                                                     kind="named")):
        raise OperationFailed(f"a snapshot named {name!r} exists")
    record = await actor.live_record(RUNTIME)
    if record is None or not actor.ready[RUNTIME]:
        raise OperationFailed("the runtime is not running: start it first")
    checkpointer = checkpointer_for(actor)
    handle = actor.handle(RUNTIME)
    path = archives.archive_path(svc.archive_root, actor.user_id, "named", new_token())
    op = await actor.open_operation("snapshot", frozenset({RUNTIME}), ticket.reason,
                                    runtime=handle, archive=str(path), name=name)
    actor.progress(PHASE_SNAPSHOT, f"taking the snapshot {name!r}")
    try:
        await _room_and_drain(actor, op, handle)
        with trio.CancelScope(shield=True):
            result, size = await _checkpoint_step(actor, checkpointer, op, handle, path,
                                                  leave_running=True)
            await _resume(actor, handle)
            await actor.step(op, "record")
            try:
                snapshot = await svc.storage.create_snapshot(
                    user_id=actor.user_id, runtime_id=record.id, name=name, path=str(path),
                    size_bytes=size, sha256=result.sha256, depends_on=dict(result.depends_on),
                    now=svc.now(), kind="named")
            except Conflict as exc:
                await trio.to_thread.run_sync(archives.remove_file, path)
                raise OperationFailed(str(exc)) from None
            await actor.close(op, OperationState.DONE)
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await _resume(actor, handle)
            if isinstance(exc, Exception):
                await actor.close(op, OperationState.FAILED, error=str(exc))
        raise
    await enforce_retention(actor)
    await svc.publish("snapshot.created", actor.user_id, {
        "snapshot_id": snapshot.id, "name": name, "size_bytes": size,
        "duration_ms": result.duration_ms, "operation_id": op.id})
    actor.progress(PHASE_READY, f"snapshot {name!r} taken", ready=actor.ready_for(
        frozenset(actor.desired)), done=True)
    return snapshot


async def enforce_retention(actor: UserActor) -> list[Snapshot]:
    """Remove the oldest named snapshots beyond `snapshots_keep` (sleep images are kept until
    woken); return what was removed."""
    keep = actor.svc.options.snapshots_keep
    named = await actor.svc.storage.list_snapshots(actor.user_id, kind="named")
    removed = named[:max(0, len(named) - keep)]
    for snapshot in removed:
        await delete_snapshot_files(actor, snapshot)
        await actor.svc.publish("snapshot.deleted", actor.user_id, {
            "snapshot_id": snapshot.id, "name": snapshot.name, "reason": "retention"})
    return removed


async def delete_snapshot_files(actor: UserActor, snapshot: Snapshot) -> None:
    """The row, then the file (idempotent)."""
    from pathlib import Path

    await actor.svc.storage.delete_snapshot(snapshot.id)
    await trio.to_thread.run_sync(archives.remove_file, Path(snapshot.path))


async def run_delete(actor: UserActor, ticket: Ticket) -> None:
    """Delete a named snapshot (its row, then its file)."""
    from .actor import OperationFailed

    snapshot = await find_snapshot(actor, str(ticket.args.get("snapshot") or ""))
    op = await actor.open_operation("snapshot.delete", frozenset(), ticket.reason,
                                    snapshot_id=snapshot.id, archive=snapshot.path)
    try:
        await delete_snapshot_files(actor, snapshot)
    except MarkcoError as exc:
        await actor.close(op, OperationState.FAILED, error=str(exc))
        raise OperationFailed(f"the snapshot could not be deleted: {exc}") from exc
    await actor.close(op, OperationState.DONE)
    await actor.svc.publish("snapshot.deleted", actor.user_id, {
        "snapshot_id": snapshot.id, "name": snapshot.name, "reason": ticket.reason})


async def find_snapshot(actor: UserActor, key: str) -> Snapshot:
    """A named snapshot of the user, by id or by name."""
    from .actor import OperationFailed

    for snapshot in await actor.svc.storage.list_snapshots(actor.user_id, kind="named"):
        if key in (snapshot.id, snapshot.name):
            return snapshot
    raise OperationFailed(f"no snapshot {key!r}")


# ----------------------------------------------------------------------------------- restore


async def run_restore(actor: UserActor, ticket: Ticket) -> None:
    """Replace the running runtime by a named snapshot of it."""
    from .actor import OperationFailed

    svc = actor.svc
    snapshot = await find_snapshot(actor, str(ticket.args.get("snapshot") or ""))
    record = await actor.live_record(RUNTIME)
    if record is None or not actor.ready[RUNTIME]:
        raise OperationFailed("the runtime is not running: start (or wake) it first")
    checkpointer = checkpointer_for(actor)
    caps = checkpointer.capabilities(svc.backend)
    old = actor.handle(RUNTIME)
    new = alternate_handle(actor, old) if caps.restore_as_new else old
    safety = archives.archive_path(svc.archive_root, actor.user_id, "safety", new_token())
    op = await actor.open_operation("restore", frozenset({RUNTIME}), ticket.reason,
                                    runtime=old, new=new, snapshot_id=snapshot.id,
                                    safety=None if caps.restore_as_new else str(safety))
    actor.progress(PHASE_WAKING, f"restoring the snapshot {snapshot.name!r}")
    started = trio.current_time()
    try:
        if not caps.restore_as_new:
            # In place, the running runtime is stopped (kept in a safety archive) before the
            # snapshot is restored: a damaged snapshot is refused before that. Beside it, the
            # restore's own check refuses it while the runtime runs on untouched.
            await trio.to_thread.run_sync(archives.verify, archives_path(snapshot),
                                          snapshot.sha256)
        if caps.restore_as_new:
            info = await _restore_beside(actor, checkpointer, op, snapshot, old, new)
        else:
            info = await _restore_in_place(actor, checkpointer, op, snapshot, old, safety,
                                           record.address)
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await _resume(actor, actor.handle(RUNTIME))
            if isinstance(exc, Exception):
                await actor.close(op, OperationState.FAILED, error=str(exc))
                actor.progress(PHASE_FAILED, f"the snapshot could not be restored: {exc}; "
                               "your runtime is as it was", failed=True, done=True)
        if isinstance(exc, MarkcoError) and not isinstance(exc, OperationFailed):
            raise OperationFailed(f"the snapshot could not be restored: {exc}") from exc
        raise
    await actor.close(op, OperationState.DONE)
    actor.reset_crashes()
    await svc.publish("snapshot.restored", actor.user_id, {
        "snapshot_id": snapshot.id, "name": snapshot.name, "operation_id": op.id,
        "address": info.address, "took_ms": round((trio.current_time() - started) * 1000)})
    actor.progress(PHASE_READY, f"snapshot {snapshot.name!r} restored",
                   ready=actor.ready_for(frozenset(actor.desired)), done=True)


async def _switch(actor: UserActor, op: Operation, info: ContainerInfo) -> None:
    """The commit point of a restore: the record names the restored runtime."""
    await actor.step(op, "switch")
    await actor.update(RUNTIME, handle=info.handle, address=info.address,
                       state=RuntimeState.RUNNING, operation_id=op.id, reason=None)
    actor.addresses[RUNTIME] = actor.parse(info.address)
    actor.ready[RUNTIME] = True
    actor.changed()


async def _restore_beside(actor: UserActor, checkpointer: Checkpointer, op: Operation,
                          snapshot: Snapshot, old: str, new: str) -> ContainerInfo:
    await actor.step(op, "restore")
    info = await restore_archive(actor, checkpointer, op, snapshot, name=new, port=None)
    try:
        await actor.await_ready(RUNTIME, info)
    except BaseException:
        with trio.CancelScope(shield=True):
            await actor.remove_handle(new)
        raise
    await _drain(actor)
    await _switch(actor, op, info)
    await actor.step(op, "remove-old")
    await actor.remove_handle(old)
    return info


async def _restore_in_place(actor: UserActor, checkpointer: Checkpointer, op: Operation,
                            snapshot: Snapshot, old: str, safety: Path,
                            address: str | None) -> ContainerInfo:
    """One port per runtime: keep the old one in a safety archive while the snapshot is
    restored; any failure restores the safety archive."""
    from .actor import OperationFailed

    await _room_and_drain(actor, op, old)
    with trio.CancelScope(shield=True):
        await actor.step(op, "safety")
        result, size = await _checkpoint(actor, checkpointer, old, safety, leave_running=False)
        safety_row = Snapshot(id="", user_id=actor.user_id, runtime_id=None, name="safety",
                              path=str(safety), size_bytes=size, sha256=result.sha256,
                              created_at=actor.svc.now(), kind="fork")
        try:
            await actor.step(op, "restore")
            info = await restore_archive(actor, checkpointer, op, snapshot, name=old,
                                         port=_port_of(address))
            await actor.await_ready(RUNTIME, info)
        except (MarkcoError, probes.NotReadyError) as exc:
            log.warning("compute: restoring %s's snapshot failed (%s); putting the runtime "
                        "back", actor.user_id, exc)
            await actor.step(op, "resume")
            try:
                back = await restore_archive(actor, checkpointer, op, safety_row, name=old,
                                             port=_port_of(address))
                await actor.await_ready(RUNTIME, back)
                await _switch(actor, op, back)
            except (MarkcoError, probes.NotReadyError) as again:
                raise OperationFailed(f"the snapshot could not be restored ({exc}), nor the "
                                      f"runtime put back ({again})") from again
            finally:
                await trio.to_thread.run_sync(archives.remove_file, safety)
            raise OperationFailed(f"the snapshot could not be restored: {exc}; your runtime "
                                  f"is as it was") from exc
        await _switch(actor, op, info)
        await trio.to_thread.run_sync(archives.remove_file, safety)
    return info


# ------------------------------------------------------------------------------------- forks


async def run_fork(actor: UserActor, ticket: Ticket) -> ContainerInfo:
    """A second, disposable runtime from a live checkpoint; the original keeps running."""
    from .actor import OperationFailed

    svc = actor.svc
    name = str(ticket.args.get("name") or "")
    if not _FORK_NAME.match(name):
        raise OperationFailed("a fork name is 1 to 20 lower-case letters, digits or '-'")
    if name in actor.forks:
        raise OperationFailed(f"a fork named {name!r} exists")
    if len(actor.forks) >= svc.options.max_forks:
        raise OperationFailed(f"at most {svc.options.max_forks} forks at once: remove one")
    record = await actor.live_record(RUNTIME)
    if record is None or not actor.ready[RUNTIME]:
        raise OperationFailed("the runtime is not running: start it first")
    checkpointer = checkpointer_for(actor, new_name=True)
    handle = actor.handle(RUNTIME)
    target = fork_handle(actor, name)
    path = archives.archive_path(svc.archive_root, actor.user_id, "fork", new_token())
    op = await actor.open_operation("fork", frozenset({RUNTIME}), ticket.reason,
                                    runtime=handle, fork=target, archive=str(path), name=name)
    actor.progress(PHASE_SNAPSHOT, f"forking your runtime as {name!r}")
    try:
        await _check_room(actor, handle)
        await _drain(actor)
        with trio.CancelScope(shield=True):
            result, size = await _checkpoint_step(actor, checkpointer, op, handle, path,
                                                  leave_running=True)
            await _resume(actor, handle)
        image = Snapshot(id="", user_id=actor.user_id, runtime_id=None, name=name,
                         path=str(path), size_bytes=size, sha256=result.sha256,
                         created_at=svc.now(), kind="fork")
        await actor.step(op, "restore")
        spec_port = None
        info = await restore_archive(actor, checkpointer, op, image, name=target,
                                     port=spec_port)
        try:
            await actor.await_ready(RUNTIME, info)
        except BaseException:
            with trio.CancelScope(shield=True):
                await actor.remove_handle(target)
            raise
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await _resume(actor, handle)
            await trio.to_thread.run_sync(archives.remove_file, path)
            if isinstance(exc, Exception):
                await actor.close(op, OperationState.FAILED, error=str(exc))
        if isinstance(exc, MarkcoError) and not isinstance(exc, OperationFailed):
            raise OperationFailed(f"the fork failed: {exc}") from exc
        raise
    await trio.to_thread.run_sync(archives.remove_file, path)
    actor.forks[name] = info
    await actor.close(op, OperationState.DONE)
    await svc.publish("runtime.forked", actor.user_id, {
        "name": name, "handle": info.handle, "operation_id": op.id})
    actor.progress(PHASE_READY, f"fork {name!r} ready", ready=actor.ready_for(
        frozenset(actor.desired)), done=True)
    return info


async def run_unfork(actor: UserActor, ticket: Ticket) -> None:
    """Remove a fork."""
    from .actor import OperationFailed

    name = str(ticket.args.get("name") or "")
    info = actor.forks.pop(name, None)
    if info is None:
        raise OperationFailed(f"no fork {name!r}")
    await actor.remove_handle(info.handle)
    actor.changed()
    await actor.svc.publish("runtime.fork_removed", actor.user_id, {"name": name})


def is_unavailable(exc: BaseException) -> bool:
    """Whether an error says checkpointing cannot work here at all."""
    return isinstance(exc, CheckpointUnavailable | RestoreIncompatible)


async def post_json(address: str, path: str, body: bytes, *,
                    limit: int = 16 << 20) -> tuple[int, bytes]:
    """A small HTTP/1.1 POST of a JSON body to a workload: (status, body)."""
    return await http_request(address, "POST", path, [
        ("Host", "localhost"), ("Connection", "close"), ("Content-Type", "application/json"),
        ("Content-Length", str(len(body)))], body, limit=limit)
