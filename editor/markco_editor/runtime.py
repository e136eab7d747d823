"""A client of the runtime front: MRP (the mrmd runtime protocol) over HTTP/1.1.

The editor never knows where the runtime is. It dials the runtime front markco gives it — the
unix socket `MARKCO_RUNTIME_SOCKET`, or `127.0.0.1:RUNTIME_PORT` — which forwards to the runtime
wherever it currently runs and holds requests while it starts or wakes. So nothing here polls
the runtime: every request counts as user activity and may wake a sleeping runtime. The one
exception is `notice()`: `GET /markco/v1/notice` is answered by the front itself, never by the
runtime, so it can be polled.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, cast

import httpx

from markco_editor.sse import SSEDecoder

__all__ = ["MRPEvent", "RuntimeClient", "RuntimeUnavailable"]

# The front may hold a request while the runtime starts or wakes, and mrmd-python sends a
# `ping` event only every 60 s during a long cell: reads must outlast both.
_TIMEOUT = httpx.Timeout(connect=10.0, read=150.0, write=30.0, pool=30.0)
_SHORT_TIMEOUT = httpx.Timeout(10.0)


class RuntimeUnavailable(Exception):
    """The runtime front could not be reached, or answered with an error instead of MRP."""


@dataclass(frozen=True)
class MRPEvent:
    """One event of `POST /mrp/v1/execute/stream`: `start`, `stdout`, `stderr`,
    `stdin_request`, `ping`, `result`, `error` or `done`, with its JSON data."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)


class RuntimeClient:
    """MRP calls through the runtime front; use as an async context manager."""

    def __init__(self, *, socket_path: str | None = None, port: int | None = None) -> None:
        if (socket_path is None) == (port is None):
            raise ValueError("give exactly one of socket_path and port")
        if socket_path is not None:
            # The host name is only for the Host header: the socket decides where it goes.
            transport = httpx.AsyncHTTPTransport(uds=socket_path)
            base_url = "http://runtime"
            self.address = f"unix:{socket_path}"
        else:
            transport = httpx.AsyncHTTPTransport()
            base_url = f"http://127.0.0.1:{port}"
            self.address = base_url
        # trust_env=False: an HTTP(S)_PROXY in the environment must never capture these calls.
        self._http = httpx.AsyncClient(
            transport=transport, base_url=base_url, timeout=_TIMEOUT, trust_env=False
        )

    async def __aenter__(self) -> Self:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    async def execute_stream(
        self,
        code: str,
        exec_id: str,
        on_event: Callable[[MRPEvent], Awaitable[None]],
    ) -> None:
        """Run `code` and await `on_event` for each event as it arrives.

        Raises `RuntimeUnavailable` if the front cannot be reached or refuses; events already
        delivered stay delivered. Returns when the runtime closes the stream (normally after
        `done`).
        """
        body = {"code": code, "execId": exec_id, "storeHistory": True}
        decoder = SSEDecoder()
        try:
            async with self._http.stream("POST", "/mrp/v1/execute/stream", json=body) as resp:
                await _raise_for_status(resp)
                # aclosing: a cancelled read must not leave httpx's generators to the GC.
                lines_iter = cast(AsyncGenerator[str, None], resp.aiter_lines())
                async with aclosing(lines_iter) as lines:
                    async for line in lines:
                        event = decoder.feed_line(line)
                        if event is not None:
                            await on_event(MRPEvent(event.name, _json_object(event.data)))
                # A last event the stream did not end with a blank line.
                event = decoder.feed_line("")
                if event is not None:
                    await on_event(MRPEvent(event.name, _json_object(event.data)))
        except httpx.HTTPError as exc:
            raise RuntimeUnavailable(_describe(exc, self.address)) from exc

    @asynccontextmanager
    async def forward(self, method: str, path: str, body: bytes,
                      content_type: str | None) -> AsyncIterator[httpx.Response]:
        """Send one MRP request of the page's (`path` under `/mrp/v1/`, already checked) to
        the runtime front and yield the streaming response. Only the method, path, body and
        content type travel: none of the browser's headers (the front refuses what looks
        like a browser) and no other address. Raises `RuntimeUnavailable`."""
        headers = {"content-type": content_type} if content_type else {}
        try:
            request = self._http.build_request(method, path, content=body or None,
                                               headers=headers)
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise RuntimeUnavailable(_describe(exc, self.address)) from exc
        try:
            yield response
        finally:
            await response.aclose()

    async def interrupt(self) -> bool:
        """Interrupt the running cell (`POST /mrp/v1/interrupt`); whether the runtime did."""
        data = await self._post("/mrp/v1/interrupt", {})
        return bool(data.get("interrupted"))

    async def cancel_input(self, exec_id: str) -> bool:
        """Refuse an `input()` the execution `exec_id` waits on, so it fails at once instead
        of blocking the runtime (the built-in editor does not offer a stdin). Whether the
        runtime had such a request pending."""
        data = await self._post("/mrp/v1/input/cancel", {"exec_id": exec_id})
        return bool(data.get("cancelled"))

    async def notice(self) -> dict[str, str | None]:
        """The user-facing notice of the user's compute (`GET /markco/v1/notice`, answered by
        the front itself: it never reaches, wakes or waits for the runtime):
        `{"notice": text or None, "id": opaque id or None}`. Raises `RuntimeUnavailable`."""
        try:
            resp = await self._http.get("/markco/v1/notice", timeout=_SHORT_TIMEOUT)
            await _raise_for_status(resp)
        except httpx.HTTPError as exc:
            raise RuntimeUnavailable(_describe(exc, self.address)) from exc
        data = _json_object(resp.text)
        text, notice_id = data.get("notice"), data.get("id")
        if not isinstance(text, str) or not text:
            return {"notice": None, "id": None}
        return {"notice": text, "id": notice_id if isinstance(notice_id, str) else None}

    async def report_activity(self) -> None:
        """Tell markco the user is typing or clicking (`POST /markco/v1/activity`, answered by
        the front itself: it never reaches or wakes the runtime). Raises
        `RuntimeUnavailable`."""
        try:
            resp = await self._http.post("/markco/v1/activity", timeout=_SHORT_TIMEOUT)
            await _raise_for_status(resp)
        except httpx.HTTPError as exc:
            raise RuntimeUnavailable(_describe(exc, self.address)) from exc

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._http.post(path, json=body, timeout=_SHORT_TIMEOUT)
            await _raise_for_status(resp)
        except httpx.HTTPError as exc:
            raise RuntimeUnavailable(_describe(exc, self.address)) from exc
        return _json_object(resp.text)


async def _raise_for_status(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    await resp.aread()
    detail = resp.text.strip()[:200]
    if resp.status_code in (502, 503, 504):
        raise RuntimeUnavailable(
            f"the runtime is not available right now (HTTP {resp.status_code}"
            + (f": {detail}" if detail else "")
            + "); it may be starting, try again in a moment"
        )
    raise RuntimeUnavailable(f"the runtime refused the request: HTTP {resp.status_code} {detail}")


def _describe(exc: httpx.HTTPError, address: str) -> str:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return f"cannot reach the runtime front at {address}: {exc or type(exc).__name__}"
    if isinstance(exc, httpx.TimeoutException):
        return f"the runtime front at {address} stopped answering ({type(exc).__name__})"
    return f"the connection to the runtime broke: {exc or type(exc).__name__}"


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}
