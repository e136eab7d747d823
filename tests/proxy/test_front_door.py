"""The front door end to end: real TCP clients, the FrontDoor, a real hypercorn on a unix socket."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import h11
import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from markco_trio.proxy import exchange, routing
from markco_trio.proxy.head import RequestHead
from markco_trio.proxy.routing import Decision
from markco_trio.readiness import Readiness, ReadinessReport

from .harness import (
    Door,
    RawClient,
    RawServer,
    StartDoor,
    Upstream,
    answer_gets_swallow_posts,
    answer_once_then_close,
    answer_until_close,
    header_map,
    read_then_close,
    unused_socket_path,
    wait_until,
)

Connect = Callable[[int], Awaitable[RawClient]]
MiB = 1024 * 1024


async def test_healthz_is_answered_even_when_the_api_socket_does_not_exist(
    start_door: StartDoor, tmp_path: Path
) -> None:
    door = await start_door(unused_socket_path(tmp_path))
    async with httpx.AsyncClient(base_url=door.url) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


async def test_readyz_is_503_until_readiness_holds_then_200(
    start_door: StartDoor, tmp_path: Path
) -> None:
    readiness = Readiness()
    readiness.require("reconciliation")
    door = await start_door(unused_socket_path(tmp_path), readiness=readiness)
    async with httpx.AsyncClient(base_url=door.url) as client:
        before = await client.get("/readyz")
        readiness.mark("reconciliation")
        after = await client.get("/readyz")
    assert before.status_code == 503
    assert before.json() == {"ready": False, "waiting_for": ["reconciliation"]}
    assert after.status_code == 200
    assert after.json() == {"ready": True, "waiting_for": []}


async def test_gets_are_forwarded_over_one_kept_alive_client_connection(
    door: Door, raw_client_factory: Connect
) -> None:
    client = await raw_client_factory(door.port)
    for _ in range(5):
        await client.request("GET", "/hello")
        response, body = await client.response()
        assert (response.status_code, body) == (200, b"hello")
    stats = door.front_door.statistics()
    assert stats.open_connections == 1
    assert stats.upstream.connects == 1  # and the upstream connection was pooled and reused


async def test_pipelined_requests_are_answered_in_order(
    door: Door, raw_client_factory: Connect
) -> None:
    client = await raw_client_factory(door.port)
    await client.send_raw(
        b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /headers HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    bodies = [(await client.raw_response())[1] for _ in range(3)]
    assert bodies[0] == b"hello"
    assert json.loads(bodies[1]) == {"status": "alive"}
    assert ["host", "t"] in json.loads(bodies[2])


async def test_an_empty_line_after_a_body_before_a_pipelined_request_is_skipped(
    door: Door, raw_client_factory: Connect
) -> None:
    """Old clients send CRLF after a POST body (RFC 9112 §2.2: servers ignore it)."""
    client = await raw_client_factory(door.port)
    await client.send_raw(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok\r\n"
        b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    first = await client.raw_response()
    assert json.loads(first[1])["bytes"] == 2
    assert (await client.raw_response())[1] == b"hello"


async def test_a_large_post_body_streams_through_without_being_buffered(
    door: Door, upstream: Upstream
) -> None:
    total = 50 * MiB
    piece = bytes(range(256)) * 4096  # 1 MiB
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for i in range(total // len(piece)):
            if i == 4:
                # A proxy that held the whole body would never let the API see a byte yet.
                with trio.fail_after(10):
                    await upstream.app.first_chunk_seen.wait()
                assert sent < total
            sent += len(piece)
            yield piece

    async with httpx.AsyncClient(base_url=door.url, timeout=30) as client:
        response = await client.post("/upload", content=body())
    assert response.status_code == 200
    assert response.json()["bytes"] == total


async def test_a_chunked_request_body_is_forwarded_intact(
    door: Door, raw_client_factory: Connect
) -> None:
    client = await raw_client_factory(door.port)
    await client.send_raw(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    await trio.sleep(0.05)  # the rest arrives in a later read
    await client.send_raw(b"6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")
    response, body = await client.raw_response("POST")
    assert response.status_code == 200
    assert json.loads(body)["bytes"] == 11


async def test_a_chunked_response_streams_event_by_event(door: Door, upstream: Upstream) -> None:
    received: list[bytes] = []
    async with httpx.AsyncClient(base_url=door.url) as client:
        async with client.stream("GET", "/sse") as response:
            assert response.headers["content-type"] == "text/event-stream"
            with trio.fail_after(10):
                async for chunk in response.aiter_raw():
                    received.append(chunk)
                    if b"".join(received) == b"data: one\n\n":
                        # Only now may the upstream send event two.
                        upstream.app.release_second_event.set()
    assert b"".join(received) == b"data: one\n\ndata: two\n\n"


async def test_a_large_response_streams_through(door: Door) -> None:
    size = 0
    async with httpx.AsyncClient(base_url=door.url, timeout=30) as client:
        async with client.stream("GET", "/big?mib=20") as response:
            assert response.headers["content-length"] == str(20 * MiB)
            async for chunk in response.aiter_raw():
                size += len(chunk)
    assert size == 20 * MiB


async def test_identity_and_forwarded_headers_from_the_client_never_reach_the_api(
    door: Door,
) -> None:
    async with httpx.AsyncClient(base_url=door.url) as client:
        response = await client.get(
            "/headers",
            headers={
                "X-Markco-User": "admin",
                "X-Markco-Role": "owner",
                "X-Forwarded-For": "203.0.113.66",
                "X-Forwarded-Host": "evil.example",
                "Forwarded": "for=203.0.113.66",
            },
        )
    seen = header_map(response.json())
    assert "x-markco-user" not in seen and "x-markco-role" not in seen
    assert "forwarded" not in seen
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [f"127.0.0.1:{door.port}"]


async def test_a_trusted_proxy_x_forwarded_for_is_extended_not_replaced(
    upstream: Upstream, start_door: StartDoor
) -> None:
    door = await start_door(upstream.socket_path, trusted_proxies=["127.0.0.0/8"])
    async with httpx.AsyncClient(base_url=door.url) as client:
        response = await client.get(
            "/headers", headers={"X-Forwarded-For": "203.0.113.66", "X-Forwarded-Proto": "https"}
        )
    seen = header_map(response.json())
    assert seen["x-forwarded-for"] == ["203.0.113.66, 127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]


async def test_a_request_id_is_generated_when_absent_and_kept_when_sent(door: Door) -> None:
    async with httpx.AsyncClient(base_url=door.url) as client:
        generated = header_map((await client.get("/headers")).json())["x-request-id"]
        kept = header_map(
            (await client.get("/headers", headers={"X-Request-Id": "trace-42"})).json()
        )["x-request-id"]
    assert len(generated) == 1 and generated[0]
    assert kept == ["trace-42"]


async def test_an_unreachable_api_gets_502_with_a_json_error(
    start_door: StartDoor, tmp_path: Path
) -> None:
    door = await start_door(unused_socket_path(tmp_path))
    async with httpx.AsyncClient(base_url=door.url) as client:
        response = await client.get("/api/v1/me")
        again = await client.get("/healthz")  # and the connection is still usable
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_unavailable" and error["message"]
    assert again.status_code == 200
    assert door.front_door.statistics().errors["upstream_unavailable"] == 1


async def test_a_slow_head_gets_408_and_the_connection_closes(
    upstream: Upstream, start_door: StartDoor, raw_client_factory: Connect
) -> None:
    door = await start_door(upstream.socket_path, header_timeout=0.3)
    client = await raw_client_factory(door.port)
    await client.send_raw(b"GET /hello HTTP/1.1\r\nHost: t\r\n")  # ...and nothing more
    with trio.fail_after(5):
        data = await client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 408 ")
    assert door.front_door.statistics().errors["header_timeout"] == 1


async def test_a_connection_that_never_sends_a_byte_is_closed_silently(
    upstream: Upstream, start_door: StartDoor, raw_client_factory: Connect
) -> None:
    door = await start_door(upstream.socket_path, header_timeout=0.2)
    client = await raw_client_factory(door.port)
    with trio.fail_after(5):
        assert await client.read_until_closed() == b""


async def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(
    upstream: Upstream, start_door: StartDoor, raw_client_factory: Connect
) -> None:
    door = await start_door(upstream.socket_path, idle_timeout=0.2)
    client = await raw_client_factory(door.port)
    await client.request("GET", "/hello")
    await client.response()
    with trio.fail_after(5):
        assert await client.read_until_closed() == b""


async def test_a_malformed_request_gets_400_and_the_connection_closes(
    door: Door, raw_client_factory: Connect
) -> None:
    client = await raw_client_factory(door.port)
    await client.send_raw(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    with trio.fail_after(5):
        data = await client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in data
    assert b'"code":"bad_request"' in data


async def test_a_bare_lf_request_is_refused_without_waiting_for_a_timeout(
    door: Door, raw_client_factory: Connect
) -> None:
    client = await raw_client_factory(door.port)
    await client.send_raw(b"GET /hello HTTP/1.1\nHost: t\n\n")
    with trio.fail_after(2):
        assert (await client.read_until_closed()).startswith(b"HTTP/1.1 400 ")


async def test_an_oversized_head_gets_431(
    upstream: Upstream, start_door: StartDoor, raw_client_factory: Connect
) -> None:
    door = await start_door(upstream.socket_path, max_head_bytes=4096)
    client = await raw_client_factory(door.port)
    await client.send_raw(b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 8192)
    with trio.fail_after(5):
        data = await client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 431 ")


async def test_expect_100_continue_is_relayed_before_the_body_is_sent(
    door: Door, raw_client_factory: Connect
) -> None:
    client = await raw_client_factory(door.port)
    await client.send_event(
        h11.Request(
            method="PUT",
            target="/upload",
            headers=[("Host", "t"), ("Content-Length", "5"), ("Expect", "100-continue")],
        )
    )
    with trio.fail_after(5):
        interim = await client.next_event()  # the body has not been sent yet
    assert isinstance(interim, h11.InformationalResponse) and interim.status_code == 100
    await client.send_event(h11.Data(data=b"hello"))
    await client.send_event(h11.EndOfMessage())
    response, body = await client.response()
    assert response.status_code == 200
    assert json.loads(body)["bytes"] == 5


async def test_an_early_answer_before_the_body_is_relayed_and_the_connection_closes(
    door: Door, raw_client_factory: Connect
) -> None:
    client = await raw_client_factory(door.port)
    await client.send_raw(
        b"POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 1000
    )
    with trio.fail_after(5):
        data = await client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in data.lower()
    assert door.front_door.statistics().upstream.in_use == 0


async def test_a_client_that_disconnects_mid_body_leaves_the_server_serving(
    start_door: StartDoor, tmp_path: Path, nursery: trio.Nursery, raw_client_factory: Connect
) -> None:
    # A raw upstream here, not hypercorn: hypercorn 0.18 on a unix socket itself crashes, about
    # one time in five, when a peer closes mid-body (reproduced with no proxy in between).
    server = RawServer()
    await server.serve(
        tmp_path / "api.sock", lambda s: answer_gets_swallow_posts(server, s), nursery
    )
    door = await start_door(tmp_path / "api.sock")
    quitter = await raw_client_factory(door.port)
    await quitter.send_raw(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 100000
    )
    with trio.fail_after(5):
        await server.body_seen.wait()
    await quitter.aclose()
    await wait_until(lambda: server.closed_mid_body == 1)  # the upstream was told: no more body
    assert door.front_door.statistics().upstream.in_use == 0
    async with httpx.AsyncClient(base_url=door.url) as client:
        response = await client.get("/hello")
    assert response.text == "ok"
    assert door.front_door.statistics().errors.get("client_disconnected") == 1


async def test_upstream_connections_return_to_the_pool_limit_after_many_requests(
    upstream: Upstream, start_door: StartDoor
) -> None:
    door = await start_door(upstream.socket_path, upstream_max_idle=4)
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=door.url, limits=limits) as client:

        async def worker() -> None:
            for _ in range(25):
                response = await client.get("/hello")
                assert response.status_code == 200

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(worker)
    pool = door.front_door.statistics().upstream
    assert pool.in_use == 0
    assert pool.open == pool.idle <= 4
    assert door.front_door.statistics().requests_served == 400


async def test_an_http10_client_gets_a_chunked_response_without_chunks(
    door: Door, raw_client_factory: Connect
) -> None:
    client = await raw_client_factory(door.port)
    await client.send_raw(b"GET /chunked HTTP/1.0\r\n\r\n")
    with trio.fail_after(5):
        data = await client.read_until_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"alpha-beta-gamma"


async def test_a_head_request_gets_headers_and_no_body(
    door: Door, raw_client_factory: Connect
) -> None:
    client = await raw_client_factory(door.port)
    await client.request("HEAD", "/hello")
    response, body = await client.response()
    assert response.status_code == 200 and body == b""
    await client.request("GET", "/hello")  # the connection is still in step
    assert (await client.response())[1] == b"hello"


async def test_a_websocket_upgrade_is_spliced_both_ways(door: Door) -> None:
    with trio.fail_after(10):
        async with open_websocket_url(f"ws://127.0.0.1:{door.port}/ws") as ws:
            await ws.send_message("ping")
            assert await ws.get_message() == "ping"
            await ws.send_message(b"\x00\x01binary")
            assert await ws.get_message() == b"\x00\x01binary"


async def test_stop_accepting_refuses_new_connections_and_lets_in_flight_requests_finish(
    door: Door, upstream: Upstream, raw_client_factory: Connect
) -> None:
    idle = await raw_client_factory(door.port)
    await idle.request("GET", "/hello")
    await idle.response()
    busy = await raw_client_factory(door.port)
    await busy.request("GET", "/sse")
    await wait_until(lambda: door.front_door.statistics().active_requests > 0)

    door.front_door.stop_accepting()

    with trio.fail_after(5):
        assert await idle.read_until_closed() == b""  # idle keep-alive connections close
    try:
        await RawClient.connect(door.port)
    except OSError:
        pass
    else:
        raise AssertionError("a new connection was accepted after stop_accepting()")
    upstream.app.release_second_event.set()
    with trio.fail_after(5):
        data = await busy.read_until_closed()  # the in-flight response completes, then closes
    assert b"data: one" in data and b"data: two" in data
    with trio.fail_after(5):
        await door.front_door.drained()
    assert door.front_door.statistics().active_requests == 0


async def test_a_request_the_api_read_is_never_sent_twice(
    start_door: StartDoor, tmp_path: Path, nursery: trio.Nursery
) -> None:
    server = RawServer()
    await server.serve(tmp_path / "api.sock", lambda s: read_then_close(server, s), nursery)
    door = await start_door(tmp_path / "api.sock")
    async with httpx.AsyncClient(base_url=door.url) as client:
        response = await client.post("/api/v1/pay", content=b"once")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert server.requests == 1


async def test_requests_survive_the_api_closing_pooled_connections(
    start_door: StartDoor, tmp_path: Path, nursery: trio.Nursery
) -> None:
    server = RawServer()
    await server.serve(tmp_path / "api.sock", lambda s: answer_once_then_close(server, s), nursery)
    door = await start_door(tmp_path / "api.sock")
    async with httpx.AsyncClient(base_url=door.url) as client:
        for _ in range(3):
            assert (await client.get("/")).text == "ok"
            await trio.sleep(0.02)  # let the server's close land on the pooled connection
    assert server.requests == 3
    assert door.front_door.statistics().upstream.stale_retries >= 1


async def test_an_unexpected_error_stays_in_its_connection_and_is_logged_once(
    door: Door, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def route(head: RequestHead, readiness: Callable[[], ReadinessReport]) -> Decision:
        if head.path == b"/boom":
            raise RuntimeError("bug in routing")
        return routing.route(head, readiness)

    monkeypatch.setattr(exchange, "route", route)
    async with httpx.AsyncClient(base_url=door.url) as client:
        for _ in range(2):
            try:
                await client.get("/boom")
            except httpx.RemoteProtocolError:
                pass  # that connection was closed, as it should be
            else:
                raise AssertionError("the broken request got an answer")
        assert (await client.get("/hello")).text == "hello"
    assert door.front_door.statistics().errors["internal"] == 2
    tracebacks = [r for r in caplog.records if r.exc_info and "bug in routing" in r.getMessage()]
    assert len(tracebacks) == 1


async def test_malformed_chunked_framing_mid_body_gets_400_and_close(
    door: Door, upstream: Upstream, raw_client_factory: Connect
) -> None:
    client = await raw_client_factory(door.port)
    await client.send_raw(
        b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    with trio.fail_after(5):
        await upstream.app.first_chunk_seen.wait()
    await client.send_raw(b"zz\r\n")  # not a chunk size
    with trio.fail_after(5):
        data = await client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert door.front_door.statistics().errors["bad_request"] == 1


async def test_an_http10_client_that_asks_for_keep_alive_keeps_its_connection(
    door: Door, raw_client_factory: Connect
) -> None:
    client = await raw_client_factory(door.port)
    for _ in range(2):
        await client.send_raw(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        response, body = await client.raw_response()
        assert body == b"hello"
        assert (b"connection", b"keep-alive") in response.headers
    assert door.front_door.statistics().open_connections == 1


async def test_a_body_the_api_ends_by_closing_is_rechunked_so_the_client_stays(
    start_door: StartDoor, tmp_path: Path, nursery: trio.Nursery, raw_client_factory: Connect
) -> None:
    server = RawServer()
    await server.serve(tmp_path / "api.sock", lambda s: answer_until_close(server, s), nursery)
    door = await start_door(tmp_path / "api.sock")
    client = await raw_client_factory(door.port)
    for _ in range(2):
        await client.request("GET", "/")
        response, body = await client.response()
        assert (b"transfer-encoding", b"chunked") in response.headers
        assert body == b"until the end"
    assert server.connections == 2  # a close-delimited upstream connection is never reused


# ------------------------------------------------------------------------------ per-client caps


async def test_a_client_over_its_connection_cap_gets_503_and_a_close(
    upstream: Upstream, start_door: StartDoor, raw_client_factory: Connect
) -> None:
    door = await start_door(upstream.socket_path, max_connections_per_client=2)
    held = [await raw_client_factory(door.port) for _ in range(2)]
    for client in held:  # both accepted and served
        await client.request("GET", "/hello")
        assert (await client.response())[0].status_code == 200
    extra = await raw_client_factory(door.port)
    await extra.request("GET", "/hello")
    response, body = await extra.response()
    assert response.status_code == 503
    assert dict(response.headers)[b"retry-after"] == b"5"
    assert json.loads(body)["error"]["code"] == "too_many_connections"
    assert await extra.stream.receive_some(10) == b""
    assert door.front_door.statistics().errors["too_many_connections"] == 1


async def test_a_closed_connection_frees_its_place_under_the_cap(
    upstream: Upstream, start_door: StartDoor, raw_client_factory: Connect
) -> None:
    door = await start_door(upstream.socket_path, max_connections_per_client=1)
    first = await raw_client_factory(door.port)
    await first.request("GET", "/hello")
    assert (await first.response())[0].status_code == 200
    await first.aclose()
    await wait_until(lambda: door.front_door.statistics().open_connections == 0)
    second = await raw_client_factory(door.port)
    await second.request("GET", "/hello")
    assert (await second.response())[0].status_code == 200


async def test_a_trusted_proxy_is_never_capped(
    upstream: Upstream, start_door: StartDoor, raw_client_factory: Connect
) -> None:
    door = await start_door(upstream.socket_path, max_connections_per_client=1,
                            trusted_proxies=["127.0.0.1"])
    clients = [await raw_client_factory(door.port) for _ in range(3)]
    for client in clients:
        await client.request("GET", "/hello")
        assert (await client.response())[0].status_code == 200


async def test_websockets_through_a_trusted_proxy_are_capped_per_forwarded_client(
    upstream: Upstream, start_door: StartDoor
) -> None:
    door = await start_door(upstream.socket_path, max_connections_per_client=1,
                            trusted_proxies=["127.0.0.1"])
    url = f"ws://127.0.0.1:{door.port}/ws"
    one = [("X-Forwarded-For", "203.0.113.9")]
    with trio.fail_after(10):
        async with open_websocket_url(url, extra_headers=one) as ws:
            await ws.send_message("first")
            assert await ws.get_message() == "first"
            async with open_websocket_url(
                    url, extra_headers=[("X-Forwarded-For", "198.51.100.20")]) as other:
                await other.send_message("another client")
                assert await other.get_message() == "another client"
            client = await RawClient.connect(door.port)
            async with client.stream:
                await client.request("GET", "/ws", [
                    ("Connection", "Upgrade"), ("Upgrade", "websocket"),
                    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                    ("Sec-WebSocket-Version", "13"), ("X-Forwarded-For", "203.0.113.9")])
                response, body = await client.response()
            assert response.status_code == 503
            assert json.loads(body)["error"]["code"] == "too_many_connections"
        async with open_websocket_url(url, extra_headers=one) as again:  # its place is free
            await again.send_message("again")
            assert await again.get_message() == "again"
