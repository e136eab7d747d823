"""The data plane under trouble: malformed and oversized requests, slow clients, editors that
reset or vanish, clients that leave mid-upload, idle tunnels, restarts. Every case ends in a
clear 4xx/5xx or a clean close, never a crashed task, never another connection hurt, never a
leaked connection (counted in /proc/self/fd and in the front door's statistics).

Where a test needs short timeouts it runs a second `FrontDoor` with the daemon's own editor
gate (the same auth, authorisation and compute) in front of the same API socket.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from markco_trio.api.server import guard_hypercorn_close_race, prepare_socket_dir
from markco_trio.proxy import FrontDoor

from .conftest import XHR, Plane, RawWebSocket, eventually, open_sockets

RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


async def second_door(plane: Plane, **options: Any) -> tuple[FrontDoor, int]:
    door = FrontDoor("127.0.0.1", 0, plane.daemon.api_socket, plane.daemon.readiness,
                     gate=plane.front_door.gate, **options)
    port = await plane.nursery.start(door.serve)
    return door, port


async def alice(plane: Plane) -> tuple[str, dict[str, str]]:
    user = await plane.user("alice")
    return user.id, {**plane.cookie(await plane.session(user)), "Origin": plane.url}


async def raw_exchange(port: int, data: bytes, *, within: float = 5.0) -> bytes:
    """Send `data` and read until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        answer = b""
        with trio.fail_after(within):
            while chunk := await stream.receive_some(65536):
                answer += chunk
    return answer


Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def raw_editor(plane: Plane, user_id: str, handler: Handler) -> None:
    """Make `handler` (a raw TCP server) the user's editor."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    plane.nursery.start_soon(trio.serve_listeners, handler, listeners)
    plane.compute.addresses[user_id] = ("127.0.0.1", listeners[0].socket.getsockname()[1])
    plane.compute.ready.add(user_id)


async def read_head(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return b""
        data += chunk
    return data


# ------------------------------------------------------------------------------ clients


async def test_an_oversized_head_gets_431(plane: Plane) -> None:
    user_id, headers = await alice(plane)
    answer = await raw_exchange(plane.port, (
        f"GET /u/{user_id}/ HTTP/1.1\r\nHost: t\r\nCookie: {headers['Cookie']}\r\n"
        f"X-Big: {'a' * 70_000}\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert plane.editors[user_id].requests == []


async def test_bad_chunked_framing_in_an_upload_gets_400(plane: Plane) -> None:
    user_id, headers = await alice(plane)
    answer = await raw_exchange(plane.port, (
        f"POST /u/{user_id}/upload HTTP/1.1\r\nHost: t\r\nCookie: {headers['Cookie']}\r\n"
        f"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_a_slow_client_is_cut_off_and_a_silent_one_dropped(plane: Plane) -> None:
    user_id, headers = await alice(plane)
    door, port = await second_door(plane, header_timeout=0.4)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET /u/{user_id}/whoami HTTP/1.1\r\n".encode())
        answer = b""
        with trio.fail_after(5):
            for byte in b"Cookie: x" * 100:  # one byte every 50 ms: slowloris
                try:
                    await stream.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    break
                await trio.sleep(0.05)
                if door.statistics().errors.get("header_timeout"):
                    break
            while chunk := await stream.receive_some(65536):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ")
    silent = await trio.open_tcp_stream("127.0.0.1", port)
    async with silent:
        with trio.fail_after(5):
            assert await silent.receive_some(10) == b""  # closed, nothing said
    await eventually(lambda: door.statistics().open_connections == 0)


async def test_a_client_leaving_mid_upload_hurts_nobody(plane: Plane) -> None:
    user_id, headers = await alice(plane)
    client = plane.client()
    baseline = open_sockets()
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", plane.port)) as raw:
            raw.sendall((f"POST /u/{user_id}/upload HTTP/1.1\r\nHost: t\r\n"
                         f"Cookie: {headers['Cookie']}\r\nContent-Length: 10000000\r\n\r\n"
                         ).encode() + b"x" * 300_000)
            await trio.sleep(0.01)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    ok = await client.post(f"/u/{user_id}/upload", content=b"whole", headers=headers)
    assert ok.status_code == 200 and ok.json()["bytes"] == 5
    stats = plane.front_door.statistics()
    await eventually(lambda: plane.front_door.statistics().editors.in_use == 0)
    assert stats.errors.get("internal", 0) == 0
    await client.aclose()
    await eventually(lambda: open_sockets() <= baseline + 2 * plane.front_door.statistics()
                     .editors.open + 2)


# ------------------------------------------------------------------------------ editors


async def test_an_editor_that_is_gone_gets_503_and_retry_after(plane: Plane) -> None:
    user_id, headers = await alice(plane)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    plane.compute.addresses[user_id] = ("127.0.0.1", port)
    response = await plane.client().get(f"/u/{user_id}/x", headers={**headers, **XHR})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "editor_unavailable"


async def test_an_editor_resetting_before_answering_gets_502(plane: Plane) -> None:
    user_id, headers = await alice(plane)

    async def reset(stream: trio.SocketStream) -> None:
        await read_head(stream)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
        await stream.aclose()

    await raw_editor(plane, user_id, reset)
    response = await plane.client().get(f"/u/{user_id}/x", headers={**headers, **XHR})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "editor_error"


async def test_an_editor_resetting_mid_answer_closes_that_response_only(plane: Plane) -> None:
    user_id, headers = await alice(plane)
    bob = await plane.user("bob")
    bob_headers = {**plane.cookie(await plane.session(bob)), **XHR}

    async def half(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial")
        await trio.sleep(0.05)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
        await stream.aclose()

    await raw_editor(plane, user_id, half)
    client = plane.client()
    with pytest.raises(httpx.RemoteProtocolError):
        await client.get(f"/u/{user_id}/x", headers={**headers, **XHR})
    other = await client.get(f"/u/{bob.id}/whoami", headers=bob_headers)
    assert other.status_code == 200 and other.json()["editor"] == "bob"
    assert plane.front_door.statistics().errors.get("internal", 0) == 0


async def test_a_get_on_a_pooled_connection_the_editor_closed_is_sent_again(
        plane: Plane) -> None:
    user_id, headers = await alice(plane)
    seen: list[bytes] = []

    async def once(stream: trio.SocketStream) -> None:
        # Answers one request per connection, keep-alive promised, then closes (an editor
        # restarting, or one whose keep-alive timeout is shorter than the pool's).
        head = await read_head(stream)
        seen.append(head.split(b"\r\n")[0])
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await trio.sleep(0.02)
        await stream.aclose()

    await raw_editor(plane, user_id, once)
    client = plane.client()
    for _ in range(3):
        response = await client.get(f"/u/{user_id}/x", headers={**headers, **XHR})
        assert response.status_code == 200 and response.text == "ok"
        await trio.sleep(0.1)
    post = await client.post(f"/u/{user_id}/y", content=b"1", headers=headers)
    assert post.status_code == 200
    assert len(seen) == 4  # every request reached the editor once: none was lost or doubled


# ------------------------------------------------------------------------------ the API


async def test_clients_leaving_mid_upload_do_not_crash_the_api(plane: Plane) -> None:
    """hypercorn 0.18 crashes its whole server when a peer closes mid-body (see
    `markco_trio.api.server`); the front door closes its API connection exactly so when a
    client drops an upload, or when the API answers before reading a body."""
    for _ in range(25):
        with socket.create_connection(("127.0.0.1", plane.port)) as raw:
            raw.sendall(b"POST /no-such-route HTTP/1.1\r\nHost: t\r\n"
                        b"Content-Length: 5000000\r\n\r\n" + b"x" * 200_000)
            await trio.sleep(0.01)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
    response = await plane.client().get("/login")
    assert response.status_code == 200
    assert plane.daemon.supervisor.restarts.get("api", 0) == 0


async def test_the_guard_keeps_hypercorn_serving_through_aborted_uploads(
        tmp_path: Path) -> None:
    guard_hypercorn_close_race()
    reading = trio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while True:
            message = await receive()
            reading.set()
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    path = tmp_path / "run" / "api.sock"
    prepare_socket_dir(path)
    config = HypercornConfig()
    config.bind = [f"unix:{path}"]
    config.accesslog = config.errorlog = None
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, app, config)
        for _ in range(30):
            sock = trio.socket.socket(socket.AF_UNIX)
            await sock.connect(str(path))
            await sock.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 9000000\r\n\r\n"
                            + b"x" * 100_000)
            await reading.wait()
            reading = trio.Event()
            sock.close()
            await trio.sleep(0.005)
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            with trio.fail_after(5):
                assert (await stream.receive_some(100)).startswith(b"HTTP/1.1 200")
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------------------ leaks


async def test_no_connection_is_leaked(plane: Plane) -> None:
    user_id, headers = await alice(plane)
    door, port = await second_door(plane, editor_max_idle_time=0.2, upstream_max_idle_time=0.2)
    eve = await plane.user("eve", editor=False)
    eve_headers = plane.cookie(await plane.session(eve))
    baseline = open_sockets()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        for n in range(30):
            assert (await client.get(f"/u/{user_id}/w{n}", headers={**headers, **XHR})
                    ).status_code == 200
            assert (await client.get(f"/u/{user_id}/", headers=eve_headers)).status_code == 404
            assert (await client.post(f"/u/{user_id}/upload", content=b"x" * 70_000,
                                      headers=headers)).status_code == 200
            assert (await client.get("/login")).status_code == 200
        await raw_exchange(port, b"GET /u/x HTTP/1.1\r\nHost: \x01\r\n\r\n")
    for _ in range(5):
        status, ws = await RawWebSocket.open(
            plane, f"/u/{user_id}/ws", {"Cookie": headers["Cookie"]}, port=port)
        assert ws is not None
        await ws.send(1, b"hi")
        await ws.aclose()
    assert door.statistics().requests_served >= 120
    await eventually(lambda: door.statistics().open_connections == 0)
    await eventually(lambda: door.statistics().editors.open == 0
                     and door.statistics().upstream.open == 0, within=5)
    await eventually(lambda: plane.front_door.statistics().open_connections == 0)

    def pooled_by_the_main_door() -> int:
        # Both ends of a pooled connection are in this process (the editors and the API
        # run in it too): two descriptors each.
        main = plane.front_door.statistics()
        return 2 * (main.editors.open + main.upstream.open)

    await eventually(lambda: open_sockets() <= baseline + pooled_by_the_main_door(), within=5)


# ------------------------------------------------------------------------------ tunnels


async def test_an_idle_websocket_is_closed_and_a_busy_one_kept(plane: Plane) -> None:
    user_id, headers = await alice(plane)
    door, port = await second_door(plane, tunnel_idle_timeout=0.5)
    plane_view = Plane(plane.daemon, port, plane.compute, plane.nursery)
    _, busy = await RawWebSocket.open(plane_view, f"/u/{user_id}/ws", headers)
    _, idle = await RawWebSocket.open(plane_view, f"/u/{user_id}/ws", headers)
    assert busy is not None and idle is not None
    try:
        await busy.recv()
        await idle.recv()
        for n in range(8):  # 1.2 s of traffic, 0.15 s apart
            await busy.send(1, f"ping {n}".encode())
            assert await busy.recv() == (1, f"ping {n}".encode())
            await trio.sleep(0.15)
        assert await idle.recv() == (8, b"\x03\xe9idle for too long")  # 1001, going away
        with trio.fail_after(2):
            assert await idle.stream.receive_some(10) == b""
        assert door.statistics().errors.get("tunnel_idle_timeout") == 1
        await busy.send(1, b"still")
        assert await busy.recv() == (1, b"still")
    finally:
        await busy.aclose()
        await idle.aclose()


async def test_pings_alone_do_not_keep_a_websocket_open(plane: Plane) -> None:
    user_id, headers = await alice(plane)
    door, port = await second_door(plane, tunnel_idle_timeout=0.5)
    plane_view = Plane(plane.daemon, port, plane.compute, plane.nursery)
    _, ws = await RawWebSocket.open(plane_view, f"/u/{user_id}/ws", headers)
    assert ws is not None
    try:
        assert (await ws.recv())[0] == 1  # the editor's hello
        async with trio.open_nursery() as nursery:

            async def ping_like_a_forgotten_tab() -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while True:
                        await ws.send(9, b"ping")
                        await trio.sleep(0.1)

            nursery.start_soon(ping_like_a_forgotten_tab)
            with trio.fail_after(3):
                while (frame := await ws.recv())[0] == 10:  # pongs, until the close
                    pass
            nursery.cancel_scope.cancel()
        assert frame == (8, b"\x03\xe9idle for too long")
        assert door.statistics().errors.get("tunnel_idle_timeout") == 1
    finally:
        await ws.aclose()


async def test_shutdown_closes_quiet_websockets_at_once_and_lets_busy_ones_finish(
        plane: Plane) -> None:
    user_id, headers = await alice(plane)
    door, port = await second_door(plane)
    plane_view = Plane(plane.daemon, port, plane.compute, plane.nursery)
    _, busy = await RawWebSocket.open(plane_view, f"/u/{user_id}/ws", headers)
    _, quiet = await RawWebSocket.open(plane_view, f"/u/{user_id}/ws", headers)
    assert busy is not None and quiet is not None
    try:
        await busy.recv()
        await quiet.recv()
        for n in range(12):  # 1.2 s: the quiet one moves nothing but pings meanwhile
            await busy.send(1, f"work {n}".encode())
            assert await busy.recv() == (1, f"work {n}".encode())
            await quiet.send(9, b"")
            assert (await quiet.recv())[0] == 10
            await trio.sleep(0.1)
        door.stop_accepting()
        with trio.fail_after(1):
            assert await quiet.recv() == (8, b"\x03\xe9the server is restarting")
        for n in range(5):  # the busy one still works
            await busy.send(1, f"more {n}".encode())
            assert await busy.recv() == (1, f"more {n}".encode())
            await trio.sleep(0.1)
        with trio.fail_after(3):  # and once it quietens, it is closed too, ending the drain
            assert await busy.recv() == (8, b"\x03\xe9the server is restarting")
            await door.drained()
    finally:
        await busy.aclose()
        await quiet.aclose()


async def test_shutdown_ends_wait_page_progress_streams_at_once(plane: Plane) -> None:
    user = await plane.user("alice", ready=False)
    cookie = plane.cookie(await plane.session(user))
    door, port = await second_door(plane)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET /_markco/progress/{user.id} HTTP/1.1\r\nHost: x\r\n"
                              f"Cookie: {cookie['Cookie']}\r\n\r\n".encode())
        received = b""
        with trio.fail_after(2):
            while b"event: progress" not in received:
                received += await stream.receive_some(65536)
        door.stop_accepting()
        with trio.fail_after(1):  # (it would hold the drain for as long as the start takes)
            while await stream.receive_some(65536):
                pass
            await door.drained()


# ------------------------------------------------------------------------------ restarts


async def test_a_front_door_serves_again_after_it_stopped(plane: Plane) -> None:
    user_id, headers = await alice(plane)
    door = FrontDoor("127.0.0.1", 0, plane.daemon.api_socket, plane.daemon.readiness,
                     gate=plane.front_door.gate)
    for run in (1, 2):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(door.serve)
            async with httpx.AsyncClient(trust_env=False) as client:
                response = await client.get(f"http://127.0.0.1:{port}/u/{user_id}/whoami",
                                            headers={**headers, **XHR})
            assert response.status_code == 200
            if run == 1:
                first_port = port
            else:
                assert port == first_port  # the same port after a restart
            nursery.cancel_scope.cancel()
    assert door.statistics().serves == 2
    assert door.statistics().requests_served == 2


async def test_the_supervisor_restarts_a_crashed_proxy(plane: Plane) -> None:
    """A failure the front door does not catch (here: its sweeper's, injected) ends its
    `serve()`; the supervisor calls `serve()` again on the same FrontDoor, on the same port."""
    user_id, headers = await alice(plane)
    door = plane.front_door
    supervisor = plane.daemon.supervisor
    before = supervisor.restarts.get("proxy", 0)
    real = door._faults
    door._faults = _ExplodingFaults(door, real)  # type: ignore[assignment]
    await eventually(lambda: supervisor.restarts.get("proxy", 0) > before, within=10)
    await eventually(lambda: door.statistics().accepting, within=10)
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{plane.port}/u/{user_id}/whoami",
                                    headers={**headers, **XHR})
    assert response.status_code == 200
    assert door.statistics().serves == 2


class _ExplodingFaults:
    """A faults recorder whose first flush (the sweeper calls it every second) raises, and
    puts the real recorder back."""

    def __init__(self, door: FrontDoor, real: Any) -> None:
        self._door, self._real = door, real
        self.counts = real.counts

    def record(self, *args: Any, **kwargs: Any) -> None:
        self._real.record(*args, **kwargs)

    def flush(self) -> None:
        self._door._faults = self._real
        raise RuntimeError("the sweeper fails (injected by a test)")
