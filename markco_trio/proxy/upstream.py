"""Pools of keep-alive connections to upstreams: the API app, and each user's editor.

The API listens on `<runtime dir>/api.sock` in a 0700 directory, never on loopback TCP (any local
process could reach that and forge the identity headers the proxy sets). Editors listen on TCP
(`127.0.0.1:PORT` inside the editor's own network namespace on the process backend — a host of
the form `netns:<pid>:<ticks>:127.0.0.1`, see `markco_trio.dial` — a container's address on
docker), so a pool's address is a unix socket path or a `(host, port)` pair; `EditorPools` keeps
one pool per editor address.

Three rules keep pooled connections from failing requests:
- A connection idle for `max_idle_time` (default 4 s, below hypercorn's and Node's 5 s keep-alive
  timeouts) is closed rather than reused, so the server does not close it under us while a
  request travels.
- Before reuse, a connection idle for over a second is checked for a pending EOF (one
  non-blocking peek). A request that could not be sent twice (`verify=True`: it has a body or
  is not idempotent) checks any reused TCP connection, because on TCP a send to a peer that
  has closed still succeeds; on a unix socket that send fails at once, before a byte is taken.
- A request is retried on another connection only when not one of its bytes was taken: a pooled
  connection whose server has gone (restarted, or closed it anyway) fails the first send with
  EPIPE/ECONNRESET. (The exchange may also resend an idempotent request, fully sent, that a
  reused connection closed without answering; see `UpstreamClosedEarly`.)
"""

from __future__ import annotations

import collections
import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import trio

from markco_trio import dial
from markco_trio.proxy import sockio

__all__ = [
    "Address",
    "EditorPools",
    "UpstreamBroken",
    "UpstreamClosedEarly",
    "UpstreamConnection",
    "UpstreamPool",
    "UpstreamStatistics",
    "UpstreamUnavailable",
]

# A unix-socket connection idle longer than this is checked for a pending EOF before reuse (one
# cheap non-blocking peek); busier connections skip the check.
_PEEK_AFTER = 1.0
_STALE_ERRORS = (BrokenPipeError, ConnectionResetError)
_DOWN_MARK_SECONDS = 60.0  # an editor address found down is tried before announcing it ready
_MAX_DOWN = 10_000

# A unix socket path, or a TCP (host, port).
Address = str | tuple[str, int]


class UpstreamUnavailable(Exception):
    """No connection to the upstream could be made (nothing listens at its address)."""


class UpstreamBroken(Exception):
    """The upstream connection failed after (part of) the request was sent: never retried."""


class UpstreamClosedEarly(UpstreamBroken):
    """The upstream closed (or reset) the connection before sending a single response byte.

    On a connection reused from the pool this is the keep-alive race (the server closed it just
    as the request left): an idempotent request that was sent whole may be sent again once.
    """


class UpstreamConnection:
    """One connection to the upstream; `reused` once it has carried a request before."""

    __slots__ = ("sock", "reused", "idle_since")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reused = False
        self.idle_since = 0.0


@dataclass(frozen=True, slots=True)
class UpstreamStatistics:
    """Counters of an `UpstreamPool`."""

    open: int  # connections open now: idle + in use
    idle: int
    in_use: int
    connects: int
    reuses: int
    stale_retries: int  # requests moved to another connection before any byte was sent


class UpstreamPool:
    """Keep-alive connections to one upstream (unix socket or TCP); owned by one trio run.

    `address` is a unix socket path or a `(host, port)` pair; `name` says what it is in error
    messages ("the API", "the editor").
    """

    def __init__(
        self,
        address: str | Path | tuple[str, int],
        *,
        name: str = "the API",
        max_idle: int = 256,
        max_idle_time: float = 4.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.address: Address = address if isinstance(address, tuple) else str(address)
        self.tcp = isinstance(address, tuple)
        self.name = name
        self.max_idle = max_idle
        self.max_idle_time = max_idle_time
        self.connect_timeout = connect_timeout
        self._idle: collections.deque[UpstreamConnection] = collections.deque()
        self._in_use = 0
        self._connecting = 0  # connections being made (not yet in use)
        # Set by `close`: a connection released afterwards is closed, not pooled (nobody would
        # ever close an idle connection of a pool its owner has let go of).
        self._closed = False
        self._connects = 0
        self._reuses = 0
        self._stale_retries = 0

    @property
    def path(self) -> str:
        """The address as text (the socket path, or `host:port`)."""
        if isinstance(self.address, tuple):
            return f"{self.address[0]}:{self.address[1]}"
        return self.address

    async def send_request(
        self, data: bytes, *, fresh: bool = False, verify: bool = False
    ) -> UpstreamConnection:
        """A connection that has been sent `data` (a request head, perhaps with body bytes).

        Pooled connections are tried first, most recently used first; one found closed before
        it took a single byte is dropped and the next is tried. `fresh` skips the pool (a retry
        after a reused connection failed); `verify` checks a reused TCP connection for a
        pending EOF however recently it was used (for requests that cannot be retried).
        Raises `UpstreamUnavailable` when no connection can be made, `UpstreamBroken` when the
        send failed after some bytes.
        """
        while True:
            conn = None if fresh else self._take_idle(verify)
            if conn is None:
                # Counted while it is made (a netns connect waits for a thread): a pool being
                # connected to holds a connection, so `EditorPools.sweep` keeps it.
                self._connecting += 1
                try:
                    conn = UpstreamConnection(await self._connect())
                finally:
                    self._connecting -= 1
                self._connects += 1
            self._in_use += 1
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                sent = 0
            except _STALE_ERRORS as exc:
                self.discard(conn)
                if conn.reused:
                    self._stale_retries += 1
                    continue
                raise UpstreamUnavailable(
                    f"{self.name} at {self.path} closed the connection"
                ) from exc
            except OSError as exc:
                self.discard(conn)
                raise UpstreamBroken(f"sending to {self.name} failed: {exc}") from exc
            if sent < len(data):
                try:
                    await sockio.send_all(conn.sock, memoryview(data)[sent:])
                except OSError as exc:
                    self.discard(conn)
                    raise UpstreamBroken(f"sending to {self.name} failed: {exc}") from exc
                except BaseException:
                    self.discard(conn)
                    raise
            return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Give back a connection whose exchange completed cleanly; it may be reused (unless
        the pool was closed meanwhile: then it is closed)."""
        self._in_use -= 1
        if self._closed or len(self._idle) >= self.max_idle:
            conn.sock.close()
            return
        conn.reused = True
        conn.idle_since = trio.current_time()
        self._idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        """Close a connection that is in use and must not be reused (broken, or mid-message)."""
        self._in_use -= 1
        conn.sock.close()

    def sweep(self) -> None:
        """Close idle connections past their idle time (the front door calls this periodically)."""
        limit = trio.current_time() - self.max_idle_time
        idle = self._idle
        while idle and idle[0].idle_since < limit:
            idle.popleft().sock.close()

    def close(self) -> None:
        """Close every idle connection (connections in use are closed by their users: one
        released after this is closed rather than kept)."""
        self._closed = True
        while self._idle:
            self._idle.pop().sock.close()

    def holds_connections(self) -> bool:
        """Whether any connection is idle here, in use or being made."""
        return bool(self._idle) or self._in_use > 0 or self._connecting > 0

    async def reachable(self) -> bool:
        """Whether a new connection to the upstream can be made now (it is closed at once)."""
        try:
            sock = await self._connect()
        except UpstreamUnavailable:
            return False
        sock.close()
        return True

    def count_retry(self) -> None:
        """Count a request sent again after a reused connection closed without answering."""
        self._stale_retries += 1

    def statistics(self) -> UpstreamStatistics:
        """Counts of open, idle and in-use connections, connects, reuses and stale retries."""
        idle = len(self._idle)
        return UpstreamStatistics(
            open=idle + self._in_use,
            idle=idle,
            in_use=self._in_use,
            connects=self._connects,
            reuses=self._reuses,
            stale_retries=self._stale_retries,
        )

    def _take_idle(self, verify: bool = False) -> UpstreamConnection | None:
        idle = self._idle
        if not idle:
            return None
        now = trio.current_time()
        peek_after = 0.0 if verify and self.tcp else _PEEK_AFTER
        while idle:
            conn = idle.pop()
            age = now - conn.idle_since
            if age < self.max_idle_time and (age < peek_after or _still_open(conn.sock)):
                self._reuses += 1
                return conn
            conn.sock.close()
        return None

    async def _connect(self) -> socket.socket:
        if isinstance(self.address, tuple):
            return await self._connect_tcp(*self.address)
        return await self._connect_unix(self.address)

    async def _connect_unix(self, path: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        deadline = trio.current_time() + self.connect_timeout
        try:
            while True:
                try:
                    sock.connect(path)
                    return sock
                except BlockingIOError:
                    # A unix socket's EAGAIN means its accept backlog is full: try again shortly.
                    if trio.current_time() >= deadline:
                        raise UpstreamUnavailable(
                            f"{self.name} at {path} did not accept a connection within "
                            f"{self.connect_timeout:g} s"
                        ) from None
                    await trio.sleep(0.002)
        except OSError as exc:
            sock.close()
            what = "no socket" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
            raise UpstreamUnavailable(f"cannot connect to {self.name} at {path}: {what}") from exc
        except BaseException:
            sock.close()
            raise

    async def _connect_tcp(self, host: str, port: int) -> socket.socket:
        # Editors are addressed by IP (compute resolves nothing): no DNS on the hot path. A
        # `netns:<pid>:<ticks>:` host is inside the editor's own network namespace: the socket
        # is made there (`markco_trio.dial`), then connected like any other.
        try:
            sock, ip = await dial.tcp_socket(host)
        except (OSError, ValueError) as exc:
            raise UpstreamUnavailable(f"cannot connect to {self.name} at {host}:{port}: "
                                      f"{exc}") from exc
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex((ip, port))
            if err == errno.EINPROGRESS:
                # A new connection, not the steady state: a cancel scope here costs nothing.
                with trio.move_on_after(self.connect_timeout):
                    await trio.lowlevel.wait_writable(sock)
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err == errno.EINPROGRESS:
                    raise UpstreamUnavailable(
                        f"{self.name} at {host}:{port} did not accept a connection within "
                        f"{self.connect_timeout:g} s"
                    )
            if err:
                raise UpstreamUnavailable(
                    f"cannot connect to {self.name} at {host}:{port}: {os.strerror(err)}"
                )
            return sock
        except OSError as exc:
            sock.close()
            raise UpstreamUnavailable(
                f"cannot connect to {self.name} at {host}:{port}: {exc.strerror or exc}"
            ) from exc
        except BaseException:
            sock.close()
            raise


class EditorPools:
    """One `UpstreamPool` per editor address, made on first use and dropped once empty.

    An editor that restarts on another port simply gets a new pool; the old one's idle
    connections age out and, once it holds none (idle or in use), it is forgotten.

    `down` holds the addresses found not answering lately (`mark_down`; the exchange clears a
    mark when a response comes back from there): `reachable` tries such an address before
    saying yes, so that a wait page does not announce an editor that crashed as ready.
    """

    def __init__(self, *, max_idle: int = 64, max_idle_time: float = 4.0,
                 connect_timeout: float = 2.0) -> None:
        self._pools: dict[tuple[str, int], UpstreamPool] = {}
        self._options = (max_idle, max_idle_time, connect_timeout)
        self._forgotten = (0, 0, 0)  # connects, reuses, stale retries of pools dropped
        self.down: dict[Address, float] = {}

    def get(self, address: tuple[str, int]) -> UpstreamPool:
        """The pool for `address`."""
        pool = self._pools.get(address)
        if pool is None:
            max_idle, max_idle_time, connect_timeout = self._options
            pool = self._pools[address] = UpstreamPool(
                address, name="the editor", max_idle=max_idle, max_idle_time=max_idle_time,
                connect_timeout=connect_timeout)
        return pool

    def mark_down(self, address: Address) -> None:
        """`address` did not answer (nobody accepted, or it closed before answering)."""
        if len(self.down) >= _MAX_DOWN:
            self.down.clear()
        self.down[address] = trio.current_time()

    def mark_up(self, address: Address) -> None:
        """`address` answered again."""
        self.down.pop(address, None)

    async def reachable(self, address: tuple[str, int]) -> bool:
        """Whether the editor at `address` may be announced as ready: yes unless it was found
        down lately, and then only if a connection to it can be made now."""
        if address not in self.down:
            return True
        if not await self.get(address).reachable():
            return False
        self.mark_up(address)
        return True

    def sweep(self) -> None:
        """Close idle connections past their time; forget pools that hold no connection and
        marks of being down older than a minute."""
        if self.down:
            old = trio.current_time() - _DOWN_MARK_SECONDS
            self.down = {a: t for a, t in self.down.items() if t > old}
        for address, pool in list(self._pools.items()):
            pool.sweep()
            if not pool.holds_connections():
                # Closed as it is forgotten: a request that still holds this pool (it was got
                # before the sweep) closes its connection at the end instead of pooling it
                # here, where nothing would ever close it.
                pool.close()
                stats = pool.statistics()
                connects, reuses, retries = self._forgotten
                self._forgotten = (connects + stats.connects, reuses + stats.reuses,
                                   retries + stats.stale_retries)
                del self._pools[address]

    def close(self) -> None:
        """Close every idle connection of every pool."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    def statistics(self) -> UpstreamStatistics:
        """The counters of all editor pools, summed (`open`, `idle`, `in_use` right now;
        the others since the front door started serving)."""
        stats = [pool.statistics() for pool in self._pools.values()]
        connects, reuses, retries = self._forgotten
        return UpstreamStatistics(
            open=sum(s.open for s in stats),
            idle=sum(s.idle for s in stats),
            in_use=sum(s.in_use for s in stats),
            connects=connects + sum(s.connects for s in stats),
            reuses=reuses + sum(s.reuses for s in stats),
            stale_retries=retries + sum(s.stale_retries for s in stats),
        )

    def __len__(self) -> int:
        return len(self._pools)


def _still_open(sock: socket.socket) -> bool:
    """Whether an idle connection has no EOF (or stray bytes) pending from its server."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # EOF, or bytes nobody asked for: either way not reusable
