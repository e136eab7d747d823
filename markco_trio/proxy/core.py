"""The front door's HTTP/1.1 exchange as pure state machines: bytes in, decisions out.

No socket, no clock, no trio here (as hypercorn keeps its protocol core apart from its trio
and asyncio adapters, and h11 is "bring your own I/O"). The trio loop (`exchange.py`) reads
bytes, feeds them to these objects, and does what they decide: what to send, what to copy
or splice, when to upgrade, whether to send a request again, whether to keep the connection.
Tests feed bytes to them directly (tests/proxy/test_core.py).

- `ConnectionClock`: what the connection waits for (`Phase`) and until when, as plain floats
  (`deadline`, `write_deadline`) computed from the time the caller passes in; the front door's
  sweeper compares them with its coarse clock (no cancel scope per request).
- `RequestReader`: the client's byte stream cut into request heads (empty lines before a
  request skipped, oversized and bare-LF heads refused early, pipelined heads served from the
  buffer). The head itself is parsed strictly by `head.parse_request_head` (no smuggling:
  CL + TE, duplicate CL, obs-fold, bare CR/LF, ...).
- `RequestBody`: how much of a request body came with its head, what is left to read, where
  the next request starts (Content-Length or strictly validated chunked framing).
- `Attempts`: whether a request may be sent again after a reused upstream connection closed
  without answering (the keep-alive race), and at most once.
- `ResponseReader`: an upstream's byte stream cut into interim and final response heads, and
  whether a close is "before answering" (retryable) or "mid-answer".
- `plan_response`: for a final response, the bytes to send now, how the rest of the body
  travels (`Copy`: nothing more, a known length — spliced when large —, chunked as is,
  de-chunked for HTTP/1.0, or until the upstream closes, re-chunked for HTTP/1.1), whether the
  client connection stays open and whether the upstream connection may be pooled again.
- `switching_protocols`: whether a 101 may be relayed (only to websocket, only when asked).
- `answer_keeps_alive`, `error_keeps_alive`: keep-alive after an answer made here.
"""

from __future__ import annotations

from typing import Final

from markco_trio.proxy.chunked import ChunkedDecoder, ChunkedEncoder
from markco_trio.proxy.head import (
    WEBSOCKET,
    BadRequest,
    BadResponse,
    RequestHead,
    ResponseHead,
    parse_request_head,
    parse_response_head,
)
from markco_trio.proxy.rewrite import EditorScope, forward_response_head

__all__ = [
    "Attempts",
    "ConnectionClock",
    "Copy",
    "IDEMPOTENT",
    "Phase",
    "Refusal",
    "RequestBody",
    "RequestReader",
    "ResponsePlan",
    "ResponseReader",
    "SPLICE_AT_LEAST",
    "answer_keeps_alive",
    "error_keeps_alive",
    "plan_response",
    "request_body",
    "switching_protocols",
]

_INF: Final = float("inf")
_END_OF_HEAD: Final = b"\r\n\r\n"
_NO_BODY_STATUSES: Final = frozenset([204, 304])
# Requests that may be sent again when a reused connection closed without answering them.
IDEMPOTENT: Final = frozenset([b"GET", b"HEAD", b"OPTIONS"])
# Bodies of known length at least this large are spliced (socket -> pipe -> socket).
SPLICE_AT_LEAST: Final = 256 * 1024


class Phase:
    """What a connection waits for; the sweeper's timeouts depend on it."""

    NEW: Final = 5  # accepted, no byte yet (header_timeout; closed silently: browsers preconnect)
    IDLE: Final = 0  # between requests (idle_timeout; closed silently)
    HEAD: Final = 1  # a head has begun (header_timeout; 408)
    BUSY: Final = 2  # forwarding: waiting on the upstream (no deadline)
    BODY: Final = 3  # pumping a request body (body inactivity timeout; 408 if nothing sent yet)
    TUNNEL: Final = 4  # an upgraded connection (tunnel_idle_timeout, pushed by data frames)


class ConnectionClock:
    """A connection's phase and deadlines, as data: each transition is given the time.

    `deadline` is when waiting on the client (for a head, a body, or a tunnel's next data
    frame) times out; `write_deadline` when a client that takes no bytes does. Both are
    `inf` when nothing is armed. `expired` names why the connection was stopped, once it is.
    The front door's sweeper compares them with its clock (`due`).
    """

    __slots__ = ("phase", "deadline", "write_deadline", "expired")

    def __init__(self, now: float, header_timeout: float) -> None:
        self.phase = Phase.NEW
        self.deadline = now + header_timeout
        self.write_deadline = _INF
        self.expired: str | None = None

    def idle(self, now: float, idle_timeout: float) -> None:
        """Between requests of a kept-alive connection."""
        self.phase = Phase.IDLE
        self.deadline = now + idle_timeout

    def head_begun(self, now: float, header_timeout: float) -> None:
        """The first bytes of a request head arrived (the whole head has `header_timeout`)."""
        self.phase = Phase.HEAD
        self.deadline = now + header_timeout

    def busy(self) -> None:
        """Forwarding: waiting on the upstream has no deadline (an event stream may be quiet)."""
        self.phase = Phase.BUSY
        self.deadline = _INF

    def body(self) -> None:
        """Pumping a request body (the pump arms `body_wait` before each read)."""
        self.phase = Phase.BODY

    def body_wait(self, now: float, body_timeout: float) -> None:
        """About to wait for more of a request body: each read has `body_timeout`."""
        self.deadline = now + body_timeout

    def tunnel(self, now: float, idle: float) -> None:
        """Upgraded (or a progress stream when `idle` is inf): data frames push `deadline`."""
        self.phase = Phase.TUNNEL
        self.deadline = now + idle

    def stalled(self, now: float, send_timeout: float) -> None:
        """The client's receive buffer is full: it has `send_timeout` to take bytes again."""
        self.write_deadline = now + send_timeout

    def flowing(self) -> None:
        """The client takes bytes again."""
        self.write_deadline = _INF

    def due(self, now: float) -> str | None:
        """Which deadline has passed at `now` ("read" or "write"), or None."""
        if self.deadline < now:
            return "read"
        if self.write_deadline < now:
            return "write"
        return None


class Refusal(Exception):
    """A request the front door answers with an error and then closes for: `status`, a
    `reason` for the client and `kind`, the fault it is counted as."""

    def __init__(self, status: int, reason: str, kind: str) -> None:
        super().__init__(status, reason, kind)
        self.status = status
        self.reason = reason
        self.kind = kind


class RequestReader:
    """A client connection's bytes, cut into request heads.

    `feed` the bytes read (or `receive` them: feed, then `next_head`); `next_head()` returns
    the next complete head (its bytes and the empty line after it consumed from `buf`, which then
    starts with the body, if any) or None when more bytes are needed, and raises `Refusal`
    for a head to refuse. Empty lines before
    a request line are skipped (RFC 9112 §2.2). A head that reaches `max_head_bytes` without
    ending, or that contains a bare-LF empty line, is refused at once instead of waited for.
    """

    __slots__ = ("buf", "max_head_bytes", "max_headers", "_scanned")

    def __init__(self, *, max_head_bytes: int, max_headers: int) -> None:
        self.buf = b""
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self._scanned = 0  # where to resume looking for the end of the head

    def feed(self, data: bytes) -> None:
        """Add bytes read from the client."""
        self.buf = self.buf + data if self.buf else data

    def receive(self, data: bytes) -> RequestHead | None:
        """`feed(data)`, then `next_head()` (one call on the hot path)."""
        self.buf = self.buf + data if self.buf else data
        return self.next_head()

    def push_back(self, data: bytes) -> None:
        """Put back bytes that follow the previous request (its body's end was found in them)."""
        self.buf = data
        self._scanned = 0

    def next_head(self) -> RequestHead | None:
        """The next request head if the buffer holds one whole, else None (read more)."""
        buf = self.buf
        if buf[:2] == b"\r\n":
            while buf[:2] == b"\r\n":
                buf = buf[2:]
            self.buf = buf
            self._scanned = 0
        end = buf.find(_END_OF_HEAD, self._scanned)
        if end < 0:
            if len(buf) >= self.max_head_bytes:
                raise Refusal(431, "request head too large", "head_too_large")
            if b"\n\n" not in buf:
                self._scanned = max(len(buf) - 3, 0)
                return None
            end = len(buf)  # a bare-LF head: refuse it now rather than wait for more
        if end > self.max_head_bytes:
            raise Refusal(431, "request head too large", "head_too_large")
        try:
            head = parse_request_head(
                buf[:end], max_headers=self.max_headers, max_bytes=self.max_head_bytes
            )
        except BadRequest as exc:
            kind = "head_too_large" if exc.status == 431 else "bad_request"
            raise Refusal(exc.status, exc.reason, kind) from None
        self.buf = buf[end + 4 :] if end + 4 < len(buf) else b""
        self._scanned = 0
        return head

    def take(self) -> bytes:
        """Everything buffered (the start of a body, or of the next request), emptying it."""
        buf = self.buf
        self.buf = b""
        self._scanned = 0
        return buf


def request_body(head: RequestHead, after_head: bytes) -> RequestBody:
    """The `RequestBody` of `head`, given the bytes that followed it (the common case, no body
    and nothing pipelined, is one shared, complete instance: nothing is left to read)."""
    if after_head or head.chunked or head.content_length:
        return RequestBody(head, after_head)
    return _NO_BODY


class RequestBody:
    """How a request's body travels, given the head and the bytes that followed it.

    `first` is the part of the body that came with the head (sent along with it);
    `leftover` the bytes after the body (the next request's); `done` whether the body is
    complete. While not `done`, the rest is read with `want` and `took`. Raises `BadChunk`
    for chunked framing that another parser could read differently.
    """

    __slots__ = ("decoder", "remaining", "done", "first", "leftover")

    def __init__(self, head: RequestHead, after_head: bytes) -> None:
        size = len(after_head)
        self.decoder: ChunkedDecoder | None = None
        self.remaining = 0
        if head.chunked:
            decoder = self.decoder = ChunkedDecoder()
            stop = decoder.feed(after_head, 0, size)
            body_end = size if stop < 0 else stop
            self.done = decoder.done
        elif head.content_length:
            body_end = min(size, head.content_length)
            self.remaining = head.content_length - body_end
            self.done = not self.remaining
        else:
            body_end = 0
            self.done = True
        if body_end == 0:
            self.first = b""
            self.leftover = after_head
        elif body_end == size:
            self.first = after_head
            self.leftover = b""
        else:
            self.first = after_head[:body_end]
            self.leftover = after_head[body_end:]

    def want(self, size: int) -> int:
        """How many bytes to read next, at most `size` (a chunked body: up to `size`; the
        parser finds its end, and `took` keeps what came after it)."""
        return size if self.decoder is not None else min(size, self.remaining)

    def took(self, buffer: bytes | bytearray, n: int) -> int:
        """`buffer[:n]` was read from the client: how many of those bytes belong to the body
        (and go upstream). Sets `done`, and `leftover` when the body ended inside them."""
        decoder = self.decoder
        if decoder is not None:
            stop = decoder.feed(buffer, 0, n)
            if stop >= 0:
                self.leftover = bytes(buffer[stop:n])
                n = stop
            self.done = decoder.done
        else:
            self.remaining -= n
            self.done = not self.remaining
        return n


_NO_BODY: Final = RequestBody(parse_request_head(b"GET / HTTP/1.0"), b"")


class Attempts:
    """Whether a request may travel again after a pooled connection dropped it unanswered.

    Only a request sent whole (its body complete) and safe to repeat (GET, HEAD, OPTIONS),
    only when the connection that failed had been reused (the keep-alive race: the server
    closed it as the request left), and only once, on a fresh connection. `verify`: a request
    that cannot be repeated asks the pool to check a reused connection before sending.
    """

    __slots__ = ("repeatable", "verify", "fresh")

    def __init__(self, head: RequestHead, body_done: bool) -> None:
        self.repeatable = body_done and head.method in IDEMPOTENT
        # Whether the pool should make sure a reused connection is still open.
        self.verify = not self.repeatable
        self.fresh = False

    def closed_early(self, reused: bool) -> bool:
        """The upstream closed before answering: True to send once more on a new connection."""
        if self.repeatable and reused and not self.fresh:
            self.fresh = True
            return True
        return False


class ResponseReader:
    """An upstream connection's bytes, cut into response heads.

    `feed` what was read (or `receive` it: feed, then `next_head`); `next_head()` returns a
    `(head, raw)` pair (`raw`: the head's bytes with its CRLF CRLF, consumed from `buf`), or
    None to read more; `BadResponse` for a head we will not relay. `closed_early` says what an
    end of stream means: before any byte, a close the request may be retried after; later, a
    broken answer.
    """

    __slots__ = ("buf", "received", "max_head_bytes", "max_headers", "_scanned")

    def __init__(self, max_head_bytes: int, max_headers: int) -> None:
        self.buf = b""
        self.received = False
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self._scanned = 0

    def feed(self, data: bytes) -> None:
        """Add bytes read from the upstream (not empty: an end of stream is `closed_early`)."""
        self.received = True
        self.buf = self.buf + data if self.buf else data

    def receive(self, data: bytes) -> tuple[ResponseHead, bytes] | None:
        """`feed(data)`, then `next_head()` (one call on the hot path)."""
        self.received = True
        self.buf = self.buf + data if self.buf else data
        return self.next_head()

    def next_head(self) -> tuple[ResponseHead, bytes] | None:
        """The next response head, if the buffer holds one whole."""
        buf = self.buf
        end = buf.find(_END_OF_HEAD, self._scanned)
        if end < 0:
            if len(buf) > self.max_head_bytes:
                raise BadResponse("response head too large")
            self._scanned = max(len(buf) - 3, 0)
            return None
        resp = parse_response_head(buf[:end], max_headers=self.max_headers)
        pos = end + 4
        raw = buf[:pos]
        self.buf = buf[pos:] if pos < len(buf) else b""
        self._scanned = 0
        return resp, raw

    def closed_early(self) -> bool:
        """Whether an end of stream now comes before a single byte of the answer."""
        return not self.received


def switching_protocols(head: RequestHead, resp: ResponseHead) -> None:
    """Check that a 101 may be relayed: the request asked for an upgrade, and the upstream
    switches to websocket (the only protocol relayed). Raises `BadResponse` if not."""
    if head.upgrade is None:
        raise BadResponse("101 Switching Protocols without an upgrade request")
    if resp.upgrade is None or resp.upgrade.strip(b" \t").lower() != WEBSOCKET:
        raise BadResponse("101 Switching Protocols to another protocol than websocket")


class Copy:
    """How the rest of a response body travels after `ResponsePlan.send`."""

    NOTHING: Final = 0  # the whole response is in `send`
    LENGTH: Final = 1  # `length` more bytes (spliced when `splice`)
    CHUNKED: Final = 2  # a chunked body relayed as is, `decoder` finding its end
    DECHUNKED: Final = 3  # a chunked body's payload only (to an HTTP/1.0 client)
    UNTIL_CLOSE: Final = 4  # until the upstream closes; re-chunked with `encoder` if set


class ResponsePlan:
    """What to do with a final response: `send` now, then `copy` the rest (`length` more
    bytes, or through `decoder` / `encoder`); afterwards the client connection stays open if
    `client_keep`, the upstream's is pooled if `upstream_clean` (a CHUNKED copy also needs
    the body to end exactly at a read's end)."""

    __slots__ = ("send", "copy", "client_keep", "upstream_clean", "length", "_codec")

    def __init__(self, send: bytes, copy: int, client_keep: bool, upstream_clean: bool,
                 length: int = 0, codec: ChunkedDecoder | ChunkedEncoder | None = None) -> None:
        self.send = send
        self.copy = copy
        self.client_keep = client_keep
        self.upstream_clean = upstream_clean
        self.length = length
        self._codec = codec

    @property
    def splice(self) -> bool:
        """Whether the rest is long enough to splice (socket -> pipe -> socket)."""
        return self.length >= SPLICE_AT_LEAST

    @property
    def decoder(self) -> ChunkedDecoder | None:
        """What finds the end of a CHUNKED or DECHUNKED body."""
        codec = self._codec
        return codec if isinstance(codec, ChunkedDecoder) else None

    @property
    def encoder(self) -> ChunkedEncoder | None:
        """What re-chunks an UNTIL_CLOSE body for an HTTP/1.1 client (None: relayed as is)."""
        codec = self._codec
        return codec if isinstance(codec, ChunkedEncoder) else None


def plan_response(
    head: RequestHead,
    resp: ResponseHead,
    raw: bytes,
    rest: bytes,
    draining: bool,
    body_pending: bool,
    scope: EditorScope | None = None,
) -> ResponsePlan:
    """Decide how a final response (`resp`, received as `raw`, followed by `rest`) reaches
    the client that sent `head`.

    The client keeps its connection if it asked to, the front door is not draining, its
    request body was read whole (`body_pending` False) and the framing allows: a chunked
    response to an HTTP/1.0 client is de-chunked and ended by closing; one delimited by the
    upstream closing is re-chunked for HTTP/1.1 clients. Raises `BadChunk` for bad framing
    in the bytes already here.
    """
    status = resp.status
    no_body = head.method == b"HEAD" or status in _NO_BODY_STATUSES
    client_keep = head.keep_alive and not draining and not body_pending
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
    out = forward_response_head(resp, raw, connection=connection, chunked=out_chunked,
                                scope=scope)
    available = len(rest)

    if no_body:
        return ResponsePlan(out, Copy.NOTHING, client_keep, upstream_clean and not available)
    length = resp.content_length
    if length is not None:
        if available >= length:
            return ResponsePlan(out + rest[:length] if available else out, Copy.NOTHING,
                                client_keep, upstream_clean and available == length)
        return ResponsePlan(out + rest if available else out, Copy.LENGTH, client_keep,
                            upstream_clean, length - available)
    if resp.chunked:
        decoder = ChunkedDecoder()
        if dechunk:
            payload: list[bytes | bytearray] = []
            stop = decoder.feed(rest, 0, available, payload)
            send = out + b"".join(payload)
            if stop >= 0:
                return ResponsePlan(send, Copy.NOTHING, client_keep,
                                    upstream_clean and stop == available)
            return ResponsePlan(send, Copy.DECHUNKED, client_keep, upstream_clean, 0, decoder)
        stop = decoder.feed(rest, 0, available)
        if stop >= 0:
            return ResponsePlan(out + rest[:stop], Copy.NOTHING, client_keep,
                                upstream_clean and stop == available)
        return ResponsePlan(out + rest, Copy.CHUNKED, client_keep, upstream_clean, 0, decoder)
    encoder = ChunkedEncoder() if rechunk else None
    return ResponsePlan(out + (encoder.encode(rest) if encoder is not None else rest),
                        Copy.UNTIL_CLOSE, client_keep, upstream_clean, 0, encoder)


def answer_keeps_alive(head: RequestHead, draining: bool) -> bool:
    """Whether the connection stays open after an answer made here (not forwarded): a body
    that follows the head is not read, so the connection closes instead of skipping it."""
    return head.keep_alive and not head.has_body and not draining


def error_keeps_alive(head: RequestHead, body_pending: bool, draining: bool) -> bool:
    """Whether the connection stays open after a 502/503 for a forwarded request: not while
    part of its body is still unread."""
    return head.keep_alive and not body_pending and not draining

