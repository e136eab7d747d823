"""Every connection an upstream pool makes is closed in the end: none is left to the garbage
collector (a connected socket collected unclosed is a ResourceWarning, an error under pytest).

These reproduce, deterministically, the front door's flaky leak of a connection to an editor:
`EditorPools.sweep` forgot a pool while a request still held it (its connection was being
made: a netns connect waits for a thread), and the connection the request released afterwards
was kept idle in that forgotten pool, where nothing would ever close it.

The editor is a real TCP server on loopback. Only the namespace thread's delay is simulated:
`dial.tcp_socket` is wrapped to wait for the test's signal before making the (real) socket,
since a real network namespace holder cannot be made to pause at that point on demand.
"""

from __future__ import annotations

import gc
import socket
import warnings
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from markco_trio import dial
from markco_trio.proxy.upstream import EditorPools, UpstreamPool

from .harness import RawServer, answer_forever

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"


class SlowDial:
    """`dial.tcp_socket` that waits for `go` first (the namespace thread's time), and keeps
    every socket it made so that the test can check that each one was closed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.go = trio.Event()
        self.made: list[socket.socket] = []
        real = dial.tcp_socket

        async def slow(host: str) -> tuple[socket.socket, str]:
            await self.go.wait()
            sock, ip = await real(host)
            self.made.append(sock)
            return sock, ip

        monkeypatch.setattr(dial, "tcp_socket", slow)

    def left_open(self) -> list[socket.socket]:
        return [sock for sock in self.made if sock.fileno() != -1]


@pytest.fixture
async def editor(nursery: trio.Nursery) -> AsyncIterator[tuple[str, int]]:
    """A keep-alive HTTP server on loopback TCP, answering every request with `ok`."""
    server = RawServer()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, lambda s: answer_forever(server, s), listeners)
    yield ("127.0.0.1", port)


async def exchange(pool: UpstreamPool) -> None:
    """One request and its response, then the connection goes back to the pool."""
    conn = await pool.send_request(REQUEST)
    data = b""
    while not data.endswith(b"ok"):
        await trio.lowlevel.wait_readable(conn.sock)
        data += conn.sock.recv(65536)
    pool.release(conn)


def assert_one_socket_made_and_closed(slow: SlowDial) -> None:
    """One connection was made, it is closed, and collecting garbage finds no unclosed one."""
    assert len(slow.made) == 1
    assert slow.left_open() == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, [str(w.message) for w in leaks]


async def test_a_pool_swept_while_its_connection_is_made_leaves_no_socket_open(
    editor: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowDial(monkeypatch)
    pools = EditorPools()
    pool = pools.get(editor)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(exchange, pool)
        await trio.testing.wait_all_tasks_blocked()  # waiting for its connection
        pools.sweep()  # the front door's sweeper runs meanwhile
        slow.go.set()
    pools.close()  # the front door shuts down
    del pool
    assert_one_socket_made_and_closed(slow)


async def test_a_connection_released_to_a_pool_the_sweep_forgot_is_closed(
    editor: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request got its pool, then the sweep forgot it (empty) before the request began."""
    slow = SlowDial(monkeypatch)
    slow.go.set()
    pools = EditorPools()
    pool = pools.get(editor)
    pools.sweep()
    await exchange(pool)
    pools.close()
    del pool
    assert_one_socket_made_and_closed(slow)


async def test_a_connection_in_use_when_the_pools_close_is_closed_when_released(
    editor: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowDial(monkeypatch)
    slow.go.set()
    pools = EditorPools()
    pool = pools.get(editor)
    conn = await pool.send_request(REQUEST)
    pools.close()  # the front door stops while the response is still coming
    pool.release(conn)
    assert slow.left_open() == []
    assert pool.statistics().open == 0


async def test_a_swept_pool_in_use_is_kept_and_its_connection_reused(
    editor: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fix does not cost reuse: a pool whose connection is being made is not forgotten."""
    slow = SlowDial(monkeypatch)
    pools = EditorPools()
    pool = pools.get(editor)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(exchange, pool)
        await trio.testing.wait_all_tasks_blocked()
        pools.sweep()
        slow.go.set()
    assert pools.get(editor) is pool
    await exchange(pools.get(editor))
    stats = pools.statistics()
    assert (stats.connects, stats.reuses, stats.idle) == (1, 1, 1)
    pools.close()
    assert slow.left_open() == []
