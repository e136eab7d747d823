"""The editor's WebSocket channel: a greeting, file-change notifications, commands."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from editor_testing import RawRequest
from trio_websocket import WebSocketConnection, open_websocket_url


@pytest.fixture
async def ws(editor: httpx.AsyncClient) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket to the in-process editor, past its `hello`."""
    url = f"ws://127.0.0.1:{editor.base_url.port}/ws"
    async with open_websocket_url(url, extra_headers=[(b"X-Markco-User", b"alice")]) as conn:
        hello = json.loads(await conn.get_message())
        assert hello["type"] == "hello"
        yield conn


async def next_of_type(conn: WebSocketConnection, kind: str) -> Any:
    while True:
        message = json.loads(await conn.get_message())
        if message["type"] == kind:
            return message


async def test_the_websocket_greets_with_the_caller(editor: httpx.AsyncClient) -> None:
    url = f"ws://127.0.0.1:{editor.base_url.port}/ws"
    headers = [(b"X-Markco-User", b"bob"), (b"X-Markco-Role", b"collaborator")]
    async with open_websocket_url(url, extra_headers=headers) as conn:
        hello = json.loads(await conn.get_message())
    assert hello == {"type": "hello", "user": "bob", "role": "collaborator", "owner": "alice",
                     "running": None}


async def test_a_save_is_notified_over_the_websocket(
    editor: httpx.AsyncClient, ws: WebSocketConnection
) -> None:
    resp = await editor.put(
        "/api/files/notes.md", json={"content": "# n\n"}, headers={"X-Markco-User": "bob"}
    )
    with trio.fail_after(0.5):  # at once, not at the next poll
        message = await next_of_type(ws, "files")
    assert message["changes"] == [
        {"path": "notes.md", "change": "created", "version": resp.json()["version"], "by": "bob"}
    ]


async def test_a_change_made_outside_the_editor_is_notified(
    user_dir: Path, ws: WebSocketConnection
) -> None:
    # After `hello` the watcher has looked once: a change now is noticed at the next poll.
    (user_dir / "from-the-runtime.md").write_text("# written by code\n")
    with trio.fail_after(3):
        message = await next_of_type(ws, "files")
    assert [(c["path"], c["change"], c["by"]) for c in message["changes"]] == [
        ("from-the-runtime.md", "created", None)
    ]


async def test_a_bad_command_gets_an_error_and_the_socket_stays_open(
    ws: WebSocketConnection,
) -> None:
    with trio.fail_after(5):
        await ws.send_message("not json")
        assert (await next_of_type(ws, "error"))["error"]["code"] == "bad_request"
        await ws.send_message(json.dumps({"type": "dance"}))
        assert "unknown command" in (await next_of_type(ws, "error"))["error"]["message"]


async def test_execute_without_a_runtime_is_refused_over_the_websocket(
    ws: WebSocketConnection,
) -> None:
    await ws.send_message(json.dumps({"type": "execute", "code": "1", "execId": "e1"}))
    with trio.fail_after(5):
        error = await next_of_type(ws, "error")
    assert error["execId"] == "e1"
    assert error["error"]["code"] == "no_runtime"


async def test_only_ws_is_a_websocket_endpoint(
    editor: httpx.AsyncClient, raw_request: RawRequest
) -> None:
    # By hand: trio-websocket leaks its socket when a handshake is refused.
    port = editor.base_url.port
    assert port is not None
    status, _ = await raw_request(
        port,
        "GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    assert status == 403
