"""`GET /metrics` on its own address (`[metrics] listen`), apart from the public front door.

A deliberately small HTTP/1.1 server (h11): one request per connection, `GET` or `HEAD` of
`/metrics` only, a bounded request head, a deadline per connection and a cap on connections
at once, so a stray client on that address can neither tie it up nor reach anything else. With
a token configured, a scrape must present `Authorization: Bearer <token>` (Prometheus:
`authorization: {credentials_file: ...}` in the scrape config).
"""

from __future__ import annotations

import hmac
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable

import h11
import trio

from .metrics import CONTENT_TYPE, Registry

__all__ = ["MetricsListener"]

log = logging.getLogger("markco.metrics")

MAX_CONNECTIONS = 16  # a scraper or two; more at once is someone else
DEADLINE_SECONDS = 10.0  # to send the request and take the answer
MAX_HEAD_BYTES = 8192


class MetricsListener:
    """Serves `registry` on a socket already bound and listening (see `daemon.hold_address`):
    a busy or forbidden address is then reported before the daemon starts anything."""

    def __init__(self, registry: Registry, sock: socket.socket, *,
                 token: str | None = None,
                 before_scrape: Callable[[], Awaitable[None]] | None = None) -> None:
        self.registry = registry
        self._sock = sock
        self._token = token.encode() if token else None
        self._before_scrape = before_scrape
        self._limit = trio.CapacityLimiter(MAX_CONNECTIONS)
        self.scrapes = 0

    @property
    def port(self) -> int:
        """The bound port."""
        port: int = self._sock.getsockname()[1]
        return port

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Answer connections until cancelled. The socket stays open (a restart reuses it)."""
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._sock.dup()))
        async with listener, trio.open_nursery() as nursery:
            host, port = self._sock.getsockname()[:2]
            log.info("metrics: serving /metrics on %s:%d", host, port)
            task_status.started()
            while True:
                stream = await listener.accept()
                if self._limit.available_tokens < 1:
                    await stream.aclose()  # over the cap: no answer, no wait
                    continue
                nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with self._limit, stream:
            with trio.move_on_after(DEADLINE_SECONDS):
                try:
                    await self._answer(stream)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def _answer(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                await self._send(stream, conn, 400, b"bad request\n")
                return
            if event is h11.NEED_DATA:
                data = await stream.receive_some(4096)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                break
            return
        target = event.target.split(b"?", 1)[0]
        if target != b"/metrics":
            await self._send(stream, conn, 404, b"not found: only /metrics is served here\n")
        elif event.method not in (b"GET", b"HEAD"):
            await self._send(stream, conn, 405, b"method not allowed: use GET\n",
                             [(b"allow", b"GET, HEAD")])
        elif self._token is not None and not self._authorized(event.headers):
            await self._send(stream, conn, 401, b"a bearer token is required\n",
                             [(b"www-authenticate", b'Bearer realm="metrics"')])
        else:
            try:
                if self._before_scrape is not None:
                    await self._before_scrape()
                body = self.registry.render()
            except Exception:  # a broken collector: say so, keep serving
                log.exception("metrics: a scrape failed")
                await self._send(stream, conn, 500, b"the metrics could not be collected; "
                                 b"the daemon's log says why\n")
                return
            self.scrapes += 1
            await self._send(stream, conn, 200, b"" if event.method == b"HEAD" else body,
                             [(b"content-type", CONTENT_TYPE.encode())], length=len(body))

    def _authorized(self, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        assert self._token is not None
        for name, value in headers:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(),
                                                                           self._token)
        return False

    async def _send(self, stream: trio.SocketStream, conn: h11.Connection, status: int,
                    body: bytes, headers: list[tuple[bytes, bytes]] | None = None, *,
                    length: int | None = None) -> None:
        head = [*(headers or [(b"content-type", b"text/plain; charset=utf-8")]),
                (b"content-length", str(len(body) if length is None else length).encode()),
                (b"connection", b"close")]
        out = conn.send(h11.Response(status_code=status, headers=head))
        if body:
            out += conn.send(h11.Data(data=body)) or b""
        await stream.send_all((out or b"") + (conn.send(h11.EndOfMessage()) or b""))
