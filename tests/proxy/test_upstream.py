"""The upstream pool: reuse, idle limits, and retrying only what was never sent."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from markco_trio.proxy import upstream as upstream_module
from markco_trio.proxy.upstream import UpstreamPool, UpstreamUnavailable

from .harness import RAW_RESPONSE as RESPONSE
from .harness import RawServer, answer_forever, answer_once_then_close

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


async def read_response(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"ok"):
        await trio.lowlevel.wait_readable(sock)
        data += sock.recv(65536)
    return data


async def exchange(pool: UpstreamPool) -> None:
    conn = await pool.send_request(REQUEST)
    assert await read_response(conn.sock) == RESPONSE
    pool.release(conn)


MakePool = Callable[..., UpstreamPool]


@pytest.fixture
def make_pool() -> Iterator[MakePool]:
    pools: list[UpstreamPool] = []

    def make(path: Path, **options: Any) -> UpstreamPool:
        pools.append(UpstreamPool(path, **options))
        return pools[-1]

    yield make
    for pool in pools:
        pool.close()


async def test_no_socket_means_the_upstream_is_unavailable(
    make_pool: MakePool, tmp_path: Path
) -> None:
    pool = make_pool(tmp_path / "missing.sock")
    with pytest.raises(UpstreamUnavailable, match="missing.sock"):
        await pool.send_request(REQUEST)
    assert pool.statistics().open == 0


async def test_a_socket_nobody_listens_on_means_the_upstream_is_unavailable(
    make_pool: MakePool,
    tmp_path: Path,
) -> None:
    path = tmp_path / "dead.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: ECONNREFUSED
    with pytest.raises(UpstreamUnavailable):
        await make_pool(path).send_request(REQUEST)


async def test_a_released_connection_is_reused(
    make_pool: MakePool, tmp_path: Path, nursery: trio.Nursery
) -> None:
    server = RawServer()
    await server.serve(tmp_path / "api.sock", lambda s: answer_forever(server, s), nursery)
    pool = make_pool(tmp_path / "api.sock")
    for _ in range(3):
        await exchange(pool)
    stats = pool.statistics()
    assert (stats.connects, stats.reuses, stats.open, stats.in_use) == (1, 2, 1, 0)
    assert server.connections == 1


async def test_a_pooled_connection_the_server_closed_is_retried_on_a_fresh_one(
    make_pool: MakePool, tmp_path: Path, nursery: trio.Nursery
) -> None:
    server = RawServer()
    await server.serve(tmp_path / "api.sock", lambda s: answer_once_then_close(server, s), nursery)
    pool = make_pool(tmp_path / "api.sock")
    await exchange(pool)
    await trio.sleep(0.05)  # the server has closed the pooled connection by now
    await exchange(pool)
    stats = pool.statistics()
    assert stats.stale_retries == 1  # nothing of the request had been taken: safe to resend
    assert stats.connects == 2
    assert server.requests == 2  # each request reached the server exactly once


async def test_a_long_idle_connection_found_closed_is_dropped_before_use(
    make_pool: MakePool, tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream_module, "_PEEK_AFTER", 0.0)
    server = RawServer()
    await server.serve(tmp_path / "api.sock", lambda s: answer_once_then_close(server, s), nursery)
    pool = make_pool(tmp_path / "api.sock")
    await exchange(pool)
    await trio.sleep(0.05)
    await exchange(pool)
    stats = pool.statistics()
    assert (stats.stale_retries, stats.reuses, stats.connects) == (0, 0, 2)


async def test_a_connection_idle_past_the_idle_time_is_not_reused(
    make_pool: MakePool, tmp_path: Path, nursery: trio.Nursery
) -> None:
    server = RawServer()
    await server.serve(tmp_path / "api.sock", lambda s: answer_forever(server, s), nursery)
    pool = make_pool(tmp_path / "api.sock", max_idle_time=0.05)
    await exchange(pool)
    await trio.sleep(0.1)
    await exchange(pool)
    assert (pool.statistics().reuses, pool.statistics().connects) == (0, 2)


async def test_sweep_closes_connections_idle_too_long(
    make_pool: MakePool, tmp_path: Path, nursery: trio.Nursery
) -> None:
    server = RawServer()
    await server.serve(tmp_path / "api.sock", lambda s: answer_forever(server, s), nursery)
    pool = make_pool(tmp_path / "api.sock", max_idle_time=0.05)
    await exchange(pool)
    assert pool.statistics().idle == 1
    await trio.sleep(0.1)
    pool.sweep()
    assert pool.statistics().open == 0


async def test_no_more_than_max_idle_connections_are_kept(
    make_pool: MakePool, tmp_path: Path, nursery: trio.Nursery
) -> None:
    server = RawServer()
    await server.serve(tmp_path / "api.sock", lambda s: answer_forever(server, s), nursery)
    pool = make_pool(tmp_path / "api.sock", max_idle=2)
    conns = [await pool.send_request(REQUEST) for _ in range(5)]
    assert pool.statistics().in_use == 5
    for conn in conns:
        await read_response(conn.sock)
        pool.release(conn)
    stats = pool.statistics()
    assert (stats.open, stats.idle, stats.in_use) == (2, 2, 0)
