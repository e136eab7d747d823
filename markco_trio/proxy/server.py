"""The front door: a trio server on the public port that answers health checks and forwards.

`FrontDoor.serve()` binds, accepts, and runs one task per client connection
(`exchange.ClientConnection`) plus one sweeper task. Requests for `/u/<userId>/...` pass the
editor gate (`gate.EditorGate`, given by the daemon) and go to that user's editor; the rest go
to the API app. The sweeper is the only clock of the proxy:
about every 20–500 ms it advances the coarse time the connections stamp their deadlines with,
cancels the connections whose deadline has passed, closes pooled upstream connections that idled
too long, and flushes the batched access log. So a request costs no cancel scope and no clock read.

Shutdown: `stop_accepting()` closes the listener, closes the keep-alive connections that sit
idle and the WebSockets that moved no data frame lately (with a 1001 close frame: a tab's
keep-alive pings do not hold a shutdown), and lets requests in flight finish (their responses
say `Connection: close`; timeouts still apply). Busy WebSockets are closed as soon as they
quieten, or when the daemon's grace period ends. `serve()` itself runs on until cancelled,
so a supervisor never mistakes a drained front door for a crashed one: the daemon watches
`statistics().active_requests` (or awaits `drained()`) within its grace period, then cancels.

Restart: a supervisor restarts a crashed front door by calling `serve()` again. Each call starts
afresh (a new listener on the same port, new pools, no connections); counters carry on.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from markco_trio.proxy.accesslog import AccessLog, AccessMode
from markco_trio.proxy.activity import UserActivity
from markco_trio.proxy.answers import Answer, json_error, render
from markco_trio.proxy.exchange import ClientConnection, Phase, ProxyState
from markco_trio.proxy.faults import Faults
from markco_trio.proxy.gate import EditorGate
from markco_trio.proxy.rewrite import TrustedProxies
from markco_trio.proxy.upstream import EditorPools, UpstreamPool, UpstreamStatistics
from markco_trio.readiness import Readiness

__all__ = ["FrontDoor", "FrontDoorStatistics"]

logger = logging.getLogger("markco.proxy")

_ACCEPT_BATCH = 64  # connections accepted per wake-up before letting others run
# Draining: a WebSocket that moved no data frame for this long is closed instead of awaited.
_QUIET_TUNNEL = 1.0
# What a client over its connection cap gets (it may not have sent its request yet: no wait).
_TOO_MANY = render(Answer(503, json_error(
    503, "too_many_connections", "too many connections from your address at once; "
    "close some (other tabs, other programs) and try again").body,
    headers=((b"retry-after", b"5"),)), keep_alive=False)
_FLUSH_INTERVAL = 1.0
_EXPIRY_REASONS = {
    Phase.NEW: "idle_timeout",
    Phase.IDLE: "idle_timeout",
    Phase.HEAD: "header_timeout",
    Phase.BODY: "body_timeout",
    Phase.TUNNEL: "tunnel_idle_timeout",
}
# Out of descriptors or memory: the listener stays readable, so back off instead of spinning.
_ACCEPT_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True, slots=True)
class FrontDoorStatistics:
    """A snapshot of the front door's counters."""

    accepting: bool
    open_connections: int
    active_requests: int  # connections in the middle of a request (not idle between requests)
    requests_served: int
    errors: dict[str, int]  # by kind: bad_request, header_timeout, upstream_unavailable, ...
    upstream: UpstreamStatistics
    editors: UpstreamStatistics  # all editor pools together
    serves: int = 0  # how many times `serve()` started (1, or more after restarts)
    tunnels: int = 0  # upgraded connections (WebSockets) open now
    tunnel_bytes: tuple[int, int] = (0, 0)  # through tunnels: (to upstream, to client)
    # WebSockets and still-streaming responses of editors whose admission the guard watches
    guarded: int = 0


class FrontDoor:
    """The daemon's public HTTP/1.1 server: answers `/healthz` and `/readyz`, forwards the rest.

    `api_socket` is the unix socket the API app (hypercorn) listens on. `trusted_proxies` lists
    the peers (addresses or CIDR networks) whose X-Forwarded-* headers are believed, such as a
    TLS-terminating Caddy. Timeouts are in seconds: `header_timeout` for a request head once it
    has begun (408), `idle_timeout` between requests on a kept-alive connection, `body_timeout`
    between two reads of a request body, `send_timeout` for a client that does not take the
    response. A connection that never sends a byte is closed silently after `header_timeout`.

    `upstream_max_idle` bounds the idle connections kept to the API (each is closed anyway after
    `upstream_max_idle_time`, below hypercorn's 5 s keep-alive). Keep it near the expected
    concurrency: below it, connections churn (measured with 1,000 concurrent clients: 64 idle
    allowed gave 9,800 req/s and 22,000 reconnects in 5 s; 1,024 gave 14,200 req/s and 770).
    `editor_max_idle` and `editor_max_idle_time` are the same bounds per editor (below the 5 s
    keep-alive of hypercorn and Node, the usual editors' servers). `tunnel_idle_timeout`
    closes an upgraded connection (a WebSocket) that moved no data frame that long in either
    direction (pings and pongs do not count), with a 1001 close frame.
    `access_log` is the access log's mode (`off`, `sampled`, `full`, see `AccessLog`);
    `access_log_sample_every` keeps one access-log line per that many responses (5xx always).
    `max_connections_per_client` caps the connections open at once from one client address
    (0: no cap): one more is answered 503 at once and closed. A configured trusted proxy's
    connections are not capped (its clients are many); the WebSockets it forwards are, by the
    client address it forwards for (a WebSocket over the cap gets 503).

    `gate` admits requests for `/u/<userId>/...` (without one, they get 503).
    """

    def __init__(
        self,
        host: str,
        port: int,
        api_socket: str | Path,
        readiness: Readiness,
        *,
        max_head_bytes: int = 65536,
        max_headers: int = 100,
        header_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        body_timeout: float = 60.0,
        send_timeout: float = 60.0,
        trusted_proxies: Sequence[str] = (),
        upstream_max_idle: int = 256,
        upstream_max_idle_time: float = 4.0,
        editor_max_idle: int = 64,
        editor_max_idle_time: float = 4.0,
        tunnel_idle_timeout: float = 300.0,
        backlog: int = 1024,
        access_log_sample_every: int = 100,
        access_log: AccessMode = "sampled",
        gate: EditorGate | None = None,
        max_connections_per_client: int = 0,
    ) -> None:
        for name, value in (
            ("header_timeout", header_timeout),
            ("idle_timeout", idle_timeout),
            ("body_timeout", body_timeout),
            ("send_timeout", send_timeout),
            ("tunnel_idle_timeout", tunnel_idle_timeout),
        ):
            if value <= 0:
                raise ValueError(f"FrontDoor: {name} must be positive seconds, not {value!r}")
        if max_connections_per_client < 0:
            raise ValueError("FrontDoor: max_connections_per_client must be 0 (no cap) or more, "
                             f"not {max_connections_per_client!r}")
        if max_head_bytes < 1024:
            raise ValueError(
                f"FrontDoor: max_head_bytes must be at least 1024, not {max_head_bytes}"
            )
        self.host = host
        self.port = port
        self.api_socket = Path(api_socket)
        self._readiness = readiness
        self._max_head_bytes = max_head_bytes
        self._max_headers = max_headers
        self._timeouts = (header_timeout, idle_timeout, body_timeout, send_timeout)
        self._trusted = TrustedProxies(trusted_proxies)
        self._pool_options = (upstream_max_idle, upstream_max_idle_time)
        self._pool = self._new_pool()
        self._editor_options = (editor_max_idle, editor_max_idle_time)
        self._editors = self._new_editor_pools()
        self._tunnel_idle_timeout = tunnel_idle_timeout
        self.gate = gate
        self._serves = 0
        self._backlog = backlog
        self._faults = Faults(logger)
        self._access = AccessLog(mode=access_log, sample_every=access_log_sample_every)
        # The sweeper's period: a quarter of the shortest timeout, within [20 ms, 500 ms].
        self._tick = min(max(min(*self._timeouts, tunnel_idle_timeout) / 4, 0.02), 0.5)
        self._listener: socket.socket | None = None
        self._state: ProxyState | None = None
        self._requests_before = 0  # requests served by earlier runs of `serve()`
        self._connections: set[ClientConnection] = set()
        self._per_client_cap = max_connections_per_client
        self._per_client: dict[str, int] = {}
        self._stopped = False
        self._drained = trio.Event()

    def _new_editor_pools(self) -> EditorPools:
        max_idle, max_idle_time = self._editor_options
        return EditorPools(max_idle=max_idle, max_idle_time=max_idle_time)

    def _new_pool(self) -> UpstreamPool:
        max_idle, max_idle_time = self._pool_options
        return UpstreamPool(self.api_socket, max_idle=max_idle, max_idle_time=max_idle_time)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the bound port via `task_status` (and `self.port`), serve until cancelled.

        Calling it again after it ended (a supervisor restarting a crashed front door) starts
        afresh on the same port: the first call's port 0 became the real one. Only one call
        may run at a time.
        """
        if self._state is not None:
            raise RuntimeError("FrontDoor.serve() is already running")
        if self._serves:
            # A restart: nothing of the previous run is reused (its sockets were closed).
            self._pool = self._new_pool()
            self._editors = self._new_editor_pools()
            self._connections = set()
            self._per_client = {}
            self._drained = trio.Event()
        listener = await self._bind()
        self._serves += 1
        self._listener = listener
        port: int = listener.getsockname()[1]
        self.port = port
        header_timeout, idle_timeout, body_timeout, send_timeout = self._timeouts
        state = ProxyState(
            pool=self._pool,
            editors=self._editors,
            gate=self.gate,
            tunnel_idle_timeout=self._tunnel_idle_timeout,
            readiness=self._readiness.snapshot,
            faults=self._faults,
            access=self._access,
            trusted=self._trusted.__contains__,
            default_host=_authority(self.host, port),
            max_head_bytes=self._max_head_bytes,
            max_headers=self._max_headers,
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
            body_timeout=body_timeout,
            send_timeout=send_timeout,
        )
        state.max_per_client = self._per_client_cap
        self._state = state
        state.draining = self._stopped
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sweep, state)
                nursery.start_soon(state.tunnels.run)
                if state.guard is not None:
                    nursery.start_soon(state.guard.run)
                task_status.started(port)
                logger.info(
                    "proxy: listening on %s:%d, forwarding to %s", self.host, port, self.api_socket
                )
                await self._accept(listener, state, nursery)
                listener.close()
                if not self._connections:
                    self._drained.set()
                # Connections drain in this nursery; the sweeper keeps enforcing their timeouts.
        finally:
            listener.close()
            self._listener = None
            self._requests_before += state.requests
            self._state = None
            state.close()
            self._pool.close()
            self._editors.close()
            self._access.flush()
            self._faults.flush()

    def stop_accepting(self) -> None:
        """Close the listener and the idle keep-alive connections; in-flight requests finish."""
        if self._stopped:
            return
        self._stopped = True
        if self._state is not None:
            self._state.draining = True
        if self._listener is not None:
            trio.lowlevel.notify_closing(self._listener)
            self._listener.close()
        for conn in list(self._connections):
            if conn.phase == Phase.IDLE or conn.tunnel_quiet(_QUIET_TUNNEL):
                conn.expire("drain")

    async def drained(self) -> None:
        """Wait until `stop_accepting()` was called and every connection has closed."""
        await self._drained.wait()

    def statistics(self) -> FrontDoorStatistics:
        """Open connections, requests served, errors by kind, and the upstream pools' counters."""
        idle = (Phase.NEW, Phase.IDLE)
        served = self._requests_before + (self._state.requests if self._state is not None else 0)
        return FrontDoorStatistics(
            accepting=self._listener is not None and not self._stopped,
            open_connections=len(self._connections),
            active_requests=sum(1 for c in self._connections if c.phase not in idle),
            requests_served=served,
            errors=dict(self._faults.counts),
            upstream=self._pool.statistics(),
            editors=self._editors.statistics(),
            serves=self._serves,
            tunnels=len(self._state.tunnels) if self._state is not None else 0,
            tunnel_bytes=((self._state.tunnels.bytes_moved[0],
                           self._state.tunnels.bytes_moved[1])
                          if self._state is not None else (0, 0)),
            guarded=(len(self._state.guard)
                     if self._state is not None and self._state.guard is not None else 0),
        )

    @property
    def access_log(self) -> AccessLog:
        """The access log: its counts by status class feed `/metrics`."""
        return self._access

    def activity_nowait(self, user_id: str) -> UserActivity | None:
        """The last navigation, non-GET request and WebSocket traffic seen for `user_id`'s
        editor (None without a gate)."""
        return self.gate.activity.last_nowait(user_id) if self.gate is not None else None

    async def _bind(self) -> socket.socket:
        infos = await trio.socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"cannot resolve {self.host!r}")
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(self._backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(
                exc.errno, f"cannot listen on {self.host}:{self.port}: {exc.strerror}"
            ) from exc
        return sock

    async def _accept(
        self, listener: socket.socket, state: ProxyState, nursery: trio.Nursery
    ) -> None:
        while not self._stopped:
            try:
                await trio.lowlevel.wait_readable(listener)
            except trio.ClosedResourceError:
                return
            for _ in range(_ACCEPT_BATCH):
                try:
                    sock, address = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if self._stopped or exc.errno == errno.EBADF:
                        return
                    if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                        self._faults.record("accept_error", state.now, str(exc))
                        await trio.sleep(0.1)
                        break
                    continue  # ECONNABORTED and friends: that client is gone, not the listener
                sock.setblocking(False)
                client = address[0] if sock.family != socket.AF_UNIX else "unix"
                if self._per_client_cap and not self._admit_client(client, state):
                    _refuse_nowait(sock)
                    continue
                if sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn = ClientConnection(state, sock, client)
                self._connections.add(conn)
                nursery.start_soon(self._connection, conn)

    def _admit_client(self, client: str, state: ProxyState) -> bool:
        """Count one more connection from `client`, unless it is at its cap (then False)."""
        if state.trusted(client):
            return True
        count = self._per_client.get(client, 0)
        if count >= self._per_client_cap:
            self._faults.record("too_many_connections", state.now, client)
            return False
        self._per_client[client] = count + 1
        return True

    async def _connection(self, conn: ClientConnection) -> None:
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            if self._per_client_cap:
                count = self._per_client.get(conn.client_ip, 0) - 1
                if count > 0:
                    self._per_client[conn.client_ip] = count
                else:
                    self._per_client.pop(conn.client_ip, None)
            if self._stopped and not self._connections:
                self._drained.set()

    async def _sweep(self, state: ProxyState) -> None:
        next_flush = trio.current_time() + _FLUSH_INTERVAL
        while True:
            await trio.sleep(self._tick)
            now = trio.current_time()
            state.now = now
            draining = self._stopped
            for conn in self._connections:
                if conn.deadline < now:
                    conn.expire(_EXPIRY_REASONS.get(conn.phase, "timeout"))
                elif conn.write_deadline < now:
                    conn.expire("send_timeout")
                elif draining and conn.tunnel_quiet(_QUIET_TUNNEL):
                    conn.expire("drain")
            self._pool.sweep()
            self._editors.sweep()
            if now >= next_flush:
                next_flush = now + _FLUSH_INTERVAL
                self._access.flush()
                self._faults.flush()


def _refuse_nowait(sock: socket.socket) -> None:
    """Answer a connection over its client's cap with a 503 and close it, without waiting."""
    try:
        sock.send(_TOO_MANY)
        sock.shutdown(socket.SHUT_WR)
        # Closing with unread bytes (a request already sent) would reset the connection,
        # which can destroy the answer before the client reads it.
        sock.recv(65536)
    except OSError:
        pass
    sock.close()


def _authority(host: str, port: int) -> bytes:
    """`host:port` as a Host header value (brackets around an IPv6 address)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}".encode("idna")
