"""The little of ASGI the editor needs: a request, JSON and byte responses, an event stream and
a WebSocket, over the raw `scope`/`receive`/`send` hypercorn hands us.

Errors go out as `{"error": {"code", "message"}}`, markco's API convention.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import trio

from markco_editor.sse import encode_comment, encode_event

__all__ = [
    "ASGIReceive",
    "ASGISend",
    "EventStream",
    "HTTPError",
    "Request",
    "Scope",
    "WebSocket",
    "error_body",
    "send_bytes",
    "send_error",
    "send_json",
]

Scope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = Iterable[tuple[str, str]]

# Every response: no MIME sniffing, no referrer leaking a file path to another site.
_COMMON_HEADERS = (("x-content-type-options", "nosniff"), ("referrer-policy", "same-origin"))


class HTTPError(Exception):
    """Raised by a handler to answer with a JSON error."""

    def __init__(self, status: int, code: str, message: str, headers: Headers = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = tuple(headers)


class Request:
    """An HTTP request: method, decoded path, query, headers; the body read on demand."""

    def __init__(self, scope: Scope, receive: ASGIReceive) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: dict[str, str] = dict(
            parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        )
        self.headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }

    def header(self, name: str) -> str | None:
        """The value of a header (the last one if repeated), or None."""
        return self.headers.get(name.lower())

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 `too_large` past `limit` bytes."""
        declared = self.header("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, "too_large", f"the request body is limited to {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "disconnected", "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, "too_large", f"the request body is limited to {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def json(self, limit: int) -> dict[str, Any]:
        """The body as a JSON object; 400 `bad_json` if it is not one."""
        raw = await self.body(limit)
        try:
            value = json.loads(raw)
        except ValueError:
            raise HTTPError(400, "bad_json", "the request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise HTTPError(400, "bad_json", "the request body must be a JSON object")
        return value

    async def wait_disconnect(self) -> None:
        """Return when the client closes the connection (only once the body has been read)."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"code": code, "message": message}}


async def send_bytes(
    send: ASGISend,
    status: int,
    body: bytes,
    content_type: str,
    headers: Headers = (),
    *,
    head_only: bool = False,
) -> None:
    """A complete response with a body (omitted, length kept, for HEAD)."""
    all_headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    all_headers += [(k.encode(), v.encode()) for k, v in (*_COMMON_HEADERS, *headers)]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": b"" if head_only else body})


async def send_json(
    send: ASGISend, status: int, value: Any, headers: Headers = (), *, head_only: bool = False
) -> None:
    """A JSON response, never cached (it describes files that change)."""
    body = json.dumps(value, ensure_ascii=False).encode("utf-8")
    await send_bytes(
        send,
        status,
        body,
        "application/json; charset=utf-8",
        (("cache-control", "no-store"), *headers),
        head_only=head_only,
    )


async def send_error(send: ASGISend, error: HTTPError) -> None:
    """Answer with `error` as JSON."""
    await send_json(send, error.status, error_body(error.code, error.message), error.headers)


class EventStream:
    """A `text/event-stream` response written event by event, each flushed at once."""

    def __init__(self, send: ASGISend) -> None:
        self._send = send

    async def start(self) -> None:
        """Send the head; `X-Accel-Buffering: no` asks proxies not to buffer the stream."""
        headers = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-store"),
            ("x-accel-buffering", "no"),
            *_COMMON_HEADERS,
        ]
        await self._send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in headers],
            }
        )

    async def event(self, name: str, data: Any) -> None:
        """Send one event with JSON data."""
        payload = encode_event(name, json.dumps(data, ensure_ascii=False))
        await self._send({"type": "http.response.body", "body": payload, "more_body": True})

    async def comment(self, text: str) -> None:
        """Send a comment (a keep-alive)."""
        body = encode_comment(text)
        await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def end(self) -> None:
        """Finish the response."""
        await self._send({"type": "http.response.body", "body": b""})


class WebSocket:
    """An accepted WebSocket: sends are serialised, so several tasks may send."""

    def __init__(self, scope: Scope, receive: ASGIReceive, send: ASGISend) -> None:
        self.scope = scope
        self.headers: dict[str, str] = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }
        self._receive = receive
        self._send = send
        self._send_lock = trio.Lock()
        self.closed = False

    async def accept(self) -> bool:
        """Complete the handshake; False if the client left first."""
        message = await self._receive()
        if message["type"] != "websocket.connect":
            return False
        await self._send({"type": "websocket.accept"})
        return True

    async def _next_message(self) -> MutableMapping[str, Any] | None:
        """The next `websocket.receive` message; None once the client has closed."""
        while True:
            message = await self._receive()
            if message["type"] == "websocket.disconnect":
                self.closed = True
                return None
            if message["type"] == "websocket.receive":
                return message

    async def receive_text(self) -> str | None:
        """The next text message (a binary one is decoded as UTF-8); None once closed."""
        message = await self._next_message()
        if message is None:
            return None
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode("utf-8", "replace")
        return str(text)

    async def receive_bytes(self) -> bytes | None:
        """The next message as bytes (a text one encoded as UTF-8); None once closed."""
        message = await self._next_message()
        if message is None:
            return None
        data = message.get("bytes")
        if data is None:
            data = str(message.get("text") or "").encode("utf-8")
        return bytes(data)

    async def send_bytes(self, data: bytes) -> None:
        """Send one binary message."""
        async with self._send_lock:
            if not self.closed:
                await self._send({"type": "websocket.send", "bytes": data})

    async def send_json(self, value: Any) -> None:
        """Send one JSON text message."""
        text = json.dumps(value, ensure_ascii=False)
        async with self._send_lock:
            await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection with `code` (1000: normal)."""
        async with self._send_lock:
            if not self.closed:
                self.closed = True
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
