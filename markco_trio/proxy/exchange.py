"""One client connection of the front door: read a head, answer or forward it, stream, repeat.

This is the thin trio layer: the decisions are made by the pure modules (`head`, `routing`,
`rewrite`, `chunked`, `answers`); here bytes move between two sockets. Bodies stream both ways
through one fixed buffer per direction, never whole; a request body is pumped by a second task
only when it did not arrive with its head, so that an upstream may answer before reading it
(`Expect: 100-continue`, an early 413) without deadlocking the proxy.

Timeouts cost no cancel scope per request (~11 µs each, DESIGN §3.1): a connection publishes
`deadline` (waiting on the client: idle, head, body) and `write_deadline` (the client not taking
bytes) as plain floats, and the front door's sweeper cancels the connection's one scope when one
passes. Waiting on the upstream has no deadline: a server-sent event stream may be quiet for long.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from typing import Final

import trio

from markco_trio.proxy import sockio
from markco_trio.proxy.accesslog import AccessLog
from markco_trio.proxy.answers import Answer, json_error, render
from markco_trio.proxy.chunked import BadChunk, ChunkedDecoder, ChunkedEncoder
from markco_trio.proxy.faults import Faults
from markco_trio.proxy.head import (
    BadRequest,
    BadResponse,
    RequestHead,
    ResponseHead,
    parse_request_head,
    parse_response_head,
)
from markco_trio.proxy.rewrite import (
    RequestIds,
    acceptable_request_id,
    forward_request_head,
    forward_response_head,
)
from markco_trio.proxy.routing import FORWARD_TO_API, route
from markco_trio.proxy.upstream import (
    UpstreamBroken,
    UpstreamConnection,
    UpstreamPool,
    UpstreamUnavailable,
)
from markco_trio.readiness import ReadinessReport

__all__ = ["ClientConnection", "Phase", "ProxyState"]

_RECV_SIZE: Final = 65536  # one read of a head
# Bulk bodies move through pooled 256 KiB buffers (measured: 1.76 GB/s on 1 MiB responses,
# against 1.47 GB/s with 128 KiB); at most 64 idle buffers (16 MiB) are kept.
_BUFFER_SIZE: Final = 262144
_MAX_POOLED_BUFFERS: Final = 64
_SPLICE_READ: Final = 65536
_CHECKPOINT_EVERY: Final = 16
_INF: Final = math.inf
_END_OF_HEAD: Final = b"\r\n\r\n"
_NO_BODY_STATUSES: Final = frozenset([204, 304])
_ERROR_CODES: Final = {
    400: "bad_request",
    408: "request_timeout",
    417: "expectation_failed",
    431: "request_header_fields_too_large",
    501: "not_implemented",
    505: "http_version_not_supported",
}


class Phase:
    """What a connection waits for; the sweeper's timeouts depend on it."""

    NEW: Final = 5  # accepted, no byte yet (header_timeout; closed silently: browsers preconnect)
    IDLE: Final = 0  # between requests (idle_timeout; closed silently)
    HEAD: Final = 1  # a head has begun (header_timeout; 408)
    BUSY: Final = 2  # forwarding: waiting on the upstream (no deadline)
    BODY: Final = 3  # pumping a request body (body inactivity timeout; 408 if nothing sent yet)
    TUNNEL: Final = 4  # an upgraded connection (no deadline)


class ProxyState:
    """What all connections of one front door share: the pool, limits, clocks and counters."""

    __slots__ = (
        "pool",
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
        "requests",
        "_buffers",
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
    ) -> None:
        self.pool = pool
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
        self._buffers: list[bytearray] = []

    def take_buffer(self) -> bytearray:
        """A streaming buffer (pooled: a fresh 128 KiB bytearray would be mmap'd each time)."""
        return self._buffers.pop() if self._buffers else bytearray(_BUFFER_SIZE)

    def give_buffer(self, buffer: bytearray) -> None:
        """Return a buffer taken with `take_buffer`."""
        if len(self._buffers) < _MAX_POOLED_BUFFERS:
            self._buffers.append(buffer)


class _ClientGone(Exception):
    """The client closed or reset its connection."""


class _BodyPump:
    """Outcome of pumping a request body to the upstream (filled by the pump task)."""

    __slots__ = ("done", "leftover", "upstream_failed", "error", "detail")

    def __init__(self) -> None:
        self.done = False
        self.leftover = b""  # bytes after a chunked body's end: the next request's
        self.upstream_failed = False  # the upstream stopped reading the body
        self.error: str | None = None
        self.detail: BaseException | None = None


class ClientConnection:
    """Serves the requests of one client connection, in order, until either side closes."""

    __slots__ = (
        "_state",
        "sock",
        "client_ip",
        "_client_ip_bytes",
        "_trusted",
        "phase",
        "deadline",
        "write_deadline",
        "expired",
        "_scope",
        "_response_started",
        "_body_pending",
    )

    def __init__(self, state: ProxyState, sock: socket.socket, client_ip: str) -> None:
        self._state = state
        self.sock = sock
        self.client_ip = client_ip
        self._client_ip_bytes = client_ip.encode("ascii")
        self._trusted = state.trusted(client_ip)
        self.phase = Phase.NEW
        self.deadline = state.now + state.header_timeout
        self.write_deadline = _INF
        self.expired: str | None = None
        self._scope: trio.CancelScope | None = None
        self._response_started = False
        self._body_pending = False

    def expire(self, reason: str) -> None:
        """Stop this connection (its deadline passed, or the front door drains it)."""
        self.expired = reason
        if self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        """Serve until the client or the proxy closes; never raises except trio.Cancelled."""
        state = self._state
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                try:
                    await self._serve()
                except (_ClientGone, ConnectionError):
                    state.faults.record("client_disconnected", state.now)
                except OSError as exc:
                    state.faults.record("client_io_error", state.now, exc)
                except Exception as exc:
                    state.faults.record("internal", state.now, exc)
            if scope.cancelled_caught and self.expired is not None:
                self._after_expiry(self.expired)
        finally:
            self.sock.close()

    def _after_expiry(self, reason: str) -> None:
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
        elif reason == "send_timeout":
            state.faults.record(reason, state.now)

    # ---------------------------------------------------------------- requests

    async def _serve(self) -> None:
        state = self._state
        sock = self.sock
        buf = b""
        streak = 0
        first = True
        while True:
            end = buf.find(_END_OF_HEAD)
            if end < 0:
                if buf[:2] == b"\r\n":
                    buf = _skip_empty_lines(buf)
                    end = buf.find(_END_OF_HEAD)
            if end >= 0:
                # A pipelined head was already buffered: no wait, so yield now and then.
                streak += 1
                if streak >= _CHECKPOINT_EVERY:
                    streak = 0
                    await trio.lowlevel.checkpoint()
            else:
                if not buf:
                    if state.draining:
                        return
                    if not first:
                        self.phase = Phase.IDLE
                        self.deadline = state.now + state.idle_timeout
                    # A new connection usually has its request waiting; a kept-alive one not yet.
                    if first:
                        data = await sockio.recv(sock, _RECV_SIZE)
                    else:
                        data = await sockio.recv_waiting(sock, _RECV_SIZE)
                    if not data:
                        return
                    buf = data
                    if buf[:2] == b"\r\n":
                        buf = _skip_empty_lines(buf)
                self.phase = Phase.HEAD
                self.deadline = state.now + state.header_timeout
                end = buf.find(_END_OF_HEAD)
                while end < 0:
                    if len(buf) >= state.max_head_bytes:
                        await self._refuse(431, "request head too large", "head_too_large")
                        return
                    if b"\n\n" in buf:  # bare-LF head: refuse now rather than wait for more
                        end = len(buf)
                        break
                    data = await sockio.recv(sock, _RECV_SIZE)
                    if not data:
                        return
                    start = len(buf) - 3
                    buf += data
                    end = buf.find(_END_OF_HEAD, max(start, 0))
            first = False
            self.phase = Phase.BUSY
            self.deadline = _INF
            if end > state.max_head_bytes:
                await self._refuse(431, "request head too large", "head_too_large")
                return
            try:
                head = parse_request_head(
                    buf[:end], max_headers=state.max_headers, max_bytes=state.max_head_bytes
                )
            except BadRequest as exc:
                kind = "head_too_large" if exc.status == 431 else "bad_request"
                await self._refuse(exc.status, exc.reason, kind)
                return
            body_start = end + 4
            decision = route(head, state.readiness)
            if decision is FORWARD_TO_API:
                rest = await self._forward(head, buf, body_start)
                if rest is None:
                    return
                buf = rest
            else:
                assert isinstance(decision, Answer)
                # A body after a locally answered head is not read: close instead of skipping it.
                keep = head.keep_alive and not head.has_body and not state.draining
                await self._send(
                    render(decision, head_only=head.method == b"HEAD", keep_alive=keep)
                )
                state.requests += 1
                state.access.record(decision.status, head.method, head.target, b"-", self.client_ip)
                if not keep:
                    return
                buf = buf[body_start:]
            self._response_started = False

    async def _refuse(self, status: int, reason: str, kind: str) -> None:
        """Answer a request we will not serve, and let the caller close the connection."""
        state = self._state
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
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        state = self._state
        self.write_deadline = state.now + state.send_timeout
        await sockio.send_all(sock, memoryview(data)[sent:])
        self.write_deadline = _INF

    # ---------------------------------------------------------------- forwarding

    async def _forward(self, head: RequestHead, buf: bytes, body_start: int) -> bytes | None:
        """Forward one request and relay its response.

        Returns the bytes already received after this request (the start of the next one), or
        None when the connection must close.
        """
        state = self._state
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
        )

        # How much of the body came with the head?
        size = len(buf)
        decoder: ChunkedDecoder | None = None
        remaining = 0
        if head.chunked:
            decoder = ChunkedDecoder()
            try:
                stop = decoder.feed(buf, body_start, size)
            except BadChunk as exc:
                await self._refuse(400, exc.reason, "bad_request")
                return None
            body_end = size if stop < 0 else stop
        elif head.content_length:
            body_end = min(size, body_start + head.content_length)
            remaining = body_start + head.content_length - body_end
        else:
            body_end = body_start
        body_done = decoder.done if decoder is not None else not remaining
        self._body_pending = not body_done
        if body_end > body_start:
            out += buf[body_start:body_end]
        leftover = buf[body_end:] if body_end < size else b""

        pool = state.pool
        try:
            upstream = await pool.send_request(out)
        except (UpstreamUnavailable, UpstreamBroken) as exc:
            kind = (
                "upstream_unavailable" if isinstance(exc, UpstreamUnavailable) else "upstream_error"
            )
            await self._bad_gateway(head, request_id, kind, str(exc))
            return leftover if body_done and head.keep_alive and not state.draining else None

        clean = False
        try:
            if head.upgrade is not None:
                result = await self._relay_response(upstream, head, request_id, leftover)
            elif body_done:
                result = await self._relay_response(upstream, head, request_id, b"")
            else:
                pump = _BodyPump()
                result = (False, False)
                relay_error: Exception | None = None
                self.phase = Phase.BODY
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        self._pump_request_body,
                        upstream,
                        decoder,
                        remaining,
                        pump,
                        nursery.cancel_scope,
                    )
                    try:
                        result = await self._relay_response(upstream, head, request_id, b"")
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
                    return None
                if not pump.done:  # answered early, or the upstream stopped reading the body
                    return None
                leftover = pump.leftover
            client_keep, upstream_clean = result
            if upstream_clean:
                pool.release(upstream)
                clean = True
            return leftover if client_keep else None
        except (BadResponse, BadChunk, UpstreamBroken) as exc:
            detail = exc.reason if isinstance(exc, BadResponse | BadChunk) else str(exc)
            await self._bad_gateway(head, request_id, "upstream_error", detail)
            return None
        finally:
            if not clean:
                pool.discard(upstream)

    async def _bad_gateway(
        self, head: RequestHead, request_id: bytes, kind: str, detail: str
    ) -> None:
        """Answer 502 in the API's error convention, unless the response already began."""
        state = self._state
        state.faults.record(kind, state.now, detail)
        if self._response_started:
            return  # too late for a status: closing the connection is the only signal left
        answer = json_error(502, kind, "the API is not answering; try again shortly")
        keep = head.keep_alive and not self._body_pending and not state.draining
        await self._send(render(answer, head_only=head.method == b"HEAD", keep_alive=keep))
        self._response_started = True
        state.requests += 1
        state.access.record(502, head.method, head.target, request_id, self.client_ip)

    async def _body_failed(self, pump: _BodyPump) -> None:
        """The request body broke off: answer 400 for bad framing; a vanished client gets none."""
        if isinstance(pump.detail, BadChunk):
            await self._refuse(400, pump.detail.reason, "bad_request")
        else:
            state = self._state
            state.faults.record("client_disconnected", state.now)

    async def _pump_request_body(
        self,
        upstream: UpstreamConnection,
        decoder: ChunkedDecoder | None,
        remaining: int,
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
                self.deadline = state.now + state.body_timeout
                want = _BUFFER_SIZE if decoder is not None else min(_BUFFER_SIZE, remaining)
                try:
                    n = await sockio.recv_into(client, buffer, want)
                except OSError as exc:
                    raise _ClientGone from exc
                if not n:
                    raise _ClientGone
                if decoder is not None:
                    stop = decoder.feed(buffer, 0, n)
                    if stop >= 0:
                        pump.leftover = bytes(buffer[stop:n])
                        n = stop
                else:
                    remaining -= n
                try:
                    await sockio.send_all(usock, view[:n])
                except OSError:
                    # The upstream stopped reading (it may be answering already): read no
                    # more of this body; the relay decides what the client gets.
                    pump.upstream_failed = True
                    return
                if (decoder is not None and decoder.done) or (decoder is None and not remaining):
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
            self.deadline = _INF
            self.phase = Phase.BUSY
            view.release()
            state.give_buffer(buffer)

    async def _relay_response(
        self,
        upstream: UpstreamConnection,
        head: RequestHead,
        request_id: bytes,
        tunnel_bytes: bytes,
    ) -> tuple[bool, bool]:
        """Relay interim responses and the final response of `upstream` to the client.

        Returns (the client connection may stay open, the upstream connection is reusable).
        """
        state = self._state
        usock = upstream.sock
        rbuf = b""
        while True:
            end = rbuf.find(_END_OF_HEAD)
            while end < 0:
                if len(rbuf) > state.max_head_bytes:
                    raise BadResponse("response head too large")
                try:
                    data = await sockio.recv_waiting(usock, _RECV_SIZE)
                except ConnectionError as exc:
                    raise UpstreamBroken(f"the API reset the connection: {exc}") from exc
                if not data:
                    raise UpstreamBroken("the API closed the connection before answering")
                start = len(rbuf) - 3
                rbuf = rbuf + data if rbuf else data
                end = rbuf.find(_END_OF_HEAD, max(start, 0))
            resp = parse_response_head(rbuf[:end], max_headers=state.max_headers)
            pos = end + 4
            if resp.status >= 200:
                break
            if resp.status == 101:
                if head.upgrade is None:
                    raise BadResponse("101 Switching Protocols without an upgrade request")
                await self._tunnel(upstream.sock, resp, rbuf, pos, tunnel_bytes)
                state.requests += 1
                state.access.record(101, head.method, head.target, request_id, self.client_ip)
                return False, False
            if head.http11:  # 1xx never go to HTTP/1.0 clients
                await self._send(forward_response_head(resp, rbuf[:pos]))
            rbuf = rbuf[pos:]

        status = resp.status
        no_body = head.method == b"HEAD" or status in _NO_BODY_STATUSES
        client_keep = head.keep_alive and not state.draining and not self._body_pending
        upstream_clean = resp.keep_alive
        rechunk = dechunk = False
        if no_body:
            out_chunked = resp.chunked
        elif resp.chunked:
            dechunk = not head.http11
            out_chunked = not dechunk
            client_keep = client_keep and not dechunk
        elif resp.content_length is not None:
            out_chunked = False
        else:
            # Delimited by the upstream closing: re-frame for HTTP/1.1 clients to keep them.
            upstream_clean = False
            rechunk = head.http11
            out_chunked = rechunk
            client_keep = client_keep and rechunk
        if client_keep:
            connection = None if head.http11 else b"keep-alive"
        else:
            connection = b"close"
        out = forward_response_head(resp, rbuf[:pos], connection=connection, chunked=out_chunked)
        self._response_started = True
        available = len(rbuf) - pos

        if no_body:
            upstream_clean = upstream_clean and not available
            await self._send(out)
        elif resp.content_length is not None:
            length = resp.content_length
            if available >= length:
                upstream_clean = upstream_clean and available == length
                await self._send(out + rbuf[pos : pos + length] if available else out)
            else:
                await self._send(out + rbuf[pos:] if available else out)
                await self._copy_length(usock, length - available)
        elif resp.chunked:
            decoder = ChunkedDecoder()
            if dechunk:
                payload: list[bytes | bytearray] = []
                stop = decoder.feed(rbuf, pos, len(rbuf), payload)
                await self._send(out + b"".join(payload))
                if stop < 0:
                    await self._copy_dechunked(usock, decoder)
                else:
                    upstream_clean = upstream_clean and stop == len(rbuf)
            else:
                stop = decoder.feed(rbuf, pos, len(rbuf))
                if stop >= 0:
                    upstream_clean = upstream_clean and stop == len(rbuf)
                    await self._send(out + rbuf[pos:stop])
                else:
                    await self._send(out + rbuf[pos:])
                    clean_end = await self._copy_chunked(usock, decoder)
                    upstream_clean = upstream_clean and clean_end
        else:
            await self._copy_until_close(usock, out, rbuf[pos:], rechunk)

        state.requests += 1
        state.access.record(status, head.method, head.target, request_id, self.client_ip)
        return client_keep, upstream_clean

    async def _copy_length(self, usock: socket.socket, remaining: int) -> None:
        """Relay the rest of a body of known length through a pooled buffer (bulk transfers)."""
        state = self._state
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

    async def _copy_until_close(
        self, usock: socket.socket, out: bytes, first: bytes, rechunk: bool
    ) -> None:
        """Relay a body the upstream ends by closing; chunk it for an HTTP/1.1 client."""
        encoder = ChunkedEncoder() if rechunk else None
        await self._send(out + (encoder.encode(first) if encoder is not None else first))
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
            raise UpstreamBroken(f"the API reset the connection mid-response: {exc}") from exc
        if not data:
            raise UpstreamBroken("the API closed the connection mid-response")
        return data

    async def _upstream_recv_into(self, usock: socket.socket, buffer: bytearray, size: int) -> int:
        try:
            n = await sockio.recv_into(usock, buffer, size)
        except ConnectionError as exc:
            raise UpstreamBroken(f"the API reset the connection mid-response: {exc}") from exc
        if not n:
            raise UpstreamBroken("the API closed the connection mid-response")
        return n

    # ---------------------------------------------------------------- upgrades

    async def _tunnel(
        self,
        usock: socket.socket,
        resp: ResponseHead,
        rbuf: bytes,
        pos: int,
        client_bytes: bytes,
    ) -> None:
        """Relay a 101 and then splice bytes both ways until both directions end."""
        out = forward_response_head(resp, rbuf[:pos], connection=b"upgrade", chunked=False)
        await self._send(out + rbuf[pos:])
        self._response_started = True
        self.phase = Phase.TUNNEL
        if client_bytes:
            await sockio.send_all(usock, client_bytes)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._splice, self.sock, usock, False, nursery.cancel_scope)
            nursery.start_soon(self._splice, usock, self.sock, True, nursery.cancel_scope)

    async def _splice(
        self,
        source: socket.socket,
        sink: socket.socket,
        to_client: bool,
        cancel_scope: trio.CancelScope,
    ) -> None:
        """Copy one direction of a tunnel; at EOF half-close the sink, on error end both."""
        # A tunnel mostly waits (WebSocket), so no pooled buffer is held through the waits.
        chunks = 0
        try:
            while True:
                data = await sockio.recv(source, _SPLICE_READ)
                if not data:
                    try:
                        sink.shutdown(socket.SHUT_WR)
                    except OSError:
                        cancel_scope.cancel()
                    return
                if to_client:
                    await self._send(data)
                else:
                    await sockio.send_all(sink, data)
                chunks += 1
                if not chunks % _CHECKPOINT_EVERY:
                    await trio.lowlevel.checkpoint()
        except OSError:
            cancel_scope.cancel()


def _skip_empty_lines(buf: bytes) -> bytes:
    """Drop the empty lines a client may send before a request line (RFC 9112 §2.2)."""
    while buf[:2] == b"\r\n":
        buf = buf[2:]
    return buf
