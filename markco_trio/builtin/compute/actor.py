"""`UserActor`: one user's compute — their runtime, their editor, their runtime front.

Every operation on a user (start, stop, restart, recover after a crash) runs under the actor's
lock, one at a time, and is persisted in the operation log: created with its targets (the
deterministic workload names) before anything exists, advanced step by step, closed `done`,
`failed` or `rolled_back`. Every step is idempotent — "make workload X run with this spec",
"make workload X gone" — so reconciliation after a daemon crash can roll an operation forward
by running it again.

An actor runs in a task of its own under the compute service (created lazily, on first use,
and supervised on its own: one user's failure never touches another's). Its watch loop finds
crashed workloads: a crash is recorded and published, then the workload is restarted after a
backoff; `max_crashes` crashes within `crash_window` seconds end in `failed` with the reason
shown to the user. Out-of-memory kills are counted apart (`oom_kills`) and are not a crash loop:
they follow what the user ran, and a fresh runtime is started at once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ...errors import Conflict, MarkcoError, NotFound
from ...records import (
    LIVE_STATES,
    Operation,
    OperationState,
    Runtime,
    RuntimeState,
    WorkloadRole,
)
from ...roles import (
    STATUS_OOM_KILLED,
    STATUS_RUNNING,
    ContainerInfo,
    ContainerSpec,
    workload_name,
)
from . import checkpoints, elasticity, moves, probes, release, specs
from .front import FrontStatistics, NotReady, RuntimeFront
from .status import (
    PHASE_CRASHED,
    PHASE_EDITOR_STARTING,
    PHASE_FAILED,
    PHASE_QUEUED,
    PHASE_READY,
    PHASE_RESTARTING,
    PHASE_RUNTIME_STARTING,
    PHASE_STOPPED,
    PHASE_STOPPING,
    PHASE_WAITING,
    PHASE_WORKSPACE,
    Progress,
    UserComputeState,
    WorkloadStatus,
)
from .workspace import scaffold

if TYPE_CHECKING:
    from .service import ComputeService

log = logging.getLogger("markco.compute")

BOTH = frozenset({WorkloadRole.RUNTIME, WorkloadRole.EDITOR})
EXECUTED_KEPT = 8  # executed cells kept for the monitor's hints between two of its polls
START_ORDER = (WorkloadRole.RUNTIME, WorkloadRole.EDITOR)  # the editor is the runtime's client
STOP_ORDER = (WorkloadRole.EDITOR, WorkloadRole.RUNTIME)


PHASE_UNAVAILABLE = "unavailable"  # the host of the user's workloads does not answer


class OperationFailed(MarkcoError):
    """An operation on a user failed; the message is fit to show them."""


@dataclass
class Ticket:
    """A requested operation: `done` is set when it ends; `error` says why it failed."""

    kind: str
    roles: frozenset[WorkloadRole]
    reason: str
    done: trio.Event = field(default_factory=trio.Event)
    error: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    result: Any = None

    async def wait(self) -> None:
        """Wait for the end; raise `OperationFailed` when it failed."""
        await self.done.wait()
        if self.error is not None:
            raise OperationFailed(self.error)


def first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first non-group exception inside `group`."""
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


_first_leaf = first_leaf


def parse_address(address: str | None) -> tuple[str, int] | None:
    """`"host:port"` → (host, port)."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class UserActor:
    """The lifecycle of one user's workloads (see the module doc)."""

    def __init__(self, service: ComputeService, user_id: str) -> None:
        self.svc = service
        self.user_id = user_id
        self.lock = trio.Lock()
        self.records: dict[WorkloadRole, Runtime | None] = {r: None for r in BOTH}
        self.addresses: dict[WorkloadRole, tuple[str, int] | None] = {r: None for r in BOTH}
        self.ready: dict[WorkloadRole, bool] = {r: False for r in BOTH}
        self.desired: set[WorkloadRole] = set()
        self.crashes: dict[WorkloadRole, deque[float]] = {r: deque() for r in BOTH}
        self.recovering: set[WorkloadRole] = set()
        self.operation: str | None = None
        self.phase = "idle"
        self.message = ""
        self.last_activity: float | None = None
        # The last time of each kind of activity (navigation, request, input, execution):
        # the monitor decides idleness from them (DESIGN §3.3).
        self.activity: dict[str, float] = {}
        # Code executed through the runtime front, not yet read by the monitor's hint analysis
        # (bounded: the latest cells only).
        self.executed: deque[str] = deque(maxlen=EXECUTED_KEPT)
        self.front: RuntimeFront | None = None
        self.notice: str | None = None
        self.notice_id: str | None = None  # which notice (the operation that raised it)
        self.forks: dict[str, ContainerInfo] = {}
        self.step_times: dict[str, dict[str, int]] = {}
        self._step_started: dict[str, tuple[str, float]] = {}
        self._changed = trio.Event()
        self._tickets: list[Ticket] = []
        self._nursery: trio.Nursery | None = None
        self._queued: list[Callable[[], Awaitable[None]]] = []
        self._last_plan_check = 0.0

    # ------------------------------------------------------------------ state and progress

    def changed(self) -> None:
        """Wake everyone waiting for this user's state to change."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Wait for the next change of state."""
        await self._changed.wait()

    def progress(self, phase: str, message: str, *, ready: bool = False, failed: bool = False,
                 done: bool = False) -> None:
        """Record and broadcast a step (it also wakes waiters)."""
        self.phase, self.message = phase, message
        self.svc.progress.publish(Progress(self.user_id, phase, message, self.svc.now(),
                                           ready=ready, failed=failed, done=done))
        self.changed()

    def busy(self) -> bool:
        """An operation is running, queued, or a crashed workload awaits its restart."""
        return self.operation is not None or bool(self.recovering) or \
            any(not t.done.is_set() for t in self._tickets)

    def snapshot(self) -> UserComputeState:
        """The user's state now (no I/O)."""
        def status(role: WorkloadRole) -> WorkloadStatus:
            rec = self.records[role]
            address = self.addresses[role]
            return WorkloadStatus(
                role=role, state=rec.state if rec else None, ready=self.ready[role],
                address=f"{address[0]}:{address[1]}" if address else None,
                reason=rec.reason if rec else None, restarts=rec.restarts if rec else 0,
                oom_kills=rec.oom_kills if rec else 0, limits=dict(rec.limits) if rec else {})

        stats = self.front.statistics() if self.front else None
        return UserComputeState(
            user_id=self.user_id, runtime=status(WorkloadRole.RUNTIME),
            editor=status(WorkloadRole.EDITOR),
            ready=self.ready[WorkloadRole.EDITOR] and self.ready[WorkloadRole.RUNTIME],
            operation=self.operation, phase=self.phase, message=self.message,
            last_activity_at=self.last_activity,
            executions_in_flight=stats.executions_in_flight if stats else 0,
            notice=self.notice, forks=tuple(sorted(self.forks)))

    def front_statistics(self) -> FrontStatistics | None:
        """The runtime front's counters (None before it exists)."""
        return self.front.statistics() if self.front else None

    # ------------------------------------------------------------------ running the actor

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Serve the runtime front, watch the workloads, run operations; until cancelled."""
        async with trio.open_nursery() as nursery:
            if self.front is None:
                # The user's account first: the front's socket is made theirs.
                await self.svc.backend.prepare_user(self.user_id)
                self.front = self.svc.make_front(self)
            await nursery.start(self.front.serve)
            self._nursery = nursery
            nursery.start_soon(self._watch)
            queued, self._queued = self._queued, []
            for job in queued:
                nursery.start_soon(job)
            task_status.started()
            try:
                # Until the user's workloads are all stopped and nothing is under way: then
                # the front and the watch end too (see `release`; `spawn` brings them back).
                await release.wait_idle(self, self.svc.release_after)
            finally:
                self._nursery = None
            # Made afresh when needed again: its TCP port may be taken by then.
            self.front = None
            nursery.cancel_scope.cancel()

    def spawn(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run `job` in the actor's task (queued while the actor is (re)starting, or released:
        then its task is started again)."""
        if self._nursery is not None:
            self._nursery.start_soon(job)
        else:
            self._queued.append(job)  # the actor's task is (re)starting: run it then
            self.svc.revive(self)

    def submit(self, kind: str, *, roles: frozenset[WorkloadRole] = BOTH,
               reason: str = "", args: dict[str, Any] | None = None) -> Ticket:
        """Queue an operation; a start while another start of the same roles is pending
        joins it (two logins at once start one runtime and one editor); so does a sleep."""
        for ticket in self._tickets:
            if not ticket.done.is_set() and ticket.kind == kind and ticket.roles >= roles \
                    and not args and not ticket.args:
                return ticket
        ticket = Ticket(kind, roles, reason, args=dict(args or {}))
        self._tickets = [t for t in self._tickets if not t.done.is_set()] + [ticket]
        if kind in ("start", "wake") and not self.ready_for(roles):
            record = self.records[WorkloadRole.RUNTIME]
            asleep = record is not None and record.state == RuntimeState.SLEEPING
            self.progress(PHASE_QUEUED, "waiting for the previous operation" if self.operation
                          else "waking your runtime" if asleep else "starting")

        async def job() -> None:
            await self._run_ticket(ticket)

        self.spawn(job)
        return ticket

    def fail_pending(self, reason: str) -> None:
        """The actor's task failed (e.g. preparing the user's account hit a storage that cannot
        write): every operation still waiting fails with `reason` and says so to whoever
        follows the progress — nothing waits forever; the next request tries again."""
        failed = False
        for ticket in self._tickets:
            if not ticket.done.is_set():
                ticket.error = reason
                ticket.done.set()
                failed = True
        if failed:
            self.progress(PHASE_FAILED, reason, failed=True, done=True)

    def ready_for(self, roles: frozenset[WorkloadRole]) -> bool:
        """Every role in `roles` is ready."""
        return all(self.ready[r] for r in roles)

    async def _run_ticket(self, ticket: Ticket) -> None:
        operations: dict[str, Callable[[Ticket], Awaitable[Any]]] = {
            "start": self._op_start, "stop": self._op_stop, "restart": self._op_restart,
            "wake": self._op_start, "sleep": partial(checkpoints.run_sleep, self),
            "snapshot": partial(checkpoints.run_snapshot, self),
            "restore": partial(checkpoints.run_restore, self),
            "snapshot.delete": partial(checkpoints.run_delete, self),
            "fork": partial(checkpoints.run_fork, self),
            "unfork": partial(checkpoints.run_unfork, self),
            "move": partial(moves.run_move, self)}
        if ticket.done.is_set():
            return  # failed while queued: the actor's task could not start (`fail_pending`)
        try:
            async with self.lock:
                self.operation = ticket.kind
                self.changed()
                try:
                    ticket.result = await operations[ticket.kind](ticket)
                finally:
                    self.operation = None
        except OperationFailed as exc:
            ticket.error = str(exc)
        except Exception as exc:
            log.exception("compute: %s of user %s failed", ticket.kind, self.user_id)
            ticket.error = f"{ticket.kind} failed: {exc}"
        finally:
            if ticket.error is not None and not (self.phase == PHASE_FAILED and
                                                 self.message == ticket.error):
                # Every failed operation says so to whoever follows the progress (a wait
                # page must never stay on "starting"); a later attempt starts afresh.
                self.progress(PHASE_FAILED, ticket.error, failed=True, done=True)
            ticket.done.set()
            self.changed()

    # ------------------------------------------------------------------ operations

    async def _open_operation(self, kind: str, roles: frozenset[WorkloadRole],
                              reason: str, **extra: Any) -> Operation:
        targets: dict[str, Any] = {
            role.value: workload_name(self.svc.deployment_id, self.user_id, role)
            for role in roles}
        targets["reason"] = reason
        targets.update(extra)
        return await self.svc.storage.create_operation(
            user_id=self.user_id, kind=kind, targets=targets, now=self.svc.now())

    async def _step(self, op: Operation, step: str) -> None:
        now = trio.current_time()
        last = self._step_started.get(op.id)
        if last is None:  # a new operation (one at a time, under the lock): forget the last
            self._step_started.clear()
            self.step_times.clear()
        else:
            self.step_times.setdefault(op.id, {})[last[0]] = round((now - last[1]) * 1000)
        self._step_started[op.id] = (step, now)
        await self.svc.storage.update_operation(op.id, now=self.svc.now(), step=step)

    def step_timings(self, op: Operation) -> dict[str, int]:
        """Milliseconds each step of `op` took so far (the last one up to now); forgotten
        once read (operators see them in the operation's event)."""
        times = self.step_times.pop(op.id, {})
        last = self._step_started.pop(op.id, None)
        if last is not None:
            times[last[0]] = round((trio.current_time() - last[1]) * 1000)
        return times

    async def _close(self, op: Operation, state: OperationState, error: str | None = None
                     ) -> None:
        with trio.CancelScope(shield=True):
            await self.svc.storage.update_operation(op.id, now=self.svc.now(), state=state,
                                                    error=error)

    # The parts `checkpoints.py` builds its operations from.
    open_operation = _open_operation
    step = _step
    close = _close

    def handle(self, role: WorkloadRole) -> str:
        """The workload's handle now: its record's (a restored runtime may have the other of
        its two names), else the deterministic name."""
        record = self.records[role]
        if record is not None and record.handle and record.state in LIVE_STATES:
            return record.handle
        return workload_name(self.svc.deployment_id, self.user_id, role)

    async def live_record(self, role: WorkloadRole) -> Runtime | None:
        """The live record of `role` (from memory, else storage)."""
        record = self.records[role]
        if record is None or record.state not in LIVE_STATES:
            found = await self.svc.storage.get_live_runtime(self.user_id, role)
            if found is not None:
                self.records[role] = found
            return found
        return record

    async def update(self, role: WorkloadRole, **fields: Any) -> None:
        """Update the record of `role` (persisted) and wake waiters."""
        await self._update(role, **fields)

    async def remove_handle(self, handle: str) -> None:
        """Stop and remove the workload `handle` if it exists."""
        backend = self.svc.backend
        try:
            await backend.stop(handle, timeout=self.svc.options.stop_timeout)
            await backend.remove(handle)
        except NotFound:
            pass

    async def remove_workload(self, role: WorkloadRole) -> None:
        """Stop and remove the workload of `role`."""
        await self._remove_workload(role)

    async def await_ready(self, role: WorkloadRole, info: ContainerInfo) -> None:
        """Wait until the workload answers (`probes.NotReadyError` otherwise)."""
        await self._await_ready(role, info)

    @staticmethod
    def parse(address: str | None) -> tuple[str, int] | None:
        """`"host:port"` → (host, port)."""
        return parse_address(address)

    def reset_crashes(self, roles: frozenset[WorkloadRole] = BOTH) -> None:
        """A successful manual start (start, restart, wake, restore) begins a new crash
        window: crashes before it do not count towards `max_crashes` any more."""
        for role in roles:
            self.crashes[role].clear()

    async def launch_runtime(self, op: Operation) -> ContainerInfo:
        """Cold-start the runtime (a wake's fallback): launched afresh, not yet ready."""
        svc = self.svc
        user = await svc.storage.get_user(self.user_id)
        if user is None:
            raise OperationFailed(f"user {self.user_id} does not exist")
        _, limits = svc.options.limits_for(user.plan)
        spec = specs.runtime_spec(deployment_id=svc.deployment_id, user=user,
                                  user_dir=svc.user_dir(self.user_id), limits=limits,
                                  options=svc.options, caps=svc.capabilities,
                                  operation_id=op.id)
        async with svc.start_limiter:
            return await self._launch(spec, relaunch=True)

    async def start_editor(self, op: Operation) -> None:
        """Launch the editor and wait until it answers (a wake starts it next to the
        runtime's restore)."""
        svc = self.svc
        role = WorkloadRole.EDITOR
        user = await svc.storage.get_user(self.user_id)
        if user is None or user.disabled:
            raise OperationFailed(f"user {self.user_id} does not exist or is disabled")
        plan, _ = svc.options.limits_for(user.plan)
        user_dir = svc.user_dir(self.user_id)
        owner = svc.backend.workload_owner(self.user_id)
        await trio.to_thread.run_sync(lambda: scaffold(
            user_dir, display_name=user.name or user.username, owner=owner))
        spec = specs.editor_spec(
            deployment_id=svc.deployment_id, user=user, user_dir=user_dir, plan=plan,
            front_socket=svc.front_path(self.user_id),
            runtime_port=self.front.tcp_port if self.front else None,
            options=svc.options, caps=svc.capabilities, operation_id=op.id,
            public_url=svc.ctx.config.server.public_url)
        await self._ensure_record(role, op, {"memory_bytes": spec.memory_bytes,
                                             "cpus": spec.cpus}, spec.name)
        async with svc.start_limiter:
            info = await self._launch(spec, relaunch=False)
        self.addresses[role] = parse_address(info.address)
        await self._update(role, handle=info.handle, address=info.address)
        await self._await_ready(role, info)
        await self._update(role, state=RuntimeState.RUNNING, reason=None)
        self.ready[role] = True
        self.changed()
        await svc.publish("editor.started", self.user_id, {
            "address": info.address, "operation": op.kind, "operation_id": op.id})

    async def start_failed(self, op: Operation, roles: frozenset[WorkloadRole],
                           exc: Exception) -> None:
        """A start (or wake) failed: remove what is not ready, record why, tell followers."""
        await self._start_failed(op, roles, exc)

    async def _op_start(self, ticket: Ticket) -> None:
        if WorkloadRole.RUNTIME in ticket.roles:
            runtime = await self.live_record(WorkloadRole.RUNTIME)
            if runtime is not None and runtime.state in (RuntimeState.SLEEPING,
                                                         RuntimeState.WAKING):
                await checkpoints.run_wake(self, ticket)
                return
        if self.ready_for(ticket.roles):
            for role in ticket.roles:
                self.desired.add(role)
            self.progress(PHASE_READY, "ready", ready=True, done=True)
            return
        op = await self._open_operation("start", ticket.roles, ticket.reason)
        await self.run_start(op, ticket.roles)

    async def _op_stop(self, ticket: Ticket) -> None:
        op = await self._open_operation("stop", ticket.roles, ticket.reason)
        await self.run_stop(op, ticket.roles, reason=ticket.reason)
        await self._close(op, OperationState.DONE)

    async def _op_restart(self, ticket: Ticket) -> None:
        op = await self._open_operation("restart", ticket.roles, ticket.reason)
        await self.run_stop(op, ticket.roles, reason=ticket.reason, final=False)
        await self.run_start(op, ticket.roles)

    async def run_start(self, op: Operation, roles: frozenset[WorkloadRole], *,
                        relaunch: bool = False) -> None:
        """Steps of a start: workspace, launch each workload (runtime first), wait until all
        answer, mark them running. On failure what was started is removed, the records say
        `failed` with the reason, and `OperationFailed` is raised. Idempotent."""
        svc = self.svc
        started_at = trio.current_time()
        self.desired.update(roles)
        try:
            user = await svc.storage.get_user(self.user_id)
            if user is None or user.disabled:
                raise OperationFailed(f"user {self.user_id} does not exist or is disabled")
            plan, limits = svc.options.limits_for(user.plan)
            self.progress(PHASE_WORKSPACE, "preparing your files")
            await self._step(op, "workspace")
            user_dir = svc.user_dir(self.user_id)
            owner = svc.backend.workload_owner(self.user_id)
            await trio.to_thread.run_sync(lambda: scaffold(
                user_dir, display_name=user.name or user.username, owner=owner))
            launched: dict[WorkloadRole, ContainerInfo] = {}
            for role in START_ORDER:
                if role not in roles:
                    continue
                if self.ready[role] and not relaunch:
                    continue
                self.progress(PHASE_RUNTIME_STARTING if role == WorkloadRole.RUNTIME
                              else PHASE_EDITOR_STARTING, f"starting your {role.value}")
                await self._step(op, f"{role.value}.launch")
                if role == WorkloadRole.RUNTIME:
                    spec = specs.runtime_spec(
                        deployment_id=svc.deployment_id, user=user, user_dir=user_dir,
                        limits=limits, options=svc.options, caps=svc.capabilities,
                        operation_id=op.id)
                    record_limits = {"plan": plan, "memory_bytes": limits.memory_bytes,
                                     "cpus": limits.cpus}
                else:
                    spec = specs.editor_spec(
                        deployment_id=svc.deployment_id, user=user, user_dir=user_dir,
                        plan=plan, front_socket=svc.front_path(self.user_id),
                        runtime_port=self.front.tcp_port if self.front else None,
                        options=svc.options, caps=svc.capabilities, operation_id=op.id,
                        public_url=svc.ctx.config.server.public_url)
                    record_limits = {"memory_bytes": spec.memory_bytes, "cpus": spec.cpus}
                if self.handle(role) != spec.name:
                    # a restored runtime ran under its other name: that one goes
                    await self.remove_handle(self.handle(role))
                await self._ensure_record(role, op, record_limits, spec.name)
                async with svc.start_limiter:
                    launched[role] = await self._launch(spec, relaunch=relaunch)
                self.addresses[role] = parse_address(launched[role].address)
                await self._update(role, handle=launched[role].handle,
                                   address=launched[role].address)
            self.progress(PHASE_WAITING, "waiting for your workspace to answer")
            await self._step(op, "ready")
            try:
                async with trio.open_nursery() as nursery:
                    for role, info in launched.items():
                        nursery.start_soon(self._await_ready, role, info)
            except ExceptionGroup as group:
                raise _first_leaf(group) from None  # one reason to show, not a group
            took = round((trio.current_time() - started_at) * 1000)
            for role in START_ORDER:
                if role not in launched:
                    continue
                await self._update(role, state=RuntimeState.RUNNING, reason=None)
                self.ready[role] = True
                record = self.records[role]
                await svc.publish(f"{role.value}.started", self.user_id, {
                    "address": launched[role].address, "operation": op.kind,
                    "operation_id": op.id, "took_ms": took,
                    "limits": dict(record.limits) if record else {}})
            await self._close(op, OperationState.DONE)
            if op.kind != "recover":
                self.reset_crashes(roles)
            self.progress(PHASE_READY, "ready", ready=True, done=True)
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                if isinstance(exc, Exception):
                    await self._start_failed(op, roles, exc)
            if isinstance(exc, OperationFailed | MarkcoError):
                raise OperationFailed(str(exc)) from exc
            raise

    async def _start_failed(self, op: Operation, roles: frozenset[WorkloadRole],
                            exc: Exception) -> None:
        reason = str(exc) if isinstance(exc, MarkcoError) else f"{type(exc).__name__}: {exc}"
        log.warning("compute: starting %s for user %s failed: %s", "/".join(
            sorted(r.value for r in roles)), self.user_id, reason)
        for role in STOP_ORDER:
            if role not in roles or self.ready[role]:
                continue
            self.desired.discard(role)
            await self._remove_workload(role)
            if self.records[role] is not None:
                # Kept in memory (not live any more): the state shows `failed` and why.
                await self._update(role, state=RuntimeState.FAILED, reason=reason)
            await self.svc.publish(f"{role.value}.failed", self.user_id,
                                   {"reason": reason, "operation_id": op.id})
        await self._close(op, OperationState.FAILED, error=reason)
        self.progress(PHASE_FAILED, reason, failed=True, done=True)

    async def run_stop(self, op: Operation, roles: frozenset[WorkloadRole], *, reason: str,
                       final: bool = True) -> None:
        """Steps of a stop: the editor first (the runtime's client), then the runtime; each
        stopped, removed, and its record `stopped`. Idempotent."""
        self.desired.difference_update(roles)
        self.progress(PHASE_STOPPING, "stopping")
        for role in STOP_ORDER:
            if role not in roles:
                continue
            await self._step(op, f"{role.value}.stop")
            self.ready[role] = False
            self.addresses[role] = None
            self.changed()
            await self._remove_workload(role)
            record = self.records[role]
            if record is None or record.state not in LIVE_STATES:
                record = await self.svc.storage.get_live_runtime(self.user_id, role)
            if record is not None:
                self.records[role] = record
                await self._update(role, state=RuntimeState.STOPPED,
                                   reason=f"stopped ({reason})" if reason else "stopped")
                self.records[role] = None
                await self.svc.publish(f"{role.value}.stopped", self.user_id,
                                       {"reason": reason, "operation_id": op.id})
        if WorkloadRole.RUNTIME in roles:
            await self.svc.release_host(self.user_id)
        if final:
            self.progress(PHASE_STOPPED, "stopped", done=True)

    # ------------------------------------------------------------------ steps

    async def _ensure_record(self, role: WorkloadRole, op: Operation,
                             limits: dict[str, Any], handle: str) -> None:
        """The live record of `role`, in `starting` (created if none: the schema allows one
        live record per user and role, so a second daemon racing us gets `Conflict`)."""
        storage, now = self.svc.storage, self.svc.now()
        record = await storage.get_live_runtime(self.user_id, role)
        if record is None:
            try:
                record = await storage.create_runtime(
                    user_id=self.user_id, role=role, backend=self.svc.backend.name,
                    host=await self.svc.place(self.user_id, limits),
                    state=RuntimeState.STARTING, limits=limits, now=now,
                    handle=handle, operation_id=op.id)
            except Conflict:
                record = await storage.get_live_runtime(self.user_id, role)
                if record is None:
                    raise
        if record.state != RuntimeState.STARTING or record.operation_id != op.id or \
                record.limits != limits:
            record = await storage.update_runtime(record.id, now=now,
                                                  state=RuntimeState.STARTING,
                                                  operation_id=op.id, limits=limits)
        self.records[role] = record
        self.ready[role] = False
        self.changed()

    async def _update(self, role: WorkloadRole, **fields: Any) -> None:
        record = self.records[role]
        if record is None:
            return
        self.records[role] = await self.svc.storage.update_runtime(
            record.id, now=self.svc.now(), **fields)
        self.changed()

    async def _launch(self, spec: ContainerSpec, *, relaunch: bool) -> ContainerInfo:
        """Make `spec.name` run with `spec`: a running workload is kept unless `relaunch`;
        anything else of that name (exited, crashed, an older spec) is replaced."""
        backend = self.svc.backend
        try:
            info = await backend.inspect(spec.name)
        except NotFound:
            info = None
        if info is not None and info.status == STATUS_RUNNING and not relaunch:
            return info
        if info is not None:
            await backend.remove(spec.name)
        await backend.create(spec)
        return await backend.start(spec.name)

    async def _await_ready(self, role: WorkloadRole, info: ContainerInfo) -> None:
        if info.address is None:
            raise await probes.without_address(self.svc.backend, info, role)
        await probes.wait_ready(self.svc.http, self.svc.backend, info.handle, role,
                                info.address, within=self.svc.options.ready_timeout)

    async def _remove_workload(self, role: WorkloadRole) -> None:
        name = self.handle(role)
        backend = self.svc.backend
        try:
            await backend.stop(name, timeout=self.svc.options.stop_timeout)
            await backend.remove(name)
        except NotFound:
            pass

    # ------------------------------------------------------------------ shutdown

    async def on_shutdown(self, policy: str) -> None:
        """The daemon stops: put the runtime to sleep (and stop the editor) or stop both.
        Called shielded; a runtime that cannot be checkpointed keeps running."""
        try:
            with trio.move_on_after(self.svc.options.stop_timeout + 5):
                await self.lock.acquire()  # the actor's own operations are being cancelled
            if not self.lock.locked():
                log.error("compute: shutdown: the operation of %s did not end; its "
                          "workloads are left as they are", self.user_id)
                return
            try:
                self.operation = policy
                if policy == "sleep" and self.ready[WorkloadRole.RUNTIME]:
                    try:
                        await checkpoints.run_sleep(
                            self, Ticket("sleep", BOTH, "the daemon is stopping",
                                         args={"inline": True}))
                    except OperationFailed as exc:
                        log.error("compute: shutdown: the runtime of %s could not sleep and "
                                  "keeps running: %s", self.user_id, exc)
                elif policy == "sleep":
                    runtime = self.records[WorkloadRole.RUNTIME]
                    if (runtime is None or runtime.state == RuntimeState.SLEEPING) and \
                            self.records[WorkloadRole.EDITOR] is not None:
                        op = await self._open_operation("stop", frozenset(
                            {WorkloadRole.EDITOR}), "the daemon is stopping")
                        await self.run_stop(op, frozenset({WorkloadRole.EDITOR}),
                                            reason="the daemon is stopping")
                        await self._close(op, OperationState.DONE)
                elif policy == "stop" and any(r is not None for r in self.records.values()):
                    op = await self._open_operation("stop", BOTH, "the daemon is stopping")
                    await self.run_stop(op, BOTH, reason="the daemon is stopping")
                    await self._close(op, OperationState.DONE)
                for fork in list(self.forks.values()):
                    await self.remove_handle(fork.handle)
                self.forks.clear()
            finally:
                self.operation = None
                self.lock.release()
        except Exception:
            log.exception("compute: shutdown of %s's workloads failed", self.user_id)

    # ------------------------------------------------------------------ the runtime front

    async def locate_runtime(self, *, wake: bool) -> tuple[str, int]:
        """For the runtime front: the runtime's address once ready; waits while it starts;
        with `wake` a stopped (or failed) runtime is started. `NotReady` otherwise."""
        ticket: Ticket | None = None
        while True:
            address = self.addresses[WorkloadRole.RUNTIME]
            if self.ready[WorkloadRole.RUNTIME] and address is not None:
                return address
            if ticket is not None and ticket.done.is_set() and ticket.error is not None:
                raise NotReady(f"the runtime could not start: {ticket.error}", retry_after=10)
            starting = self.busy() and (WorkloadRole.RUNTIME in self.desired or
                                        self.operation is not None)
            if not starting and ticket is None:
                record = self.records[WorkloadRole.RUNTIME]
                if self.svc.shutting_down:
                    raise NotReady("markco is shutting down", retry_after=10)
                if not wake:
                    if record is not None and record.state == RuntimeState.SLEEPING:
                        raise NotReady("the runtime is asleep; running code wakes it",
                                       retry_after=5)
                    why = record.reason if record and record.reason else "it is stopped"
                    raise NotReady(f"the runtime is not running ({why}); running code starts "
                                   f"it", retry_after=5)
                ticket = self.submit("start", roles=frozenset({WorkloadRole.RUNTIME}),
                                     reason="execute")
            await self.wait_changed()

    def on_execution(self) -> None:
        """An execution went through the runtime front: that is activity."""
        self.last_activity = self.activity["execution"] = self.svc.now()

    def on_code(self, code: str) -> None:
        """The code of an execution that went through the front, kept for the hints."""
        self.executed.append(code)

    def on_input(self) -> None:
        """The editor reported user input (`POST /markco/v1/activity` at the front)."""
        self.last_activity = self.activity["input"] = self.svc.now()

    # ------------------------------------------------------------------ watching

    async def _watch(self) -> None:
        """Find crashed workloads (and plan changes) while the user is running."""
        options = self.svc.options
        while True:
            await trio.sleep(options.watch_interval)
            if self.lock.locked():
                continue
            try:
                await self._watch_once()
            except Exception as exc:
                if getattr(exc, "host_down", False):
                    # Several hosts: the runtime's host does not answer. The user's workloads
                    # are unavailable, not failed: nothing is restarted elsewhere (their
                    # memory is there), and the phase says so until the host answers.
                    if self.phase != PHASE_UNAVAILABLE:
                        self.progress(PHASE_UNAVAILABLE, f"unavailable: {exc}")
                    continue
                log.exception("compute: watching user %s failed; trying again", self.user_id)
                continue
            if self.phase == PHASE_UNAVAILABLE:
                self.progress(PHASE_READY, "the runtime's host answers again",
                              ready=self.ready_for(frozenset(self.desired)))

    async def _watch_once(self) -> None:
        options = self.svc.options
        for role in START_ORDER:
            if role not in self.desired or not self.ready[role]:
                continue
            info = await self._inspect(role)
            if info is None or info.status != STATUS_RUNNING:
                self.spawn(partial(self._recover, role))
        now = trio.current_time()
        if self.ready[WorkloadRole.RUNTIME] and \
                now - self._last_plan_check >= options.plan_check_interval:
            self._last_plan_check = now
            await self.apply_plan()

    async def _inspect(self, role: WorkloadRole) -> ContainerInfo | None:
        try:
            return await self.svc.backend.inspect(self.handle(role))
        except NotFound:
            return None

    async def _recover(self, role: WorkloadRole) -> None:
        """A workload died: record it, wait the backoff, start it again — or give up."""
        if role in self.recovering:
            return
        self.recovering.add(role)
        try:
            delay = await self._record_crash(role)
            if delay is None:
                return
            await trio.sleep(delay)
            async with self.lock:
                if role not in self.desired or self.ready[role]:
                    return  # stopped, or started by someone else meanwhile
                self.operation = "recover"
                try:
                    op = await self._open_operation("recover", frozenset({role}), "crash")
                    await self.run_start(op, frozenset({role}), relaunch=True)
                except OperationFailed:
                    return
                finally:
                    self.operation = None
                record = self.records[role]
                await self.svc.publish(f"{role.value}.restarted", self.user_id, {
                    "restarts": record.restarts if record else None,
                    "oom_kills": record.oom_kills if record else None,
                    "operation_id": op.id})
        finally:
            self.recovering.discard(role)
            self.changed()

    async def _record_crash(self, role: WorkloadRole) -> float | None:
        """Mark the crash (record, event); the backoff before the restart, or None when the
        workload is now `failed` (or the crash was a false alarm)."""
        svc, options = self.svc, self.svc.options
        async with self.lock:
            if role not in self.desired or not self.ready[role]:
                return None
            info = await self._inspect(role)
            if info is not None and info.status == STATUS_RUNNING:
                return None
            self.ready[role] = False
            self.addresses[role] = None
            oom = info is not None and info.status == STATUS_OOM_KILLED
            exit_code = info.exit_code if info else None
            tail = await probes.log_tail(svc.backend, self.handle(role))
            record = self.records[role]
            limits = record.limits if record else {}
            if oom:
                limit_mib = int(limits.get("memory_bytes", 0)) >> 20
                reason = f"out of memory: went over its {limit_mib} MiB limit and was killed"
            elif info is None:
                reason = "disappeared"
            else:
                reason = f"crashed ({info.status}, exit code {exit_code})"
            await self._update(role, state=RuntimeState.STARTING, reason=reason,
                               restarts=(record.restarts + 1) if record else 1,
                               oom_kills=(record.oom_kills + (1 if oom else 0)) if record else 0)
            record = self.records[role]
            await svc.publish(f"{role.value}.crashed", self.user_id, {
                "status": info.status if info else "gone", "exit_code": exit_code,
                "oom": oom, "reason": reason, "restarts": record.restarts if record else None,
                "oom_kills": record.oom_kills if record else None, "log_tail": tail})
            if oom:
                self.progress(PHASE_RESTARTING, f"your {role.value} ran out of memory; "
                              f"starting a fresh one")
                return 0.0
            now = trio.current_time()
            crashes = self.crashes[role]
            crashes.append(now)
            while crashes and now - crashes[0] > options.crash_window:
                crashes.popleft()
            if len(crashes) >= options.max_crashes:
                why = (f"{role.value} crashed {len(crashes)} times within "
                       f"{options.crash_window:g} s; last: {reason}")
                self.desired.discard(role)
                await self._remove_workload(role)
                await self._update(role, state=RuntimeState.FAILED, reason=why)
                await svc.publish(f"{role.value}.failed", self.user_id,
                                  {"reason": why, "log_tail": tail})
                self.progress(PHASE_FAILED, why, failed=True, done=True)
                return None
            delay = min(options.restart_backoff_initial * 2.0 ** (len(crashes) - 1),
                        options.restart_backoff_max)
            self.progress(PHASE_CRASHED, f"your {role.value} {reason}; restarting in "
                          f"{delay:g} s")
            return delay

    # ------------------------------------------------------------------ plans

    async def apply_plan(self) -> bool:
        """Give a running runtime the limits of the user's current plan; True if changed."""
        svc = self.svc
        record = self.records[WorkloadRole.RUNTIME]
        if record is None or not self.ready[WorkloadRole.RUNTIME]:
            return False
        user = await svc.storage.get_user(self.user_id)
        if user is None:
            return False
        plan, limits = svc.options.limits_for(user.plan)
        wanted = {"plan": plan, "memory_bytes": limits.memory_bytes, "cpus": limits.cpus}
        # Memory elasticity raised under pressure stays while the plan is the same.
        wanted = elasticity.kept_limits(record.limits, wanted, limits.max_memory_bytes)
        if record.limits == wanted:
            return False
        async with self.lock:
            record = self.records[WorkloadRole.RUNTIME]
            if record is None or record.handle is None:
                return False
            await svc.backend.update_limits(record.handle, memory_bytes=limits.memory_bytes,
                                            cpus=limits.cpus)
            before = dict(record.limits)
            await self._update(WorkloadRole.RUNTIME, limits=wanted)
        await svc.publish("runtime.limits_changed", self.user_id,
                          {"before": before, "after": wanted})
        return True

    async def raise_memory(self, memory_bytes: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Raise the running runtime's memory limit in place (elasticity, under the lock like
        every operation); (limits before, after). `OperationFailed` when it is not running
        or the backend refuses."""
        async with self.lock:
            record = self.records[WorkloadRole.RUNTIME]
            if record is None or record.handle is None or not self.ready[WorkloadRole.RUNTIME]:
                raise OperationFailed("the runtime is not running")
            before = dict(record.limits)
            after = elasticity.raised_limits(before, memory_bytes)
            try:
                await self.svc.backend.update_limits(record.handle, memory_bytes=memory_bytes,
                                                     cpus=float(after["cpus"]))
            except MarkcoError as exc:
                raise OperationFailed(f"the backend did not change the limit: {exc}") from exc
            await self._update(WorkloadRole.RUNTIME, limits=after)
        return before, after

    # ------------------------------------------------------------------ adoption

    def adopt(self, role: WorkloadRole, record: Runtime, address: str | None) -> None:
        """Take over a workload found running at start-up (reconciliation)."""
        self.records[role] = record
        self.addresses[role] = parse_address(address)
        self.desired.add(role)
        self.changed()

    async def confirm_adopted(self) -> None:
        """After start-up: check adopted workloads answer; restart those that do not."""
        try:
            await self._confirm_adopted()
        except Exception:
            log.exception("compute: checking the adopted workloads of %s failed", self.user_id)

    async def _confirm_adopted(self) -> None:
        for role in START_ORDER:
            record = self.records[role]
            address = self.addresses[role]
            if role not in self.desired or record is None or address is None or \
                    self.ready[role]:
                continue
            try:
                await probes.wait_ready(self.svc.http, self.svc.backend,
                                        record.handle or "", role,
                                        f"{address[0]}:{address[1]}",
                                        within=self.svc.options.ready_timeout)
            except probes.NotReadyError as exc:
                log.warning("compute: adopted %s of user %s does not answer: %s",
                            role.value, self.user_id, exc)
                self.submit("restart", roles=frozenset({role}),
                            reason="found at start-up but not answering")
                continue
            self.ready[role] = True
            if record.state != RuntimeState.RUNNING:
                await self._update(role, state=RuntimeState.RUNNING)
            self.changed()
        if self.ready_for(frozenset(self.desired)) and self.desired:
            self.progress(PHASE_READY, "ready", ready=True, done=True)
