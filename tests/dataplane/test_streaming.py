"""Bodies stream both ways through `/u/<id>/`, and WebSockets pass through unchanged.

The real daemon and auth; editors are stand-ins (`echo_editor.EchoEditor`, hypercorn) except
for the 1 GiB upload, whose editor is a raw socket that only counts bytes (so that the test
measures the proxy, not an ASGI server's per-chunk work).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
from collections.abc import AsyncIterator

import trio
import trio.lowlevel

from .conftest import XHR, Plane, RawWebSocket, rss_bytes

TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10

GIB = 1 << 30
MIB = 1 << 20


async def owner(plane: Plane, name: str = "alice") -> tuple[str, dict[str, str]]:
    user = await plane.user(name)
    return user.id, {**plane.cookie(await plane.session(user)), **XHR}


async def test_server_sent_events_arrive_one_by_one(plane: Plane) -> None:
    user_id, headers = await owner(plane)
    editor = plane.editors[user_id]
    client = plane.client()
    async with client.stream("GET", f"/u/{user_id}/sse", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.aiter_lines()
        with trio.fail_after(5):
            assert await anext(lines) == "data: first"  # before the editor sends anything else
            for n in range(3):
                assert await anext(lines) == ""
                await editor.release(f"data: event {n}\n\n".encode())
                assert await anext(lines) == f"data: event {n}"
            await editor.release(b"end")
            assert [line async for line in lines] == [""]


async def test_a_one_gib_upload_passes_with_the_proxys_memory_flat(plane: Plane) -> None:
    """1 GiB with a Content-Length, generated as it is sent, to an editor that counts it. The
    test process holds the client, the whole daemon and the editor: its RSS must not grow by
    more than a few buffers."""
    user = await plane.user("big", editor=False)
    headers = plane.cookie(await plane.session(user))
    received = trio.Event()
    counted: list[int] = []

    async def sink(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        count = len(rest)
        while count < length:
            chunk = await stream.receive_some(1 << 20)
            if not chunk:
                break
            count += len(chunk)
        counted.append(count)
        body = json.dumps({"bytes": count}).encode()
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b"
                              % (len(body), body))
        received.set()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    plane.nursery.start_soon(trio.serve_listeners, sink, listeners)
    plane.compute.addresses[user.id] = ("127.0.0.1", port)
    plane.compute.ready.add(user.id)

    peak = baseline = rss_bytes()
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, rss_bytes())
            await trio.sleep(0.05)

    chunk = os.urandom(MIB)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        stream = await trio.open_tcp_stream("127.0.0.1", plane.port)
        async with stream:
            head = (f"POST /u/{user.id}/upload HTTP/1.1\r\nHost: t\r\nContent-Length: {GIB}\r\n"
                    f"Cookie: {headers['Cookie']}\r\nOrigin: {plane.url}\r\n\r\n").encode()
            await stream.send_all(head)
            for _ in range(GIB // MIB):
                await stream.send_all(chunk)
            answer = b""
            with trio.fail_after(30):
                while not answer.endswith(b"}"):
                    answer += await stream.receive_some(65536)
        done = True
    elapsed = trio.current_time() - started
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {"bytes": GIB}
    assert counted == [GIB]
    growth = peak - baseline
    print(f"1 GiB in {elapsed:.1f} s ({GIB / elapsed / 1e6:.0f} MB/s); RSS grew "
          f"{growth / MIB:.1f} MiB")
    assert growth < 48 * MIB, f"RSS grew by {growth / MIB:.0f} MiB during a 1 GiB upload"


async def test_a_chunked_upload_arrives_whole(plane: Plane) -> None:
    user_id, headers = await owner(plane)
    pieces = [os.urandom(n) for n in (1, 1000, 65536, 300_000, 7)]

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
            await trio.lowlevel.checkpoint()

    response = await plane.client().post(f"/u/{user_id}/upload", content=body(),
                                         headers={**headers, "Origin": plane.url})
    assert response.status_code == 200
    joined = b"".join(pieces)
    assert response.json() == {"bytes": len(joined), "sha256": hashlib.sha256(joined).hexdigest()}


async def test_expect_100_continue_is_relayed(plane: Plane) -> None:
    user_id, headers = await owner(plane)
    stream = await trio.open_tcp_stream("127.0.0.1", plane.port)
    async with stream:
        await stream.send_all(
            f"POST /u/{user_id}/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            f"Expect: 100-continue\r\nCookie: {headers['Cookie']}\r\n\r\n".encode())
        with trio.fail_after(5):
            interim = await stream.receive_some(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")  # the editor's, before any body byte
        await stream.send_all(b"hello")
        answer = b""
        with trio.fail_after(5):
            while b'"sha256"' not in answer:
                answer += await stream.receive_some(65536)
        assert b"HTTP/1.1 200 " in answer
        assert hashlib.sha256(b"hello").hexdigest().encode() in answer


async def test_a_large_download_arrives_whole(plane: Plane) -> None:
    """The editor answers 4 MiB in one go; the client reads it slowly, in small pieces."""
    user_id, headers = await owner(plane)
    payload = os.urandom(4 * MIB)

    async def big(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(payload)
                              + payload)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    plane.nursery.start_soon(trio.serve_listeners, big, listeners)
    plane.compute.addresses[user_id] = ("127.0.0.1", listeners[0].socket.getsockname()[1])
    got = bytearray()
    async with plane.client().stream("GET", f"/u/{user_id}/big", headers=headers) as response:
        async for piece in response.aiter_raw(4096):
            got += piece
    assert bytes(got) == payload


async def test_websocket_text_binary_ping_and_close_codes_pass_unchanged(plane: Plane) -> None:
    user_id, headers = await owner(plane)
    status, ws = await RawWebSocket.open(plane, f"/u/{user_id}/ws", headers)
    assert status == 101 and ws is not None
    try:
        opcode, hello = await ws.recv()
        assert opcode == TEXT and json.loads(hello)["path"] == "/ws"
        text = "héllo, wörld".encode()
        await ws.send(TEXT, text)
        assert await ws.recv() == (TEXT, text)
        binary = bytes(range(256)) * 4096  # 1 MiB, every byte value
        await ws.send(BINARY, binary)
        assert await ws.recv() == (BINARY, binary)
        await ws.send(PING, b"are you there")
        assert await ws.recv() == (PONG, b"are you there")
        await ws.send(TEXT, b"close:4002")  # the editor closes, with a code and a reason
        opcode, payload = await ws.recv()
        assert opcode == CLOSE
        assert payload == (4002).to_bytes(2, "big") + b"asked to"
    finally:
        await ws.aclose()


async def test_a_client_close_code_reaches_the_editor_and_comes_back(plane: Plane) -> None:
    user_id, headers = await owner(plane)
    status, ws = await RawWebSocket.open(plane, f"/u/{user_id}/ws", headers)
    assert status == 101 and ws is not None
    try:
        await ws.recv()
        await ws.send(CLOSE, (4001).to_bytes(2, "big") + b"bye")
        opcode, payload = await ws.recv()
        assert opcode == CLOSE and payload[:2] == (4001).to_bytes(2, "big")
        with trio.fail_after(5):
            assert await ws.stream.receive_some(10) == b""  # then the connection ends
    finally:
        await ws.aclose()


async def test_a_websocket_survives_other_connections_failing(plane: Plane) -> None:
    user_id, headers = await owner(plane)
    status, ws = await RawWebSocket.open(plane, f"/u/{user_id}/ws", headers)
    assert status == 101 and ws is not None
    try:
        await ws.recv()
        linger_reset = struct.pack("ii", 1, 0)
        for _ in range(5):  # garbage, resets and half requests on other connections
            with socket.create_connection(("127.0.0.1", plane.port)) as raw:
                raw.sendall(b"GET /u/x HTTP/1.1\r\nHost: \x00\r\n\r\n")
            with socket.create_connection(("127.0.0.1", plane.port)) as raw:
                raw.sendall(b"POST /u/" + user_id.encode() + b"/upload HTTP/1.1\r\n")
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_reset)
        await ws.send(TEXT, b"still here")
        assert await ws.recv() == (TEXT, b"still here")
    finally:
        await ws.aclose()
