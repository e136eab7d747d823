"""Only WebSocket upgrades are relayed (DESIGN §5.2, issue 9).

An upgrade to any other protocol would hand the client a raw tunnel to the upstream: after an
`Upgrade: h2c`, HTTP/2 requests travel inside it, past the proxy's header rewriting (a forged
`X-Markco-User` reached an editor that way), and an anonymous client reached the API app. So a
request asking for anything but `websocket` is served as a plain request, its Upgrade and
HTTP2-Settings dropped; a list naming websocket is narrowed to websocket; and an upstream that
switches to another protocol anyway gets the client a 502, never a tunnel.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from .conftest import Plane, RawWebSocket
from .test_robustness import raw_editor, read_head


async def exchange(plane: Plane, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str],
                                                                              bytes]:
    """Send one GET with exactly `headers` (and Host); (status, headers, body) of the answer.
    A 101 answer has no body here: whatever follows it is another protocol's."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{plane.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    stream = await trio.open_tcp_stream("127.0.0.1", plane.port)
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        with trio.fail_after(5):
            data = await read_head(stream)
            head, _, body = data.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            fields: dict[str, str] = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.decode("latin-1").partition(":")
                fields[name.strip().lower()] = value.strip()
            if status != 101:
                length = int(fields.get("content-length", "0"))
                while len(body) < length:
                    chunk = await stream.receive_some(65536)
                    assert chunk, "closed mid-body"
                    body += chunk
    return status, fields, body


def seen_headers(body: bytes) -> dict[str, list[str]]:
    """The headers the echo editor reports having received."""
    report: dict[str, Any] = json.loads(body)
    headers: dict[str, list[str]] = {}
    for name, value in report["headers"]:
        headers.setdefault(name, []).append(value)
    return headers


H2C = {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
       "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"}
WS_KEY = {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"}


async def test_h2c_to_an_editor_is_a_plain_request_with_the_proxys_identity(
        plane: Plane) -> None:
    alice = await plane.user("alice")
    bob = await plane.user("bob")
    cookie = plane.cookie(await plane.session(bob))
    forged = {"X-Markco-User": alice.id, "X-Markco-Role": "owner"}
    status, _, body = await exchange(plane, f"/u/{bob.id}/whoami", {**cookie, **H2C, **forged})
    assert status == 200
    headers = seen_headers(body)
    assert headers["x-markco-user"] == [bob.id]
    assert headers["x-markco-role"] == ["owner"]
    assert "upgrade" not in headers and "http2-settings" not in headers


async def test_anonymous_h2c_never_reaches_the_api_as_a_tunnel(plane: Plane) -> None:
    status, fields, _ = await exchange(plane, "/api/v1/me", H2C)
    assert status == 401
    assert "upgrade" not in fields


async def test_h2c_in_any_case_is_not_an_upgrade(plane: Plane) -> None:
    bob = await plane.user("bob")
    cookie = plane.cookie(await plane.session(bob))
    for token in ("H2C", "h2c", "H2c"):
        status, _, body = await exchange(plane, f"/u/{bob.id}/whoami",
                                         {**cookie, **H2C, "Upgrade": token})
        assert status == 200, token
        assert "upgrade" not in seen_headers(body)


async def test_connection_upgrade_without_an_upgrade_header_is_a_plain_request(
        plane: Plane) -> None:
    bob = await plane.user("bob")
    cookie = plane.cookie(await plane.session(bob))
    status, _, body = await exchange(plane, f"/u/{bob.id}/whoami",
                                     {**cookie, "Connection": "upgrade"})
    assert status == 200
    assert "upgrade" not in seen_headers(body)


async def test_an_upgrade_list_naming_websocket_is_narrowed_to_websocket(plane: Plane) -> None:
    bob = await plane.user("bob")
    cookie = plane.cookie(await plane.session(bob))
    for offer in ("websocket, h2c", "h2c, WebSocket", "foo/1, websocket"):
        status, fields, _ = await exchange(
            plane, f"/u/{bob.id}/ws",
            {**cookie, "Origin": plane.url, "Connection": "Upgrade", "Upgrade": offer, **WS_KEY})
        assert status == 101, offer
        assert fields["upgrade"].lower() == "websocket"
    path, _, headers = plane.editors[bob.id].last()
    assert headers["upgrade"] == ["websocket"]


async def test_a_websocket_upgrade_in_mixed_case_still_works(plane: Plane) -> None:
    bob = await plane.user("bob")
    cookie = plane.cookie(await plane.session(bob))
    status, ws = await RawWebSocket.open(plane, f"/u/{bob.id}/ws", cookie)
    assert status == 101 and ws is not None
    await ws.aclose()
    status, fields, _ = await exchange(
        plane, f"/u/{bob.id}/ws",
        {**cookie, "Origin": plane.url, "Connection": "UPGRADE", "Upgrade": "WebSocket",
         **WS_KEY})
    assert status == 101


async def test_an_editor_switching_to_another_protocol_gets_the_client_a_502(
        plane: Plane) -> None:
    bob = await plane.user("bob")
    cookie = plane.cookie(await plane.session(bob))

    async def switch_to_h2c(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                              b"Connection: Upgrade\r\n\r\n")
        await trio.sleep_forever()

    await raw_editor(plane, bob.id, switch_to_h2c)
    status, _, _ = await exchange(
        plane, f"/u/{bob.id}/ws",
        {**cookie, "Origin": plane.url, "Connection": "Upgrade", "Upgrade": "websocket",
         **WS_KEY})
    assert status == 502


async def test_http2_with_prior_knowledge_is_refused_at_the_door(plane: Plane) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", plane.port)
    async with stream:
        await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        answer = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 505 ")
