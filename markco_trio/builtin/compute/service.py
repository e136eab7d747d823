"""`ComputeService`: the compute plugin's running part, and its typed interface.

It is the compute plugin's `builtin` provider of the `ComputeControl` role
(`markco_trio.roles`), so while the daemon runs it is `ctx.compute`: the contract the data plane
(the proxy), the dashboard and the API use — all of it on this class, documented per method:

    compute = ctx.compute
    compute.state_nowait(user_id)            # UserComputeState snapshot, no I/O
    compute.editor_address_nowait(user_id)   # (host, port) of a READY editor, or None
    compute.request_start(user_id, reason=)  # start in the background (navigation, login)
    await compute.ensure_started(user_id, reason=)   # start and wait until ready
    await compute.stop(user_id, reason=) / restart(...)
    with compute.subscribe_progress(user_id) as progress:   # Progress events
        async for event in progress: ...
    compute.record_activity(user_id, kind)   # navigation, non-GET request... (DESIGN §3.3)
    compute.front_statistics_nowait(user_id) # runtime front counters (executions in flight)
    await compute.apply_plan(user_id)        # a plan change, applied to a running runtime

As a supervised service (`run`) it reconciles first — every open operation rolled forward or
back, workloads found running adopted, dead ones marked, orphans removed — and only then reports
started, so `/readyz` waits for it. Each user's actor then runs in a task of its own, restarted
with backoff if it fails, without touching any other user.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import httpx
import trio

from ...errors import MarkcoError, NotFound
from ...records import Snapshot, WorkloadRole
from ...roles import BackendCapabilities, ContainerBackend, ContainerInfo, Storage
from ..process_backend.ports import choose_port, is_free
from . import moves, placement, release
from .actor import BOTH, OperationFailed, UserActor, first_leaf
from .elasticity import MonitoredRuntime
from .front import FrontStatistics, RuntimeFront, front_socket_path
from .options import WorkloadsOptions
from .progress import ProgressHub
from .status import Progress, UserComputeState, WorkloadStatus

if TYPE_CHECKING:
    from ...context import PluginContext

log = logging.getLogger("markco.compute")

# The daemon's service per context (a PluginContext hashes by identity).
_SERVICES: WeakKeyDictionary[PluginContext, ComputeService] = WeakKeyDictionary()
FRONT_STATE = "front.json"
FRONT_PORT_RANGE = (20000, 32000)
_USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ACTOR_BACKOFF = (0.5, 30.0)


class ComputeUnavailable(MarkcoError):
    """No container backend is configured, or compute has not finished starting."""


class StartFailed(OperationFailed):
    """A user's workloads could not be started; the message says why."""


class ComputeService:
    """See the module doc. Created once per daemon by `service_for(ctx)`."""

    def __init__(self, ctx: PluginContext, options: WorkloadsOptions) -> None:
        self.ctx = ctx
        self.options = options
        self.progress = ProgressHub()
        self.start_limiter = trio.CapacityLimiter(options.max_concurrent_starts)
        self.deployment_id = ctx.config.server.deployment_id
        self.host = "local"
        self._actors: dict[str, UserActor] = {}
        self._nursery: trio.Nursery | None = None
        self._running = trio.Event()
        self._http: httpx.AsyncClient | None = None
        self.actor_restarts = 0
        # Users whose actor has a task (running, or about to); the others' are released.
        self._supervised: set[str] = set()
        # An idle actor (every workload stopped, nothing under way) releases its task and its
        # runtime front after this long (see `release`).
        self.release_after = max(1.0, 5 * options.watch_interval)
        # Checkpoints and restores at once on this host (CPU and disk bound).
        self.checkpoint_limiter = trio.CapacityLimiter(max(1, options.max_concurrent_starts))
        self.shutting_down = False

    # ------------------------------------------------------------------ what actors use

    @property
    def storage(self) -> Storage:
        """The daemon's storage."""
        return self.ctx.require_storage()

    @property
    def backend(self) -> ContainerBackend:
        """The configured container backend."""
        if self.ctx.backend is None:
            raise ComputeUnavailable("no container backend is configured: set [compute] "
                                     "backend = \"process\" (or \"docker\")")
        return self.ctx.backend

    @property
    def capabilities(self) -> BackendCapabilities:
        """The backend's capabilities."""
        return self.backend.capabilities()

    @property
    def http(self) -> httpx.AsyncClient:
        """The client for readiness checks (open while the service runs)."""
        if self._http is None:
            raise ComputeUnavailable("compute is not running")
        return self._http

    def now(self) -> float:
        """Wall-clock time for records (the daemon's clock)."""
        return self.ctx.clock.now()

    async def publish(self, kind: str, user_id: str | None, data: dict[str, Any]) -> None:
        """Record an event (persisted, then fanned out)."""
        if self.ctx.events is not None:
            with trio.CancelScope(shield=True):
                await self.ctx.events.publish(kind, user_id=user_id, data=data)

    @property
    def archive_root(self) -> Path:
        """`<data_dir>/snapshots`: one 0700 directory per user, holding their archives."""
        return self.ctx.data_dir / "snapshots"

    @property
    def fronts_dir(self) -> Path:
        """`<data_dir>/fronts`: one directory per user, holding their runtime front."""
        return self.ctx.data_dir / "fronts"

    def user_dir(self, user_id: str) -> Path:
        """`<data_dir>/users/<user_id>` (user ids are checked: they become paths)."""
        return self.ctx.data_dir / "users" / _checked(user_id)

    def front_path(self, user_id: str) -> Path:
        """The unix socket of the user's runtime front."""
        return front_socket_path(self.fronts_dir, _checked(user_id))

    def make_front(self, actor: UserActor) -> RuntimeFront:
        """The runtime front of `actor`'s user (with a TCP forwarder when configured)."""
        tcp_port = None
        caps = self.capabilities
        # Only where workloads share the host's network: a workload in a network namespace of
        # its own could not reach a host port, and nothing else should.
        if self.options.runtime_port_forwarder and not caps.mounts and \
                not caps.isolated_network:
            tcp_port = self._front_port(actor.user_id)
        return RuntimeFront(
            actor.user_id, self.front_path(actor.user_id), actor.locate_runtime,
            owner=self.backend.workload_owner(actor.user_id),
            hold_seconds=self.options.hold_seconds, hold_max=self.options.hold_max,
            tcp_port=tcp_port, on_execution=actor.on_execution,
            notice=lambda: (actor.notice, actor.notice_id), now=self.now,
            on_code=actor.on_code, on_input=actor.on_input)

    def _front_port(self, user_id: str) -> int:
        """The user's RUNTIME_PORT: chosen once and kept (a running editor has it in its
        environment, across daemon restarts too)."""
        path = self.fronts_dir / user_id / FRONT_STATE
        try:
            port = int(json.loads(path.read_text())["runtime_port"])
            if is_free(port):
                return port
            log.warning("compute: RUNTIME_PORT %s of user %s is taken; choosing another "
                        "(their running editor keeps the old one until it restarts)", port,
                        user_id)
        except (FileNotFoundError, KeyError, ValueError):
            pass
        taken = set()
        if self.fronts_dir.is_dir():
            for other in self.fronts_dir.iterdir():
                try:
                    taken.add(int(json.loads((other / FRONT_STATE).read_text())["runtime_port"]))
                except (OSError, KeyError, ValueError):
                    continue
        port = choose_port(FRONT_PORT_RANGE, taken)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"runtime_port": port}, f)
        return port

    # ------------------------------------------------------------------ the interface

    def state_nowait(self, user_id: str) -> UserComputeState:
        """The user's compute now: states, readiness, operation in progress, last progress,
        activity. A user compute knows nothing about reads as never started."""
        actor = self._actors.get(user_id)
        if actor is None:
            return UserComputeState(user_id=user_id,
                                    runtime=WorkloadStatus(WorkloadRole.RUNTIME),
                                    editor=WorkloadStatus(WorkloadRole.EDITOR))
        return actor.snapshot()

    def editor_address_nowait(self, user_id: str) -> tuple[str, int] | None:
        """Where the proxy forwards `/u/<user_id>/`: the editor's (host, port) when it is
        ready, else None (then: `request_start` on a navigation, 503 otherwise)."""
        actor = self._actors.get(user_id)
        if actor is None or not actor.ready[WorkloadRole.EDITOR]:
            return None
        return actor.addresses[WorkloadRole.EDITOR]

    def request_start(self, user_id: str, *, reason: str) -> None:
        """Start the user's runtime and editor in the background (never blocks). Joins a
        start already under way. Follow it with `subscribe_progress` or `state_nowait`."""
        self._actor(user_id).submit("start", roles=BOTH, reason=reason)

    def request(self, user_id: str, kind: str, *, reason: str) -> None:
        """Queue `start`, `stop`, `restart`, `sleep` or `wake` of the user's workloads without
        waiting (a start of a sleeping user wakes it)."""
        if kind not in ("start", "stop", "restart", "sleep", "wake"):
            raise ValueError(f"unknown operation {kind!r}")
        self._actor(user_id).submit(kind, roles=BOTH, reason=reason)

    async def _operate(self, user_id: str, kind: str, *, reason: str,
                       args: dict[str, Any] | None = None) -> Any:
        actor = self._actor(user_id)
        await self._running.wait()
        ticket = actor.submit(kind, roles=BOTH, reason=reason, args=args)
        await ticket.wait()
        return ticket.result

    async def sleep(self, user_id: str, *, reason: str) -> UserComputeState:
        """Checkpoint the user's runtime and stop it (and the editor); `OperationFailed`
        says why not (the runtime then keeps running)."""
        await self._operate(user_id, "sleep", reason=reason)
        return self.state_nowait(user_id)

    async def wake(self, user_id: str, *, reason: str) -> UserComputeState:
        """Wake (or start) the user's workloads and wait until both answer."""
        await self._operate(user_id, "wake", reason=reason)
        return self.state_nowait(user_id)

    async def create_snapshot(self, user_id: str, name: str, *, reason: str) -> Snapshot:
        """A named snapshot of the running runtime (it keeps running)."""
        result: Snapshot = await self._operate(user_id, "snapshot", reason=reason,
                                               args={"name": name})
        return result

    async def restore_snapshot(self, user_id: str, snapshot: str, *,
                               reason: str) -> UserComputeState:
        """Replace the running runtime by the named snapshot (by id or name)."""
        await self._operate(user_id, "restore", reason=reason, args={"snapshot": snapshot})
        return self.state_nowait(user_id)

    async def delete_snapshot(self, user_id: str, snapshot: str, *, reason: str) -> None:
        """Delete a named snapshot (by id or name): its row, then its archive."""
        await self._operate(user_id, "snapshot.delete", reason=reason,
                            args={"snapshot": snapshot})

    async def list_snapshots(self, user_id: str) -> list[Snapshot]:
        """The user's snapshots (named ones and a sleeping runtime's image), oldest first."""
        return [s for s in await self.storage.list_snapshots(user_id) if s.kind != "fork"]

    async def fork(self, user_id: str, name: str, *, reason: str) -> ContainerInfo:
        """A second, disposable runtime from a live checkpoint; reach it with
        `fork_address`. The original runtime is untouched."""
        result: ContainerInfo = await self._operate(user_id, "fork", reason=reason,
                                                    args={"name": name})
        return result

    async def remove_fork(self, user_id: str, name: str, *, reason: str) -> None:
        """Remove a fork."""
        await self._operate(user_id, "unfork", reason=reason, args={"name": name})

    async def execute_in_fork(self, user_id: str, name: str, body: bytes) -> tuple[int, bytes]:
        """Run code in the fork `name`: `body` is mrmd-python's execute request (JSON, e.g.
        `{"code": "print(x)"}`); returns the fork's (status, JSON answer). `NotFound` when
        there is no such fork."""
        from .checkpoints import post_json

        actor = self._actors.get(user_id)
        info = actor.forks.get(name) if actor else None
        if info is None or not info.address:
            raise NotFound(f"no fork {name!r}")
        return await post_json(info.address, "/mrp/v1/execute", body)

    def fork_address_nowait(self, user_id: str, name: str) -> tuple[str, int] | None:
        """Where the daemon reaches the fork `name` of the user (None: no such fork)."""
        actor = self._actors.get(user_id)
        info = actor.forks.get(name) if actor else None
        return actor.parse(info.address) if actor and info else None

    async def place(self, user_id: str, limits: dict[str, Any]) -> str:
        """The host the user's workloads go on: `host` with one engine; with several, the
        ledger's placement (`placement.reserve`)."""
        hosts = placement.hosts_of(self)
        if hosts is None:
            return self.host
        return await hosts.place(user_id, int(limits.get("memory_bytes") or 0),
                                 await placement.plan_labels(self, user_id))

    def host_of(self, info: ContainerInfo) -> str:
        """The host a workload the backend listed is on (`host` with one engine)."""
        hosts = placement.hosts_of(self)
        if hosts is None:
            return self.host
        return hosts.located(info.handle) or hosts.host_of_user(info.user_id)

    async def move(self, user_id: str, to_host: str, *, reason: str,
                   memory_bytes: int | None = None) -> dict[str, Any]:
        """Move the user's runtime to `to_host` (`moves.run_move`); its measurements.
        `memory_bytes`: its memory limit there (elasticity's bigger one, within the plan's
        ceiling); by default the one it has."""
        hosts = placement.hosts_of(self)
        if hosts is None:
            raise moves.MoveFailed("this deployment has one host: configure "
                                   "[[compute.docker.hosts]] to move runtimes")
        hosts.backend_on(to_host)  # `NotFound` naming the configured hosts
        ticket = self._actor(_checked(user_id)).submit(
            "move", roles=frozenset({WorkloadRole.RUNTIME}), reason=reason,
            args={"to": to_host} if memory_bytes is None else
            {"to": to_host, "memory_bytes": memory_bytes})
        await ticket.wait()
        result: dict[str, Any] = ticket.result
        return result

    async def release_host(self, user_id: str) -> None:
        """The user's runtime is stopped: their room on its host is free again (a sleeping
        runtime keeps it: its wake comes back there)."""
        hosts = placement.hosts_of(self)
        if hosts is not None:
            await placement.release(self, user_id)
            hosts.assigned.pop(user_id, None)  # the next start is placed afresh

    def host_names(self) -> list[str]:
        """The configured hosts when there are several (none with one engine)."""
        hosts = placement.hosts_of(self)
        return hosts.host_names() if hosts is not None else []

    def request_move(self, user_id: str, to_host: str, *, reason: str) -> None:
        """Queue a move (the admin page's); `NotFound`/`MoveFailed` at once for a bad host."""
        hosts = placement.hosts_of(self)
        if hosts is None:
            raise moves.MoveFailed("this deployment has one host")
        hosts.backend_on(to_host)
        self._actor(_checked(user_id)).submit(
            "move", roles=frozenset({WorkloadRole.RUNTIME}), reason=reason,
            args={"to": to_host})

    async def drain_host(self, host: str, *, reason: str) -> dict[str, str]:
        """Move everyone off `host` (`moves.drain`)."""
        return await moves.drain(self, host, reason=reason)

    async def ensure_started(self, user_id: str, *, reason: str) -> UserComputeState:
        """Start (or join the start of) the user's workloads and wait until both are ready.
        Raises `StartFailed` saying why."""
        actor = self._actor(user_id)  # raises ComputeUnavailable without a backend
        await self._running.wait()
        ticket = actor.submit("start", roles=BOTH, reason=reason)
        try:
            await ticket.wait()
        except OperationFailed as exc:
            raise StartFailed(str(exc)) from None
        return self.state_nowait(user_id)

    async def stop(self, user_id: str, *, reason: str) -> UserComputeState:
        """Stop (and remove) the user's editor and runtime; their files stay."""
        actor = self._actor(user_id)
        await self._running.wait()
        await actor.submit("stop", roles=BOTH, reason=reason).wait()
        return self.state_nowait(user_id)

    async def restart(self, user_id: str, *, reason: str) -> UserComputeState:
        """Stop then start both workloads (a fresh runtime: variables are lost)."""
        actor = self._actor(user_id)
        await self._running.wait()
        try:
            await actor.submit("restart", roles=BOTH, reason=reason).wait()
        except OperationFailed as exc:
            raise StartFailed(str(exc)) from None
        return self.state_nowait(user_id)

    @contextmanager
    def subscribe_progress(self, user_id: str) -> Iterator[trio.MemoryReceiveChannel[Progress]]:
        """`with compute.subscribe_progress(uid) as events: async for p in events: ...` —
        the user's `Progress` events while the block runs (bounded: a slow reader misses
        events, never slows an operation)."""
        with self.progress.subscribe(user_id) as receive:
            yield receive

    def record_activity(self, user_id: str, kind: str) -> None:
        """Note user activity (`navigation`, `request`, `input`...; DESIGN §3.3). Raw
        WebSocket traffic is not activity. Cheap: an in-memory timestamp."""
        actor = self._actors.get(user_id)
        if actor is not None:
            actor.last_activity = actor.activity[kind] = self.now()

    def last_activity_nowait(self, user_id: str) -> float | None:
        """Wall-clock time of the user's last activity (None: none seen)."""
        actor = self._actors.get(user_id)
        return actor.last_activity if actor else None

    def monitored_nowait(self) -> list[MonitoredRuntime]:
        """The runtimes running now, with what the monitor judges them by (no I/O)."""
        found = []
        for actor in self._actors.values():
            record = actor.records[WorkloadRole.RUNTIME]
            if record is None or record.handle is None or \
                    not actor.ready[WorkloadRole.RUNTIME]:
                continue
            stats = actor.front.statistics() if actor.front else None
            found.append(MonitoredRuntime(
                user_id=actor.user_id, handle=record.handle,
                plan=record.limits.get("plan"), limits=dict(record.limits),
                activity=dict(actor.activity),
                executions_in_flight=stats.executions_in_flight if stats else 0,
                busy=actor.operation is not None))
        return found

    def take_executed_nowait(self, user_id: str) -> list[str]:
        """Code executed through the user's front since the last call (for the hints)."""
        actor = self._actors.get(user_id)
        if actor is None or not actor.executed:
            return []
        code = list(actor.executed)
        actor.executed.clear()
        return code

    def set_notice(self, user_id: str, text: str | None, notice_id: str | None) -> None:
        """Show `text` to the user (the editor's banner, the dashboard); None clears it."""
        actor = self._actors.get(user_id)
        if actor is not None:
            actor.notice, actor.notice_id = text, notice_id if text else None
            actor.changed()

    def notice_nowait(self, user_id: str) -> tuple[str | None, str | None]:
        """The user's notice now: (text, id)."""
        actor = self._actors.get(user_id)
        return (actor.notice, actor.notice_id) if actor is not None else (None, None)

    async def raise_memory(self, user_id: str, memory_bytes: int
                           ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Raise the user's running runtime's memory limit in place; (before, after)."""
        actor = self._actors.get(user_id)
        if actor is None:
            raise OperationFailed("the runtime is not running")
        return await actor.raise_memory(memory_bytes)

    def busy_nowait(self, user_id: str) -> bool:
        """An operation is running or queued for the user."""
        actor = self._actors.get(user_id)
        return actor is not None and actor.busy()

    def front_statistics_nowait(self, user_id: str) -> FrontStatistics | None:
        """The user's runtime front counters (executions in flight...), None if no front."""
        actor = self._actors.get(user_id)
        return actor.front_statistics() if actor else None

    async def apply_plan(self, user_id: str) -> bool:
        """Apply the user's current plan to their running runtime; True when it changed."""
        actor = self._actors.get(user_id)
        return await actor.apply_plan() if actor is not None else False

    def users(self) -> list[str]:
        """Users compute currently manages (an actor exists)."""
        return sorted(self._actors)

    def statistics(self) -> dict[str, Any]:
        """Counters for metrics."""
        return {"actors": len(self._actors), "active_actors": len(self._supervised),
                "actor_restarts": self.actor_restarts,
                "progress_dropped": self.progress.dropped,
                "ready_editors": sum(1 for a in self._actors.values()
                                     if a.ready[WorkloadRole.EDITOR])}

    # ------------------------------------------------------------------ actors

    def _actor(self, user_id: str) -> UserActor:
        """The user's actor, created (and its task started) on first use."""
        actor = self._actors.get(user_id)
        if actor is None:
            _checked(user_id)
            self.backend  # noqa: B018 - fail early, with the message, without a backend
            actor = UserActor(self, user_id)
            self._actors[user_id] = actor
            self.revive(actor)
        return actor

    def revive(self, actor: UserActor) -> None:
        """Start the task of `actor` unless it has one (a new actor, or one released when its
        user's workloads stopped); no-op before the service runs (it starts them all then)."""
        if self._nursery is None or actor.user_id in self._supervised or \
                self._actors.get(actor.user_id) is not actor:
            return
        self._supervised.add(actor.user_id)
        self._nursery.start_soon(self._supervise_actor, actor)

    def active_actors(self) -> int:
        """Actors with a task (and a runtime front) now; the others are released."""
        return len(self._supervised)

    async def _supervise_actor(self, actor: UserActor, *,
                               task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                               ) -> None:
        """Run one user's actor; if it fails, log it and run it again after a backoff —
        every other user carries on untouched. `started` once its runtime front listens
        (an adopted editor may call it any moment), or after a first failure."""
        first: trio.TaskStatus[None] | None = task_status
        failures = 0
        self._supervised.add(actor.user_id)
        try:
            while True:
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(actor.run)
                        if first is not None:
                            first.started()
                            first = None
                        failures = 0
                    # `run` returned: the user is idle and the actor released its front. Work
                    # handed to it meanwhile runs it again; else this task ends (`revive`).
                    if not release.has_queued_work(actor):
                        return
                    continue
                except Exception as exc:
                    log.exception("compute: the actor of user %s failed; restarting it",
                                  actor.user_id)
                    cause = first_leaf(exc) if isinstance(exc, BaseExceptionGroup) else exc
                    actor.fail_pending(str(cause) if isinstance(cause, MarkcoError) else
                                       f"compute failed for this user: "
                                       f"{type(cause).__name__}: {cause}")
                if first is not None:
                    first.started()  # one user's trouble never holds the daemon's start back
                    first = None
                self.actor_restarts += 1
                failures += 1
                await trio.sleep(min(ACTOR_BACKOFF[0] * 2.0 ** (failures - 1),
                                     ACTOR_BACKOFF[1]))
        finally:
            self._supervised.discard(actor.user_id)

    # ------------------------------------------------------------------ the service

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Reconcile, report started, then run the users' actors until cancelled."""
        from .reconcile import reconcile

        if self.ctx.backend is None:
            log.warning("compute: no container backend is configured ([compute] backend); "
                        "users' editors and runtimes will not start")
            task_status.started()
            await trio.sleep_forever()
        self.fronts_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        os.chmod(self.fronts_dir, 0o711)
        async with httpx.AsyncClient(trust_env=False) as http, trio.open_nursery() as nursery:
            self._http = http
            try:
                hosts = placement.hosts_of(self)
                if hosts is not None:
                    placement.install(self, hosts)
                    for problem in placement.label_problems(self, hosts):
                        log.warning("compute: %s", problem)
                    nursery.start_soon(self._watch_hosts, hosts)
                result = await reconcile(self)
                self._nursery = nursery
                for actor in list(self._actors.values()):
                    self._supervised.add(actor.user_id)
                    await nursery.start(self._supervise_actor, actor)
                self._running.set()
                task_status.started()
                for actor in result.adopted:
                    actor.spawn(actor.confirm_adopted)
                for user_id, reason in result.to_start:
                    self.request_start(user_id, reason=reason)
                await trio.sleep_forever()
            finally:
                self.shutting_down = True
                await self._shutdown_workloads()
                self._nursery = None
                self._running = trio.Event()
                self._http = None

    async def _watch_hosts(self, hosts: placement.HostSet) -> None:
        """Several hosts: check each engine every `watch_interval` x 10 (at least 5 s); a
        host that stops answering is marked down (nothing placed there, its users shown
        unavailable) and recorded in `hosts` for operators."""
        states: dict[str, str | None] = {}
        while True:
            try:
                found = await hosts.check_hosts()
                for host, why in found.items():
                    state = "draining" if host in hosts.draining else \
                        ("down" if why else "up")
                    if states.get(host, "") != (state + (why or "")):
                        states[host] = state + (why or "")
                        await placement.record_host_state(self, host, state, why)
                        if why:
                            await self.publish("host.down", None, {"host": host,
                                                                   "reason": why})
            except Exception:
                log.exception("compute: checking the hosts failed; trying again")
            await trio.sleep(max(5.0, 10 * self.options.watch_interval))

    async def _shutdown_workloads(self) -> None:
        """`on_shutdown`: what the daemon's stop does to running runtimes (keep, sleep, stop),
        shielded from the cancellation that ends the daemon, for at most `shutdown_seconds`."""
        policy = self.options.on_shutdown
        if policy == "keep" or not self._actors:
            return
        if policy == "sleep":
            checkpointer = self.ctx.checkpointer
            if checkpointer is None or not checkpointer.capabilities(self.backend).checkpoint:
                log.warning("compute: on_shutdown = \"sleep\" but no checkpointer can "
                            "checkpoint this backend's runtimes: they keep running (set "
                            "[checkpoint] provider = \"criu\")")
                return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.options.shutdown_seconds
            async with trio.open_nursery() as nursery:
                for actor in list(self._actors.values()):
                    nursery.start_soon(actor.on_shutdown, policy)
        if scope.cancelled_caught:
            log.error("compute: the shutdown's %s of runtimes took over %g s; the rest keep "
                      "running", policy, self.options.shutdown_seconds)


def _checked(user_id: str) -> str:
    if not _USER_ID.match(user_id):
        raise ValueError(f"not a valid user id: {user_id!r}")
    return user_id


def service_for(ctx: PluginContext) -> ComputeService:
    """The daemon's `ComputeService`, created on first use (the `builtin` compute control
    provider enters it; the plugin's hooks and commands reach the same one)."""
    service = _SERVICES.get(ctx)
    if service is None:
        service = ComputeService(ctx, ctx.config.section("workloads"))
        _SERVICES[ctx] = service
    return service
