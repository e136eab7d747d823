"""`markco run`: one trio nursery supervising the whole daemon (DESIGN §1).

Start-up order: the data dir is checked and the public address bound (held, so a busy port or
a bad data dir ends the start at once with one line, before anything else runs), then storage
(and the single-instance lock, then schema upgrades), the event bus, the other providers, then
the supervised services — the front door first (taking over the held address), the API app on
its unix socket, and whatever plugins contribute. `/readyz` turns ready when storage answers
and every critical service has started (services do their start-up reconciliation first).

SIGINT/SIGTERM: report not ready, stop accepting connections, let in-flight requests finish
within `[server] drain_seconds`, then cancel the rest and exit 0. A second signal cancels at
once. A service crashing too often exits non-zero.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .api.app import build_app
from .api.server import serve_api
from .clock import Clock, SystemClock
from .config import Config
from .context import PluginContext
from .datadir import prepare_data_dir
from .errors import MarkcoError
from .events import EventBus
from .metrics_listener import MetricsListener
from .observability import DaemonMetrics
from .plugins import MarkcoPluginManager
from .proxy.activity import ActivityRecord
from .proxy.gate import EditorGate
from .proxy.hosts import EditorHosts
from .proxy.server import FrontDoor
from .readiness import Readiness
from .roles import ServiceSpec, Storage
from .storage.failures import StorageUnavailable
from .supervisor import Supervisor, TooManyCrashes

log = logging.getLogger("markco.daemon")

STORAGE_PING_SECONDS = 5.0  # how often storage is read, and written (`probe_write`)


def _leaves(group: BaseException) -> list[BaseException]:
    """The non-group exceptions inside a (possibly nested) exception group."""
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in _leaves(exc)]
    return [group]


def hold_address(host: str, port: int, *, backlog: int = 128,
                 setting: str = "[server] listen") -> socket.socket:
    """Bind and listen on `host:port` as the front door will (SO_REUSEADDR), so that a busy or
    forbidden address ends the start before anything else runs; `MarkcoError` naming the
    address and the fix (in `setting`) otherwise. The caller closes it when the front door
    takes over."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise MarkcoError(f"cannot listen on {where}: {host!r} is not an address of this "
                          f"machine ({exc.strerror}); fix {setting}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            why = ("the address is already in use (another markco, or another program, "
                   f"listens there); stop it, or set {setting} to a free port")
        elif exc.errno in (errno.EACCES, errno.EPERM):
            why = ("permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE); "
                   f"set {setting} to a port above 1023")
        elif exc.errno == errno.EADDRNOTAVAIL:
            why = (f"this machine has no address {host}; set {setting} to one of its "
                   "addresses (127.0.0.1, 0.0.0.0)")
        else:
            why = f"{exc.strerror or exc}; check {setting}"
        raise MarkcoError(f"cannot listen on {where}: {why}") from None
    return sock


def runtime_dir_for(config: Config) -> Path:
    """Where the daemon keeps its sockets: `<data_dir>/run`, 0700."""
    return config.data_dir / "run"


class Daemon:
    """The running daemon: build with a validated config and plugin manager, then `run()`."""

    def __init__(self, config: Config, plugins: MarkcoPluginManager, *,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.readiness = Readiness()
        self.ctx = PluginContext(config=config, plugins=plugins, clock=clock or SystemClock(),
                                 readiness=self.readiness, runtime_dir=runtime_dir_for(config))
        self.supervisor = Supervisor(self.readiness, config.supervision)
        self.front_door: FrontDoor | None = None
        self._held: socket.socket | None = None  # the public address, until the front door
        self._metrics_held: socket.socket | None = None  # [metrics] listen, while running
        self.metrics_listener: MetricsListener | None = None
        self._stopping = False

    @property
    def api_socket(self) -> Path:
        """The API app's unix socket."""
        assert self.ctx.runtime_dir is not None
        return self.ctx.runtime_dir / "api.sock"

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
                  handle_signals: bool = True) -> int:
        """Run until a signal (exit 0) or a fatal error (exit 1). `task_status.started(port)`
        fires once the front door listens, with the bound port."""
        config = self.config
        self.readiness.require("storage")
        code = 0
        try:
            prepare_data_dir(config.data_dir)
            self._held = hold_address(config.server.host, config.server.port)
            try:
                if config.metrics.listen:
                    self._metrics_held = hold_address(config.metrics.host, config.metrics.port,
                                                      setting="[metrics] listen")
                async with AsyncExitStack() as stack:
                    await self._open_providers(stack)
                    code = await self._serve(task_status, handle_signals)
            finally:
                self._release_address()
                if self._metrics_held is not None:
                    self._metrics_held.close()
        except* (TooManyCrashes, MarkcoError) as group:
            # `return` is not allowed inside `except*`: record the exit code instead.
            for exc in _leaves(group):
                log.critical("%s", exc)
            code = 1
        return code

    def _release_address(self) -> int:
        """Close the held public address (the front door binds it next); its port."""
        held, self._held = self._held, None
        if held is None:
            return self.config.server.port
        port: int = held.getsockname()[1]
        held.close()
        return port

    async def _open_providers(self, stack: AsyncExitStack) -> None:
        ctx, config = self.ctx, self.config
        storage_choice = config.roles["storage"]
        storage: Storage = await stack.enter_async_context(
            storage_choice.make(storage_choice.names[0], ctx))
        ctx.storage = storage
        # The lock comes before the schema upgrade: two daemons must never migrate at once.
        await stack.enter_async_context(storage.instance_lock())
        applied = await storage.upgrade()
        if applied:
            log.info("storage: applied schema migrations %s", applied)
        self.readiness.mark("storage")
        ctx.events = EventBus(storage, ctx.clock)
        compute = config.roles["compute"]
        if compute.names:
            ctx.backend = await stack.enter_async_context(
                compute.make(compute.names[0], ctx))
        checkpoint = config.roles["checkpoint"]
        if checkpoint.names:
            ctx.checkpointer = await stack.enter_async_context(
                checkpoint.make(checkpoint.names[0], ctx))
        oauth = config.roles["oauth"]
        for name in oauth.names:
            ctx.oauth[name] = await stack.enter_async_context(oauth.make(name, ctx))
        # The two roles the front door reaches: entered before it is built (`services`).
        sessions = config.roles["sessions"]
        if sessions.names:
            ctx.sessions = await stack.enter_async_context(
                sessions.make(sessions.names[0], ctx))
        control = config.roles["compute_control"]
        if control.names:
            ctx.compute = await stack.enter_async_context(control.make(control.names[0], ctx))

    def services(self) -> list[ServiceSpec]:
        """The built-in services and the plugins' ones, in start order."""
        ctx, server = self.ctx, self.config.server
        assert ctx.runtime_dir is not None
        ctx.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(ctx.runtime_dir, 0o700)
        app = build_app(ctx)
        # The session authority and compute control were entered with the providers.
        # A supervisor restarting the proxy calls `serve` again on this same FrontDoor.
        port = self._held.getsockname()[1] if self._held is not None else server.port
        self.front_door = FrontDoor(server.host, port, self.api_socket, self.readiness,
                                    trusted_proxies=tuple(server.trusted_proxies),
                                    access_log=self.config.logging.access,
                                    access_log_sample_every=(
                                        self.config.logging.access_sample_every),
                                    max_connections_per_client=(
                                        server.max_connections_per_client),
                                    gate=self._editor_gate())
        specs = [
            ServiceSpec("storage-watch", self._watch_storage, critical=False),
            ServiceSpec("api", partial(serve_api, app, self.api_socket)),
            ServiceSpec("proxy", self.front_door.serve),
        ]
        specs.extend(self._metrics_services())
        for contributed in ctx.plugins.hook.markco_services(ctx=ctx):
            specs.extend(contributed or ())
        assert ctx.events is not None
        for observers in ctx.plugins.hook.markco_event_observers(ctx=ctx):
            for observer in observers or ():
                specs.append(ServiceSpec(f"observer:{observer.name}",
                                         partial(ctx.events.run_observer, observer),
                                         critical=False))
        names = [s.name for s in specs]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise MarkcoError(f"two services share the name(s) {sorted(duplicates)}")
        return specs

    def _metrics_services(self) -> list[ServiceSpec]:
        """The daemon's metrics (`markco_trio.observability`) and, with `[metrics] listen`,
        the listener serving them."""
        ctx = self.ctx
        observed = DaemonMetrics(ctx, lambda: self.front_door)
        specs = []
        if ctx.events is not None:
            specs.append(ServiceSpec("observer:metrics",
                                     partial(ctx.events.run_observer, observed.observer()),
                                     critical=False))
        if self._metrics_held is not None:
            token = self.config.metrics.token
            self.metrics_listener = MetricsListener(
                ctx.metrics, self._metrics_held, token=token.reveal() if token else None,
                before_scrape=observed.refresh)
            specs.append(ServiceSpec("metrics", self.metrics_listener.serve, critical=False))
        return specs

    def _editor_gate(self) -> EditorGate | None:
        """The gate of `/u/<userId>/...`: the auth plugin's session authority, the one
        authorisation decision and compute (None without an authority: editors are then
        unavailable). Sets the activity record as `ctx.activity`."""
        ctx = self.ctx
        authority = ctx.sessions
        if authority is None:
            log.warning("no session authority (no [sessions] provider: the auth plugin is "
                        "disabled): users' editors under /u/ cannot be reached")
            return None
        compute = ctx.compute
        activity = ActivityRecord(compute.record_activity if compute is not None else None)
        ctx.activity = activity
        public_url = self.config.server.public_url.rstrip("/")
        domain = self.config.server.editor_domain
        return EditorGate(authority=authority, authorize=ctx.authorize, compute=compute,
                          login_url=f"{public_url}{authority.login_path}",
                          cookie_names=markco_cookie_names(authority.cookie_name),
                          activity=activity,
                          hosts=EditorHosts(public_url, domain) if domain else None)

    async def _serve(self, task_status: trio.TaskStatus[int], handle_signals: bool) -> int:
        specs = self.services()
        async with trio.open_nursery() as nursery:
            if handle_signals:
                nursery.start_soon(self._watch_signals, nursery.cancel_scope)
            # The front door first: it takes over the held address before anything else runs
            # (a service crash-looping on a busy port is what holding it avoids).
            proxy = next(s for s in specs if s.name == "proxy")
            for spec in specs:  # not ready until every critical service is up, not only it
                if spec.critical:
                    self.readiness.require(f"service:{spec.name}")
            self._release_address()
            await nursery.start(partial(self.supervisor.supervise, proxy))
            for spec in specs:
                if spec.name != "proxy":
                    nursery.start_soon(partial(self.supervisor.supervise, spec))
            assert self.front_door is not None
            port = self.front_door.port
            log.info("markco listening on %s (public URL %s)",
                     f"{self.config.server.host}:{port}", self.config.server.public_url)
            task_status.started(port)
        return 0

    async def _watch_storage(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the `storage` readiness condition true only while the database answers AND
        takes a write (`probe_write`, a real write that changes nothing, when the storage
        offers it): a full disk or a read-only database makes `/readyz` say so, with the
        cause. One log line when it breaks and one when it recovers."""
        storage = self.ctx.require_storage()
        probe_write = getattr(storage, "probe_write", None)
        task_status.started()
        broken: str | None = None
        while True:
            try:
                await storage.ping()
                if probe_write is not None:
                    await probe_write()
            except Exception as exc:
                cause = exc.cause if isinstance(exc, StorageUnavailable) else "not reachable"
                if broken != cause:
                    log.error("storage cannot serve writes: %s", exc)
                broken = cause
                self.readiness.mark("storage", False, reason=cause)
            else:
                if broken is not None:
                    log.info("storage works again (it was: %s)", broken)
                broken = None
                self.readiness.mark("storage")
            await trio.sleep(STORAGE_PING_SECONDS)

    async def stop(self, cancel_scope: trio.CancelScope) -> None:
        """Graceful stop: not ready, stop accepting, drain, then cancel everything."""
        if self._stopping:
            cancel_scope.cancel()
            return
        self._stopping = True
        self.readiness.start_draining()
        if self.front_door is not None:
            self.front_door.stop_accepting()
        grace = self.config.server.drain_seconds
        log.info("stopping: draining connections for up to %g s", grace)
        with trio.move_on_after(grace):
            if self.front_door is not None:
                await self.front_door.drained()
        cancel_scope.cancel()

    async def _watch_signals(self, cancel_scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                async for signum in signals:
                    log.info("received %s", signal.Signals(signum).name)
                    nursery.start_soon(self.stop, cancel_scope)


def markco_cookie_names(session_cookie: str) -> list[str]:
    """markco's own cookies, which never reach an editor and which no editor may set: the
    session cookie, the login-in-flight cookie and an editor origin's cookie, with and
    without the `__Host-` prefix."""
    base = session_cookie.removeprefix("__Host-")
    return [base, f"__Host-{base}", "markco_login", "__Host-markco_login", "markco_editor",
            "__Host-markco_editor"]
