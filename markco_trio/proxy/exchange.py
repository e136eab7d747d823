"""One client connection of the front door: read a head, answer or forward it, stream, repeat.

This is the thin trio layer: the decisions are made by the pure modules, above all the exchange
core (`core`: framing, keep-alive, retry eligibility, deadlines; `head`, `routing`, `rewrite`,
`chunked`, `answers`) and, for `/u/<owner>/...`, by the editor gate (`gate`); here bytes move
between two sockets. A request goes to the API over its unix socket, or to a user's
editor over TCP; the `_Via` of a request says which pool, how the head changes and whether the
response is filtered.

Bodies stream both ways through one fixed buffer per direction, never whole; a large response
of known length is spliced (socket -> pipe -> socket, no copy through Python). A request body
is pumped by a second task only when it did not arrive with its head, so that an upstream may
answer before reading it (`Expect: 100-continue`, an early 413) without deadlocking the proxy.
Upgraded connections are handed to the front door's `TunnelHub` after their 101.

Timeouts cost no cancel scope, per request or per connection (one costs ~5 µs to enter and
leave, measured; DESIGN §3.1): a connection publishes `deadline` (waiting on the client: idle,
head, body) and `write_deadline` (the client not taking bytes) as plain floats, and when one
passes the front door's sweeper calls `expire()`, which closes the connection's sockets after
`trio.lowlevel.notify_closing`: whatever the connection's task waits on wakes with
`ClosedResourceError`, and any later use of the sockets fails. Waiting on the upstream has no
deadline: a server-sent event stream may be quiet for long. An upgraded connection (a
WebSocket) has an idle deadline, pushed forward by data frames either way (pings are not
traffic), and stays authorised only while the tunnel guard (`guard.py`) says so. So does a
response from an editor whose body is still streaming (an event stream, a long download): it is
watched by the guard from its head until its end, which costs nothing per chunk (a revocation
makes the guard `expire` the connection, whose sockets then fail whatever waits on them);
a response that arrived whole with its head is never watched.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable
from typing import Final

import trio
from trio.lowlevel import wait_readable, wait_writable

from markco_trio.proxy import sockio
from markco_trio.proxy.accesslog import AccessLog
from markco_trio.proxy.admission import is_navigation
from markco_trio.proxy.answers import Answer, json_error, render
from markco_trio.proxy.chunked import BadChunk, ChunkedDecoder, ChunkedEncoder
from markco_trio.proxy.core import (
    Attempts,
    ConnectionClock,
    Copy,
    Phase,
    Refusal,
    RequestBody,
    RequestReader,
    ResponseReader,
    answer_keeps_alive,
    error_keeps_alive,
    plan_response,
    request_body,
    switching_protocols,
)
from markco_trio.proxy.faults import Faults
from markco_trio.proxy.gate import Credential, EditorForward, EditorGate
from markco_trio.proxy.guard import TunnelGuard
from markco_trio.proxy.head import BadResponse, RequestHead, ResponseHead
from markco_trio.proxy.hosts import EditorAuthRoute, OnEditorHost
from markco_trio.proxy.paths import UserPath
from markco_trio.proxy.rewrite import (
    EditorScope,
    RequestIds,
    acceptable_request_id,
    forward_request_head,
    forward_response_head,
    forwarded_client,
)
from markco_trio.proxy.routing import FORWARD_TO_API, ProgressRoute, route
from markco_trio.proxy.tunnels import Tunnel, TunnelHub
from markco_trio.proxy.upstream import (
    EditorPools,
    UpstreamBroken,
    UpstreamClosedEarly,
    UpstreamConnection,
    UpstreamPool,
    UpstreamUnavailable,
)
from markco_trio.proxy.waiting import stream_progress
from markco_trio.proxy.wsframes import GOING_AWAY, POLICY_VIOLATION
from markco_trio.readiness import ReadinessReport

__all__ = ["ClientConnection", "Phase", "ProxyState"]

_RECV_SIZE: Final = 65536  # one read of a head
# Bulk bodies move through pooled 256 KiB buffers (measured: 1.76 GB/s on 1 MiB responses,
# against 1.47 GB/s with 128 KiB); at most 16 idle buffers (4 MiB) are kept. Large responses
# of known length are spliced instead (below), so buffers mostly carry uploads.
_BUFFER_SIZE: Final = 262144
_MAX_POOLED_BUFFERS: Final = 16
_CHECKPOINT_EVERY: Final = 16
_PIPE_SIZE: Final = 1024 * 1024
_MAX_POOLED_PIPES: Final = 32
_SPLICE_FLAGS: Final = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
# A lingering close reads and discards at most this much, for at most this long.
_LINGER_SECONDS: Final = 2.0
_LINGER_BYTES: Final = 4 * 1024 * 1024
_INF: Final = float("inf")
_PROGRESS_HEAD: Final = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n"
    b"x-accel-buffering: no\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
)
_NO_GATE: Final = json_error(503, "editors_unavailable", "this front door serves no editors")
# The close frame a tunnel's client gets when the proxy ends it, by the reason it ends.
_CLOSE_FRAMES: Final = {
    "tunnel_idle_timeout": (GOING_AWAY, "idle for too long"),
    "drain": (GOING_AWAY, "the server is restarting"),
    "tunnel_revoked": (POLICY_VIOLATION, "access was revoked"),
}
_TOO_MANY_UPGRADES: Final = Answer(
    503,
    json_error(503, "too_many_connections",
               "too many WebSockets from your address at once; close some and try again").body,
    headers=((b"retry-after", b"5"),),
)
_ERROR_CODES: Final = {
    400: "bad_request",
    408: "request_timeout",
    417: "expectation_failed",
    431: "request_header_fields_too_large",
    501: "not_implemented",
    505: "http_version_not_supported",
}


class _Via:
    """How one request travels upstream: the pool, the head's changes, the response filter.

    The API's is one shared instance; an editor's is made per request from the gate's
    `EditorForward`. `owner` is the editor's owner (for WebSocket activity), `name` what the
    upstream is called in error messages; `credential`, `timed` and `editor_host` are what a
    WebSocket to an editor (or a response streaming from it) keeps so that its admission can be
    decided again (see `guard.TunnelGuard`).
    """

    __slots__ = ("pool", "target", "drop", "add", "scope", "owner", "name", "credential",
                 "timed", "editor_host")

    def __init__(
        self,
        pool: UpstreamPool,
        *,
        target: bytes | None = None,
        drop: frozenset[bytes] = frozenset(),
        add: tuple[bytes, ...] = (),
        scope: EditorScope | None = None,
        owner: str | None = None,
        name: str = "the API",
        credential: Credential | None = None,
        timed: bool = False,
        editor_host: bool = False,
    ) -> None:
        self.pool = pool
        self.target = target
        self.drop = drop
        self.add = add
        self.scope = scope
        self.owner = owner
        self.name = name
        self.credential = credential
        self.timed = timed
        self.editor_host = editor_host


class ProxyState:
    """What all connections of one front door share: the pool, limits, clocks and counters."""

    __slots__ = (
        "pool",
        "api",
        "editors",
        "gate",
        "tunnels",
        "guard",
        "tunnel_idle_timeout",
        "readiness",
        "ids",
        "faults",
        "access",
        "trusted",
        "default_host",
        "scheme",
        "max_head_bytes",
        "max_headers",
        "header_timeout",
        "idle_timeout",
        "body_timeout",
        "send_timeout",
        "now",
        "draining",
        "max_per_client",
        "_upgrades",
        "requests",
        "_buffers",
        "_pipes",
        "_splice",
    )

    def __init__(
        self,
        *,
        pool: UpstreamPool,
        readiness: Callable[[], ReadinessReport],
        faults: Faults,
        access: AccessLog,
        trusted: Callable[[str], bool],
        default_host: bytes,
        max_head_bytes: int,
        max_headers: int,
        header_timeout: float,
        idle_timeout: float,
        body_timeout: float,
        send_timeout: float,
        editors: EditorPools | None = None,
        gate: EditorGate | None = None,
        tunnel_idle_timeout: float = 300.0,
    ) -> None:
        self.pool = pool
        self.api = _Via(pool)
        self.editors = editors if editors is not None else EditorPools()
        self.gate = gate
        self.tunnels = TunnelHub()
        self.guard = TunnelGuard(gate) if gate is not None else None
        self.tunnel_idle_timeout = tunnel_idle_timeout
        self.readiness = readiness
        self.ids = RequestIds()
        self.faults = faults
        self.access = access
        self.trusted = trusted
        self.default_host = default_host
        self.scheme = b"http"
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        self.now = trio.current_time()  # coarse: the sweeper advances it
        self.draining = False
        self.requests = 0
        # Behind a trusted proxy every client shares its address: WebSockets (which a client
        # can hold by the thousand) are capped per forwarded client instead (0: no cap).
        self.max_per_client = 0
        self._upgrades: dict[bytes, int] = {}
        self._buffers: list[bytearray] = []
        self._pipes: list[tuple[int, int]] = []
        self._splice = hasattr(os, "splice")

    def hold_upgrade(self, client: bytes) -> bool:
        """Count one more upgrade of a forwarded `client`, unless it is at its cap."""
        count = self._upgrades.get(client, 0)
        if count >= self.max_per_client:
            return False
        self._upgrades[client] = count + 1
        return True

    def release_upgrade(self, client: bytes) -> None:
        """An upgrade counted by `hold_upgrade` ended."""
        count = self._upgrades.get(client, 0) - 1
        if count > 0:
            self._upgrades[client] = count
        else:
            self._upgrades.pop(client, None)

    def take_buffer(self) -> bytearray:
        """A streaming buffer (pooled: a fresh 128 KiB bytearray would be mmap'd each time)."""
        return self._buffers.pop() if self._buffers else bytearray(_BUFFER_SIZE)

    def give_buffer(self, buffer: bytearray) -> None:
        """Return a buffer taken with `take_buffer`."""
        if len(self._buffers) < _MAX_POOLED_BUFFERS:
            self._buffers.append(buffer)

    def take_pipe(self) -> tuple[int, int] | None:
        """An empty pipe (read end, write end) for splicing, or None where splicing is not
        available (not Linux, or no descriptor left): the caller copies instead."""
        if self._pipes:
            return self._pipes.pop()
        if not self._splice:
            return None
        try:
            read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            # A smaller pipe than asked for still works, one pipe-full at a time... but
            # `_splice_length` counts on its size: use the copy path instead.
            os.close(read_end)
            os.close(write_end)
            self._splice = False
            return None
        return read_end, write_end

    def give_pipe(self, pipe: tuple[int, int]) -> None:
        """Return an EMPTY pipe taken with `take_pipe`."""
        if len(self._pipes) < _MAX_POOLED_PIPES:
            self._pipes.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])

    def close(self) -> None:
        """Close the pooled pipes (the front door stops serving)."""
        while self._pipes:
            read_end, write_end = self._pipes.pop()
            os.close(read_end)
            os.close(write_end)


class _ClientGone(Exception):
    """The client closed or reset its connection."""


class _BodyPump:
    """Outcome of pumping a request body to the upstream (filled by the pump task)."""

    __slots__ = ("done", "upstream_failed", "error", "detail")

    def __init__(self) -> None:
        self.done = False  # every byte of the body went upstream
        self.upstream_failed = False  # the upstream stopped reading the body
        self.error: str | None = None
        self.detail: BaseException | None = None


class ClientConnection(ConnectionClock):
    """Serves the requests of one client connection, in order, until either side closes.

    Its phase and deadlines (`phase`, `deadline`, `write_deadline`, `expired`) are the
    `core.ConnectionClock` it is; the requests are cut by a `core.RequestReader`.
    """

    __slots__ = (
        "_state",
        "sock",
        "client_ip",
        "_client_ip_bytes",
        "_trusted",
        "_reader",
        "_upstream",
        "_tunnel_handle",
        "_response_started",
        "_body_pending",
        "_linger",
    )

    def __init__(self, state: ProxyState, sock: socket.socket, client_ip: str) -> None:
        self._state = state
        self.sock = sock
        self.client_ip = client_ip
        self._client_ip_bytes = client_ip.encode("ascii")
        self._trusted = state.trusted(client_ip)
        ConnectionClock.__init__(self, state.now, state.header_timeout)
        self._reader = RequestReader(max_head_bytes=state.max_head_bytes,
                                     max_headers=state.max_headers)
        self._upstream: socket.socket | None = None  # the upstream socket in use, if any
        self._tunnel_handle: Tunnel | None = None
        self._response_started = False
        self._body_pending = False
        self._linger = False  # close after an answer the client may still be sending into

    def expire(self, reason: str) -> None:
        """Stop this connection (a deadline passed, or the front door drains it): account for
        it (a 408 is sent at once where one is due), take its tunnel out of the hub, and close
        its sockets so that its task wakes from whatever it waits on."""
        if self.expired is not None:
            return
        self.expired = reason
        self._account_expiry(reason)
        tunnel = self._tunnel_handle
        if tunnel is not None:
            close = _CLOSE_FRAMES.get(reason)
            if close is not None:
                self._state.tunnels.send_close(tunnel, *close)
            else:
                self._state.tunnels.abort(tunnel)
        for sock in (self._upstream, self.sock):
            if sock is not None and sock.fileno() >= 0:
                trio.lowlevel.notify_closing(sock)
                sock.close()

    async def run(self) -> None:
        """Serve until the client or the proxy closes; never raises except trio.Cancelled."""
        state = self._state
        try:
            await self._serve()
            if self._linger and self.expired is None:
                await self._drain_before_close()
        except (_ClientGone, ConnectionError, trio.ClosedResourceError):
            if self.expired is None:
                state.faults.record("client_disconnected", state.now)
        except OSError as exc:
            if self.expired is None:  # (after an expiry: the closed socket, as intended)
                state.faults.record("client_io_error", state.now, exc)
        except Exception as exc:
            if self.expired is None:
                state.faults.record("internal", state.now, exc)
        finally:
            self.sock.close()

    async def _drain_before_close(self) -> None:
        """A lingering close (as nginx's): we answered and are closing while the client may
        still be sending (a body we did not read, the rest of an oversized head). Closing at
        once with unread bytes makes the kernel send a RST, which can destroy our answer
        before the client reads it; so say we are done sending, and read and discard what
        still comes for a little while."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        drained = 0
        with trio.move_on_after(_LINGER_SECONDS):
            while drained < _LINGER_BYTES:
                data = await sockio.recv(self.sock, _RECV_SIZE)
                if not data:
                    break
                drained += len(data)

    def _account_expiry(self, reason: str) -> None:
        state = self._state
        if reason in ("header_timeout", "body_timeout"):
            state.faults.record(reason, state.now)
            if not self._response_started:
                # Best effort, without waiting: the client is the one being slow.
                answer = json_error(408, "request_timeout", "request not received in time")
                try:
                    self.sock.send(render(answer, keep_alive=False))
                except OSError:
                    pass
        elif reason in ("send_timeout", "tunnel_idle_timeout", "tunnel_revoked",
                        "stream_revoked"):
            state.faults.record(reason, state.now)

    def tunnel_quiet(self, seconds: float) -> bool:
        """Whether this connection is a tunnel (or a progress stream) that moved no data frame
        for `seconds`: a shutdown closes it at once instead of waiting for it."""
        if self.phase != Phase.TUNNEL:
            return False
        if self._tunnel_handle is None:
            return True  # a progress stream: the wait page reconnects by itself
        state = self._state
        return self.deadline - state.tunnel_idle_timeout + seconds <= state.now

    # ---------------------------------------------------------------- requests

    async def _serve(self) -> None:
        state = self._state
        sock = self.sock
        reader = self._reader
        streak = 0
        first = True
        while True:
            try:
                # (Kept alive, the buffer is usually empty: no need to ask the reader.)
                head = reader.next_head() if reader.buf else None
                if head is not None:
                    # A pipelined head was already buffered: no wait, so yield now and then.
                    streak += 1
                    if streak >= _CHECKPOINT_EVERY:
                        streak = 0
                        await trio.lowlevel.checkpoint()
                else:
                    if not reader.buf:
                        if state.draining:
                            return
                        if first:
                            # A new connection usually has its request waiting already.
                            data = await sockio.recv(sock, _RECV_SIZE)
                        else:
                            self.idle(state.now, state.idle_timeout)
                            data = await sockio.recv_waiting(sock, _RECV_SIZE)
                        if not data:
                            return
                        self.head_begun(state.now, state.header_timeout)
                        head = reader.receive(data)
                    else:
                        self.head_begun(state.now, state.header_timeout)
                        head = reader.next_head()
                    while head is None:
                        data = await sockio.recv(sock, _RECV_SIZE)
                        if not data:
                            return
                        head = reader.receive(data)
            except Refusal as exc:
                await self._refuse(exc.status, exc.reason, exc.kind)
                return
            first = False
            self.busy()
            hosts = state.gate.hosts if state.gate is not None else None
            decision = route(head, state.readiness) if hosts is None else (
                hosts.route(head) or route(head, state.readiness))
            if decision is FORWARD_TO_API:
                keep = await self._forward(head, state.api)
            elif isinstance(decision, UserPath):
                keep = await self._to_editor(head, decision)
            elif isinstance(decision, OnEditorHost):
                keep = await self._to_editor(head, decision.path, editor_host=True)
            elif isinstance(decision, EditorAuthRoute):
                assert state.gate is not None
                keep = await self._answer(state.gate.editor_auth(head, decision.owner), head)
            elif isinstance(decision, ProgressRoute):
                await self._progress(head, decision.owner, editor_host=hosts is not None)
                return
            else:
                assert isinstance(decision, Answer)
                keep = await self._answer(decision, head)
            if not keep:
                return
            self._response_started = False

    async def _answer(self, answer: Answer, head: RequestHead) -> bool:
        """Send an answer decided here; whether the connection stays open (the reader then
        holds what followed the head: the next request)."""
        state = self._state
        keep = answer_keeps_alive(head, state.draining)
        await self._send(render(answer, head_only=head.method == b"HEAD", keep_alive=keep))
        state.requests += 1
        state.access.record(answer.status, head.method, head.target, b"-", self.client_ip)
        if not keep:
            self._linger = head.has_body
        return keep

    async def _to_editor(
        self, head: RequestHead, path: UserPath, *, editor_host: bool = False,
    ) -> bool:
        """Admit a request for a user's editor, then forward it or answer the refusal."""
        state = self._state
        gate = state.gate
        if gate is None:
            return await self._answer(_NO_GATE, head)
        try:
            decision = await gate.admit(head, path, editor_host=editor_host)
        except Exception as exc:  # the authority's storage failed on a cache miss, say
            state.faults.record("gate_error", state.now, exc)
            decision = json_error(503, "auth_unavailable", "cannot check credentials now")
        if isinstance(decision, Answer):
            return await self._answer(decision, head)
        assert isinstance(decision, EditorForward)
        via = _Via(
            state.editors.get(decision.address),
            target=decision.target,
            drop=decision.drop,
            add=decision.add,
            scope=decision.scope,
            owner=decision.owner,
            name="the editor",
            credential=decision.credential,
            timed=decision.timed,
            editor_host=editor_host,
        )
        return await self._forward(head, via)

    async def _progress(self, head: RequestHead, owner: str, *,
                        editor_host: bool = False) -> None:
        """Stream `owner`'s start progress to the wait page; the connection closes after."""
        state = self._state
        gate = state.gate
        refusal: Answer | None = _NO_GATE
        if gate is not None:
            try:
                refusal = await gate.admit_progress(head, owner, editor_host=editor_host)
            except Exception as exc:
                state.faults.record("gate_error", state.now, exc)
                refusal = json_error(503, "auth_unavailable", "cannot check credentials now")
        if refusal is not None or gate is None or gate.compute is None:
            await self._answer(refusal or _NO_GATE, head)
            return
        compute = gate.compute
        await self._send(_PROGRESS_HEAD)
        self._response_started = True
        state.requests += 1
        state.access.record(200, head.method, head.target, b"-", self.client_ip)
        self.tunnel(state.now, _INF)  # long-lived, and not a request in flight for draining

        async def send_event(data: bytes) -> None:
            await self._send(b"%x\r\n%b\r\n" % (len(data), data))

        gone = False

        async def produce(cancel_scope: trio.CancelScope) -> None:
            nonlocal gone
            try:
                await stream_progress(compute, owner, send_event,
                                      reachable=state.editors.reachable)
            except (OSError, trio.ClosedResourceError):
                gone = True
            cancel_scope.cancel()

        async def watch_client(cancel_scope: trio.CancelScope) -> None:
            # The page closing ends the stream at once, not at the next event. Nothing is
            # expected from an EventSource; whatever comes is ignored.
            nonlocal gone
            try:
                while await sockio.recv(self.sock, _RECV_SIZE):
                    pass
            except (OSError, trio.ClosedResourceError):
                pass
            gone = True
            cancel_scope.cancel()

        # Who may follow it is who may enter the editor: decided again on revocations, as for
        # a streaming response (`_relay_response`).
        guard = state.guard
        if guard is not None:
            guard.watch(self, owner, Credential.of(head, editor_host=editor_host),
                        reason="stream_revoked")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_client, nursery.cancel_scope)
                nursery.start_soon(produce, nursery.cancel_scope)
        finally:
            if guard is not None:
                guard.forget(self)
        if gone:
            if self.expired is None:  # (a revocation is counted by `expire`)
                state.faults.record("client_disconnected", state.now)
            return
        await self._send(b"0\r\n\r\n")

    async def _refuse(self, status: int, reason: str, kind: str) -> None:
        """Answer a request we will not serve, and let the caller close the connection."""
        state = self._state
        self._linger = True
        state.faults.record(kind, state.now, reason)
        if not self._response_started:
            answer = json_error(status, _ERROR_CODES.get(status, "bad_request"), reason)
            try:
                await self._send(render(answer, keep_alive=False))
            except OSError:
                pass
        state.access.record(status, b"-", b"-", b"-", self.client_ip)

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        """Send to the client; if its buffer is full, arm the send-stall deadline meanwhile."""
        self._state.access.bytes_sent += len(data)  # for /metrics, read at scrape time
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        state = self._state
        self.stalled(state.now, state.send_timeout)
        await sockio.send_all(sock, memoryview(data)[sent:])
        self.flowing()

    # ---------------------------------------------------------------- forwarding

    async def _forward(self, head: RequestHead, via: _Via, *, counted: bool = False) -> bool:
        """Forward one request `via` its upstream and relay the response; whether the
        connection stays open (the reader then holds the start of the next request).

        (`counted`: a WebSocket handshake from a trusted proxy already counted against its
        forwarded client's cap.)
        """
        state = self._state
        if head.upgrade is not None and self._trusted and state.max_per_client and not counted:
            client = forwarded_client(head)
            if client is not None:
                if not state.hold_upgrade(client):
                    state.faults.record("too_many_connections", state.now,
                                        client.decode("latin-1"))
                    return await self._answer(_TOO_MANY_UPGRADES, head)
                try:
                    return await self._forward(head, via, counted=True)
                finally:
                    state.release_upgrade(client)
        request_id = head.request_id
        if not acceptable_request_id(request_id):
            request_id = state.ids.next()
        assert request_id is not None
        out = forward_request_head(
            head,
            client_ip=self._client_ip_bytes,
            scheme=state.scheme,
            request_id=request_id,
            trusted=self._trusted,
            default_host=state.default_host,
            target=via.target,
            drop=via.drop,
            add=via.add,
        )

        # How much of the body came with the head?
        try:
            body = request_body(head, self._reader.take())
        except BadChunk as exc:
            await self._refuse(400, exc.reason, "bad_request")
            return False
        self._body_pending = not body.done
        if body.first:
            out += body.first

        pool = via.pool
        attempts = Attempts(head, body.done)
        while True:
            try:
                upstream = await pool.send_request(out, fresh=attempts.fresh,
                                                   verify=attempts.verify)
            except (UpstreamUnavailable, UpstreamBroken) as exc:
                unavailable = isinstance(exc, UpstreamUnavailable)
                await self._bad_gateway(head, request_id, via, unavailable, str(exc),
                                        down=unavailable)
                keep = error_keeps_alive(head, self._body_pending, state.draining)
                if keep:  # what followed the body is the next request's
                    self._reader.push_back(body.leftover)
                return keep

            clean = False
            self._upstream = upstream.sock  # for `expire`
            try:
                if head.upgrade is not None:
                    result = await self._relay_response(upstream, head, request_id, via,
                                                        body.leftover)
                elif body.done:
                    result = await self._relay_response(upstream, head, request_id, via, b"")
                else:
                    pump = _BodyPump()
                    result = (False, False)
                    relay_error: Exception | None = None
                    self.body()
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            self._pump_request_body, upstream, body, pump, nursery.cancel_scope
                        )
                        try:
                            result = await self._relay_response(
                                upstream, head, request_id, via, b""
                            )
                        except Exception as exc:
                            # Raised after the nursery: inside it, it would come out as a group.
                            relay_error = exc
                            nursery.cancel_scope.cancel()
                        else:
                            if not pump.done:
                                nursery.cancel_scope.cancel()  # answered before the body ended
                    if relay_error is not None:
                        raise relay_error
                    if pump.error is not None:
                        await self._body_failed(pump)
                        return False
                    if not pump.done:  # answered early, or the upstream stopped reading the body
                        self._linger = True
                        return False
                client_keep, upstream_clean = result
                if via.owner is not None and state.editors.down:
                    state.editors.mark_up(pool.address)
                if upstream_clean:
                    pool.release(upstream)
                    clean = True
                if client_keep:  # what followed the body is the next request's
                    self._reader.push_back(body.leftover)
                return client_keep
            except UpstreamClosedEarly as exc:
                if attempts.closed_early(upstream.reused):
                    # The keep-alive race: the server closed this idle connection as the request
                    # left. Nothing was answered; send it once more on a new connection.
                    pool.count_retry()
                    continue
                await self._bad_gateway(head, request_id, via, False, str(exc), down=True)
                return False
            except (BadResponse, BadChunk, UpstreamBroken) as exc:
                detail = exc.reason if isinstance(exc, BadResponse | BadChunk) else str(exc)
                await self._bad_gateway(head, request_id, via, False, detail)
                return False
            finally:
                self._upstream = None
                if not clean:
                    pool.discard(upstream)

    async def _bad_gateway(
        self, head: RequestHead, request_id: bytes, via: _Via, unavailable: bool, detail: str,
        *, down: bool = False,
    ) -> None:
        """Answer 502 in the API's error convention, unless the response already began.

        An editor that is `down` (nothing accepts at its address, or it closed before
        answering: it crashed, or is being restarted) is answered as one that is not ready
        (DESIGN §3.2): a navigation gets the wait page, which follows the editor's progress
        and continues by itself, and a request that found nobody listening gets 503 +
        Retry-After. The address is remembered as down, so that the wait page's progress
        stream says "ready" only once the editor accepts connections again.
        """
        state = self._state
        who = "upstream" if via.owner is None else "editor"
        kind = f"{who}_unavailable" if unavailable else f"{who}_error"
        state.faults.record(kind, state.now, detail)
        if self._response_started:
            return  # too late for a status: closing the connection is the only signal left
        gate = state.gate
        if down and via.owner is not None and gate is not None:
            state.editors.mark_down(via.pool.address)
            navigation = head.upgrade is None and is_navigation(head)
            if navigation or unavailable:
                answer = gate.editor_down(via.owner, navigation=navigation)
            else:
                answer = json_error(502, kind, f"{via.name} is not answering; try again shortly")
        else:
            answer = json_error(502, kind, f"{via.name} is not answering; try again shortly")
        keep = error_keeps_alive(head, self._body_pending, state.draining)
        self._linger = self._body_pending
        await self._send(render(answer, head_only=head.method == b"HEAD", keep_alive=keep))
        self._response_started = True
        state.requests += 1
        state.access.record(answer.status, head.method, head.target, request_id, self.client_ip)

    async def _body_failed(self, pump: _BodyPump) -> None:
        """The request body broke off: answer 400 for bad framing; a vanished client gets none."""
        if self.expired is not None:
            return  # the body timed out: accounted for by `expire`
        if isinstance(pump.detail, BadChunk):
            await self._refuse(400, pump.detail.reason, "bad_request")
        else:
            state = self._state
            state.faults.record("client_disconnected", state.now)

    async def _pump_request_body(
        self,
        upstream: UpstreamConnection,
        body: RequestBody,
        pump: _BodyPump,
        cancel_scope: trio.CancelScope,
    ) -> None:
        """Copy the rest of a request body from the client to the upstream."""
        state = self._state
        client = self.sock
        usock = upstream.sock
        buffer = state.take_buffer()
        view = memoryview(buffer)
        chunks = 0
        try:
            while True:
                self.body_wait(state.now, state.body_timeout)
                try:
                    n = await sockio.recv_into(client, buffer, body.want(_BUFFER_SIZE))
                except (OSError, trio.ClosedResourceError) as exc:
                    raise _ClientGone from exc
                if not n:
                    raise _ClientGone
                n = body.took(buffer, n)
                try:
                    await sockio.send_all(usock, view[:n])
                except (OSError, trio.ClosedResourceError):
                    # The upstream stopped reading (it may be answering already): read no
                    # more of this body; the relay decides what the client gets.
                    pump.upstream_failed = True
                    return
                if body.done:
                    pump.done = True
                    self._body_pending = False
                    return
                chunks += 1
                if not chunks % _CHECKPOINT_EVERY:
                    await trio.lowlevel.checkpoint()
        except BadChunk as exc:
            pump.error, pump.detail = "bad_request", exc
            cancel_scope.cancel()
        except _ClientGone as exc:
            pump.error, pump.detail = "client_disconnected", exc
            cancel_scope.cancel()
        finally:
            self.busy()
            view.release()
            state.give_buffer(buffer)

    async def _relay_response(
        self,
        upstream: UpstreamConnection,
        head: RequestHead,
        request_id: bytes,
        via: _Via,
        tunnel_bytes: bytes,
    ) -> tuple[bool, bool]:
        """Relay interim responses and the final response of `upstream` to the client.

        Returns (the client connection may stay open, the upstream connection is reusable).
        """
        state = self._state
        usock = upstream.sock
        scope = via.scope
        reader = ResponseReader(state.max_head_bytes, state.max_headers)
        while True:
            found = reader.next_head() if reader.buf else None  # (after a 1xx, maybe more)
            while found is None:
                try:
                    data = await sockio.recv_waiting(usock, _RECV_SIZE)
                except ConnectionError as exc:
                    if reader.closed_early():
                        raise UpstreamClosedEarly(
                            f"{via.name} reset the connection before answering: {exc}"
                        ) from exc
                    raise UpstreamBroken(f"{via.name} reset the connection: {exc}") from exc
                if not data:
                    if reader.closed_early():
                        raise UpstreamClosedEarly(
                            f"{via.name} closed the connection before answering"
                        )
                    raise UpstreamBroken(f"{via.name} closed the connection mid-answer")
                found = reader.receive(data)
            resp, raw = found
            if resp.status >= 200:
                break
            if resp.status == 101:
                switching_protocols(head, resp)
                await self._tunnel(usock, resp, raw, reader.buf, tunnel_bytes, via)
                state.requests += 1
                state.access.record(101, head.method, head.target, request_id, self.client_ip)
                return False, False
            if head.http11:  # 1xx never go to HTTP/1.0 clients
                await self._send(forward_response_head(resp, raw, scope=scope))

        self._response_started = True
        plan = plan_response(head, resp, raw, reader.buf, state.draining, self._body_pending,
                             scope)
        copy = plan.copy
        upstream_clean = plan.upstream_clean
        if copy == Copy.NOTHING:  # the whole response is here: nothing to watch
            await self._send(plan.send)
        else:
            # The body is still coming, maybe for long: it flows only while its caller may
            # still see it (the guard expires this connection otherwise; nothing per chunk).
            guard = state.guard
            owner = via.owner
            if guard is not None and owner is not None:
                credential = via.credential or Credential.of(head, editor_host=via.editor_host)
                guard.watch(self, owner, credential, timed=via.timed, reason="stream_revoked")
            try:
                await self._send(plan.send)
                if copy == Copy.LENGTH:
                    await self._copy_length(usock, plan.length, plan.splice)
                elif copy == Copy.CHUNKED:
                    assert plan.decoder is not None
                    clean_end = await self._copy_chunked(usock, plan.decoder)
                    upstream_clean = upstream_clean and clean_end
                elif copy == Copy.DECHUNKED:
                    assert plan.decoder is not None
                    await self._copy_dechunked(usock, plan.decoder)
                elif copy == Copy.UNTIL_CLOSE:
                    await self._copy_until_close(usock, plan.encoder)
            finally:
                if guard is not None and owner is not None:
                    guard.forget(self)

        state.requests += 1
        state.access.record(resp.status, head.method, head.target, request_id, self.client_ip)
        return plan.client_keep, upstream_clean

    async def _copy_length(self, usock: socket.socket, remaining: int, splice: bool) -> None:
        """Relay the rest of a body of known length: spliced through a pipe when large and
        splicing works here, else through a pooled buffer."""
        state = self._state
        if splice:
            pipe = state.take_pipe()
            if pipe is not None:
                await self._splice_length(usock, remaining, pipe)
                return
        buffer = state.take_buffer()
        view = memoryview(buffer)
        chunks = 0
        try:
            while remaining:
                n = await self._upstream_recv_into(usock, buffer, min(remaining, _BUFFER_SIZE))
                remaining -= n
                await self._send(view[:n])
                chunks += 1
                if not chunks % _CHECKPOINT_EVERY:
                    await trio.lowlevel.checkpoint()
        finally:
            view.release()
            state.give_buffer(buffer)

    async def _splice_length(
        self, usock: socket.socket, remaining: int, pipe: tuple[int, int]
    ) -> None:
        """Move `remaining` bytes from the upstream to the client without copying them through
        Python: socket -> pipe -> socket with `os.splice` (measured on 1 MiB responses: the
        kernel does the copies, the proxy's CPU per MiB drops by about half). The pipe goes
        back to the pool only if it was emptied."""
        state = self._state
        read_end, write_end = pipe
        client = self.sock
        flags = _SPLICE_FLAGS
        in_pipe = 0
        chunks = 0
        try:
            while remaining or in_pipe:
                if remaining and in_pipe < _PIPE_SIZE:
                    try:
                        # File descriptors are read afresh each time: once `expire` closed a
                        # socket its number may belong to another connection (-1 fails).
                        n = os.splice(usock.fileno(), write_end,
                                      min(remaining, _PIPE_SIZE - in_pipe), flags=flags)
                    except BlockingIOError:
                        n = -1
                    except ConnectionError as exc:
                        raise UpstreamBroken(
                            f"the upstream reset the connection mid-response: {exc}") from exc
                    if n == 0:
                        raise UpstreamBroken("the upstream closed the connection mid-response")
                    if n > 0:
                        remaining -= n
                        in_pipe += n
                    elif not in_pipe:
                        await wait_readable(usock)
                        continue
                try:
                    n = os.splice(read_end, client.fileno(), in_pipe, flags=flags)
                except BlockingIOError:
                    self.stalled(state.now, state.send_timeout)
                    await wait_writable(client)
                    self.flowing()
                    continue
                in_pipe -= n
                chunks += 1
                if not chunks % _CHECKPOINT_EVERY:
                    await trio.lowlevel.checkpoint()
        except BaseException:
            os.close(read_end)
            os.close(write_end)
            raise
        state.give_pipe(pipe)

    async def _copy_chunked(self, usock: socket.socket, decoder: ChunkedDecoder) -> bool:
        """Relay a chunked body byte for byte; False if the upstream sent bytes past its end.

        Chunked bodies are often event streams that mostly wait, so each read allocates what
        arrived instead of holding a pooled buffer through the waits.
        """
        chunks = 0
        while True:
            data = await self._upstream_recv(usock)
            stop = decoder.feed(data)
            if stop >= 0:
                await self._send(data[:stop] if stop < len(data) else data)
                return stop == len(data)
            await self._send(data)
            chunks += 1
            if not chunks % _CHECKPOINT_EVERY:
                await trio.lowlevel.checkpoint()

    async def _copy_dechunked(self, usock: socket.socket, decoder: ChunkedDecoder) -> None:
        """Relay a chunked body's payload only (to an HTTP/1.0 client, which then sees EOF)."""
        while not decoder.done:
            data = await self._upstream_recv(usock)
            payload: list[bytes | bytearray] = []
            decoder.feed(data, 0, len(data), payload)
            if payload:
                await self._send(b"".join(payload))

    async def _copy_until_close(self, usock: socket.socket,
                                encoder: ChunkedEncoder | None) -> None:
        """Relay the rest of a body the upstream ends by closing; chunk it with `encoder` for
        an HTTP/1.1 client."""
        while True:
            try:
                data = await sockio.recv(usock, _BUFFER_SIZE)
            except ConnectionError:
                data = b""
            if not data:
                break
            await self._send(encoder.encode(data) if encoder is not None else data)
        if encoder is not None:
            await self._send(encoder.finish())

    async def _upstream_recv(self, usock: socket.socket) -> bytes:
        try:
            data = await sockio.recv(usock, _BUFFER_SIZE)
        except ConnectionError as exc:
            raise UpstreamBroken(f"the upstream reset the connection mid-response: {exc}") from exc
        if not data:
            raise UpstreamBroken("the upstream closed the connection mid-response")
        return data

    async def _upstream_recv_into(self, usock: socket.socket, buffer: bytearray, size: int) -> int:
        try:
            n = await sockio.recv_into(usock, buffer, size)
        except ConnectionError as exc:
            raise UpstreamBroken(f"the upstream reset the connection mid-response: {exc}") from exc
        if not n:
            raise UpstreamBroken("the upstream closed the connection mid-response")
        return n

    # ---------------------------------------------------------------- upgrades

    async def _tunnel(
        self,
        usock: socket.socket,
        resp: ResponseHead,
        raw: bytes,
        rest: bytes,
        client_bytes: bytes,
        via: _Via,
    ) -> None:
        """Relay a 101, then let the tunnel hub splice bytes both ways until both directions
        end (or the tunnel moves no data frame for `tunnel_idle_timeout`: the sweeper expires
        us). A WebSocket to an editor stays authorised only as long as its caller is: the
        guard re-decides it whenever a revocation may have changed the answer."""
        state = self._state
        out = forward_response_head(
            resp, raw, connection=b"upgrade", chunked=False, scope=via.scope
        )
        await self._send(out + rest)
        self._response_started = True
        idle = state.tunnel_idle_timeout
        self.tunnel(state.now, idle)
        if client_bytes:
            await sockio.send_all(usock, client_bytes)
        owner = via.owner
        note = state.gate.activity.websocket if state.gate is not None else None

        def traffic() -> None:
            self.deadline = state.now + idle
            if owner is not None and note is not None:
                note(owner)

        def blocked(stalled: bool) -> None:
            self.write_deadline = state.now + state.send_timeout if stalled else _INF

        hub = state.tunnels
        tunnel = hub.open(self.sock, usock, traffic=traffic, blocked=blocked)
        self._tunnel_handle = tunnel
        guard = state.guard
        guarded = guard is not None and owner is not None and via.credential is not None
        if guarded:
            assert guard is not None and owner is not None and via.credential is not None
            guard.watch(self, owner, via.credential, timed=via.timed)
        try:
            await hub.wait(tunnel)
        finally:
            self._tunnel_handle = None
            if guarded:
                assert guard is not None
                guard.forget(self)

