"""What the front door's tests run against: an observable upstream app and an HTTP client of
our own, built on h11 so that responses are checked by a parser that is not ours.

The upstream is a raw ASGI app (no framework between the test and the bytes) whose routes exist
to observe the proxy: what headers arrive, when a body's first chunk arrives, when an event
stream may go on. Its trio.Events are shared with the test, which runs in the same trio run.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import trio

from markco_trio.proxy import FrontDoor
from markco_trio.readiness import Readiness

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class UpstreamApp:
    """The API stand-in. Each `route_<name>` serves `/<name>`."""

    def __init__(self) -> None:
        self.first_chunk_seen = trio.Event()
        self.release_second_event = trio.Event()
        self.bodies_started = 0
        self.requests: list[tuple[str, list[tuple[bytes, bytes]]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] == "websocket":
            await self.websocket_echo(receive, send)
            return
        self.requests.append((scope["path"], list(scope["headers"])))
        name = scope["path"].strip("/").replace("-", "_") or "hello"
        handler = getattr(self, f"route_{name}", None)
        if handler is None:
            await respond(send, 404, b"no such route")
        else:
            await handler(scope, receive, send)

    async def route_hello(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"hello")

    async def route_headers(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
        await respond(send, 200, json.dumps(headers).encode(), b"application/json")

    async def route_upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        digest = hashlib.sha256()
        size = 0
        self.bodies_started += 1
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            if chunk:
                self.first_chunk_seen.set()
            digest.update(chunk)
            size += len(chunk)
            if not message.get("more_body"):
                break
        body = json.dumps({"bytes": size, "sha256": digest.hexdigest()}).encode()
        await respond(send, 200, body, b"application/json")

    async def route_early(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answers 413 without reading the body."""
        await respond(send, 413, b"too big")

    async def route_sse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await self.release_second_event.wait()
        await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def route_chunked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A chunked response sent in three pieces without waiting."""
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for piece in (b"alpha-", b"beta-", b"gamma"):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def route_big(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`?mib=N`: N MiB with a Content-Length, in 64 KiB pieces."""
        mib = int(scope["query_string"].decode().partition("=")[2] or 1)
        size = mib * 1024 * 1024
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(size).encode())],
            }
        )
        piece = b"z" * 65536
        for _ in range(size // len(piece)):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def websocket_echo(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send(
                {
                    "type": "websocket.send",
                    "text": message.get("text"),
                    "bytes": message.get("bytes"),
                }
            )


async def respond(
    send: Send, status: int, body: bytes, content_type: bytes = b"text/plain"
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass
class Upstream:
    """A running hypercorn serving `app` on `socket_path`."""

    app: UpstreamApp
    socket_path: Path


@dataclass
class Door:
    """A running FrontDoor and the port it listens on."""

    front_door: FrontDoor
    port: int
    readiness: Readiness = field(default_factory=Readiness)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


StartDoor = Callable[..., Awaitable[Door]]


class RawClient:
    """A plain TCP client that speaks HTTP/1.1 through h11, so responses are checked by a
    parser that is not ours."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self._leftover = b""

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_event(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        all_headers = [("Host", "test"), *(headers or [])]
        await self.stream.send_all(
            self.h11.send(h11.Request(method=method, target=target, headers=all_headers))
            + self.h11.send(h11.EndOfMessage())
        )

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(65536))
                continue
            return event

    async def response(self) -> tuple[h11.Response, bytes]:
        """The next final response and its body."""
        event = await self.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await self.next_event()
        assert isinstance(event, h11.Response), event
        body = b""
        while True:
            part = await self.next_event()
            if isinstance(part, h11.Data):
                body += part.data
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                raise AssertionError(part)
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        return event, body

    async def raw_response(self, method: str = "GET") -> tuple[h11.Response, bytes]:
        """The next response to a request sent with `send_raw` (h11 is told of it after the fact,
        so pipelined requests can be read back one by one)."""
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
        conn.send(h11.EndOfMessage())
        if self._leftover:  # (b"" would tell h11 the connection closed)
            conn.receive_data(self._leftover)
        response: h11.Response | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._leftover = conn.trailing_data[0]
                assert response is not None
                return response, body
            elif not isinstance(event, h11.InformationalResponse):
                raise AssertionError(event)

    async def read_until_closed(self) -> bytes:
        data = b""
        while True:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return data
            data += chunk

    async def aclose(self) -> None:
        await self.stream.aclose()


def unused_socket_path(tmp_path: Path) -> Path:
    """A unix socket path where nothing listens."""
    path = tmp_path / "nobody.sock"
    assert not path.exists()
    return path


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll `predicate` (a statistics counter, say) until it holds; fail after five seconds."""
    for _ in range(500):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def header_map(pairs: list[list[str]]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for name, value in pairs:
        result.setdefault(name.lower(), []).append(value)
    return result


RAW_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

Handler = Callable[[trio.SocketStream], Awaitable[None]]


class RawServer:
    """A unix-socket server whose connections run `handler`; counts what it receives."""

    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.body_seen = trio.Event()
        self.closed_mid_body = 0

    async def serve(self, path: Path, handler: Handler, nursery: trio.Nursery) -> None:
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(str(path))
        sock.listen(16)
        listener = trio.SocketListener(sock)

        async def counted(stream: trio.SocketStream) -> None:
            self.connections += 1
            await handler(stream)

        nursery.start_soon(trio.serve_listeners, counted, [listener])

    async def read_request(self, stream: trio.SocketStream) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return False
            data += chunk
        self.requests += 1
        return True


async def answer_forever(server: RawServer, stream: trio.SocketStream) -> None:
    while await server.read_request(stream):
        await stream.send_all(RAW_RESPONSE)


async def answer_once_then_close(server: RawServer, stream: trio.SocketStream) -> None:
    if await server.read_request(stream):
        await stream.send_all(RAW_RESPONSE)
    await stream.aclose()


async def read_then_close(server: RawServer, stream: trio.SocketStream) -> None:
    """Takes a request and closes without answering (a crash mid-request)."""
    await server.read_request(stream)
    await stream.aclose()


async def answer_until_close(server: RawServer, stream: trio.SocketStream) -> None:
    """Answers with a body delimited by closing the connection (no length, not chunked)."""
    if await server.read_request(stream):
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ")
        await stream.send_all(b"the end")
    await stream.aclose()


async def answer_gets_swallow_posts(server: RawServer, stream: trio.SocketStream) -> None:
    """Answers bodiless requests; reads a POST's body until the peer closes, counting that."""
    data = b""
    while True:
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        server.requests += 1
        if not head.startswith(b"POST"):
            await stream.send_all(RAW_RESPONSE)
            continue
        while True:
            if data:
                server.body_seen.set()
            data = await stream.receive_some(65536)
            if not data:
                server.closed_mid_body += 1
                await stream.aclose()
                return
