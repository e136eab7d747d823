"""A stand-in editor for the data plane's tests: a real HTTP/WebSocket server (hypercorn on
127.0.0.1, a raw ASGI app) that reports what reached it.

It is not the built-in editor (that one is exercised with real compute in
`test_wait_page.py` and `test_runtime_front.py`); it exists to observe the proxy: which editor
answered (`name`), which path and headers arrived, a streamed upload's size and digest, an event
stream released event by event, cookies and headers an editor is not allowed to set, and a
WebSocket that reports its handshake headers, echoes text and binary, and closes with a code of
the client's choosing.

Routes (after the proxy stripped `/u/<id>`):
- `GET /whoami` → `{"editor", "path", "query", "method", "headers": [[name, value]...]}`;
  any other path answers the same (so a test sees what path arrived).
- `POST /upload` → reads the body as it comes: `{"bytes", "sha256"}`.
- `GET /sse` → `text/event-stream`; one event, then one more each time `release()` is called,
  `end` closes it.
- `GET /cookies` → Set-Cookie lines of every kind an editor might try, Service-Worker-Allowed,
  Clear-Site-Data and an ordinary header.
- WebSocket (any path): first message is the JSON of the handshake (as `/whoami`), then echo;
  a text message `close:<code>` makes the server close with that code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

EVIL_COOKIES = [
    b"markco_session=planted; Path=/",
    b"__Host-markco_session=planted; Path=/; Secure",
    b"MARKCO_SESSION=planted-upper",
    b"markco_login=planted",
    b"=markco_session=nameless",
    b"theme=dark; Path=/; Domain=example.org; HttpOnly",
    b"prefs=1; Path=/settings; SameSite=Strict",
    b"plain=1",
]


@dataclass
class EchoEditor:
    """One user's stand-in editor; `port` once started."""

    name: str
    port: int = 0
    requests: list[tuple[str, str, list[tuple[str, str]]]] = field(default_factory=list)
    sse_events: trio.MemorySendChannel[bytes] | None = None
    sse_open: trio.Event = field(default_factory=trio.Event)
    websockets: int = 0

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def start(self, nursery: trio.Nursery) -> None:
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        config.websocket_ping_interval = None
        stop = trio.Event()
        self._stop = stop
        binds = await nursery.start(partial(serve, self, config, shutdown_trigger=stop.wait))
        self.port = int(binds[0].rsplit(":", 1)[1])

    def stop(self) -> None:
        self._stop.set()

    def last(self) -> tuple[str, str, dict[str, list[str]]]:
        """The last request: (path, query, headers by lower-case name)."""
        path, query, pairs = self.requests[-1]
        headers: dict[str, list[str]] = {}
        for name, value in pairs:
            headers.setdefault(name, []).append(value)
        return path, query, headers

    def describe(self, scope: Scope) -> dict[str, Any]:
        pairs = [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in scope["headers"]]
        self.requests.append((scope["path"], scope["query_string"].decode("latin-1"), pairs))
        return {
            "editor": self.name,
            "path": scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"),
            "method": scope.get("method", "GET"),
            "headers": pairs,
        }

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
            await self.websocket(scope, receive, send)
            return
        path = scope["path"]
        if path == "/upload":
            await self.upload(scope, receive, send)
        elif path == "/sse":
            await self.sse(send)
        elif path == "/cookies":
            await respond(send, 200, b"cookies", headers=[
                *[(b"set-cookie", c) for c in EVIL_COOKIES],
                (b"service-worker-allowed", b"/"),
                (b"clear-site-data", b'"*"'),
                (b"x-editor-header", b"kept"),
            ])
        else:
            body = json.dumps(self.describe(scope)).encode()
            await respond(send, 200, body, b"application/json")

    async def upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.describe(scope)
        digest = hashlib.sha256()
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            digest.update(chunk)
            size += len(chunk)
            if not message.get("more_body"):
                break
        body = json.dumps({"bytes": size, "sha256": digest.hexdigest()}).encode()
        await respond(send, 200, body, b"application/json")

    async def sse(self, send: Send) -> None:
        events, self._sse_receive = trio.open_memory_channel[bytes](10)
        self.sse_events = events
        self.sse_open.set()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"),
                                (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": b"data: first\n\n",
                    "more_body": True})
        async for event in self._sse_receive:
            if event == b"end":
                break
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def release(self, event: bytes) -> None:
        """Send one more SSE event on the open stream (`b"end"` ends it)."""
        await self.sse_open.wait()
        assert self.sse_events is not None
        await self.sse_events.send(event)

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "websocket.connect"
        self.websockets += 1
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(self.describe(scope))})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is not None and text.startswith("close:"):
                await send({"type": "websocket.close", "code": int(text[6:]),
                            "reason": "asked to"})
                return
            await send({"type": "websocket.send", "text": text,
                        "bytes": message.get("bytes")})


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain",
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
