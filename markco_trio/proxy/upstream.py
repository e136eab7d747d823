"""A pool of keep-alive connections to the API app over its unix socket.

The API listens on `<runtime dir>/api.sock` in a 0700 directory, never on loopback TCP (any local
process could reach that and forge the identity headers the proxy sets).

Two rules keep pooled connections from failing requests:
- A connection idle for `max_idle_time` (default 4 s, below hypercorn's 5 s keep-alive timeout) is
  closed rather than reused, so the server does not close it under us while a request travels.
- A request is retried on another connection only when not one of its bytes was taken: a pooled
  connection whose server has gone (restarted, or closed it anyway) fails the first send with
  EPIPE/ECONNRESET. A request the upstream may have read, even in part, is never sent twice.
"""

from __future__ import annotations

import collections
import errno
import socket
from dataclasses import dataclass
from pathlib import Path

import trio

from markco_trio.proxy import sockio

__all__ = [
    "UpstreamBroken",
    "UpstreamConnection",
    "UpstreamPool",
    "UpstreamStatistics",
    "UpstreamUnavailable",
]

# A connection idle longer than this is checked for a pending EOF before reuse (one cheap
# non-blocking peek); busier connections skip the check.
_PEEK_AFTER = 1.0
_STALE_ERRORS = (BrokenPipeError, ConnectionResetError)


class UpstreamUnavailable(Exception):
    """No connection to the upstream could be made (nothing listens at its socket)."""


class UpstreamBroken(Exception):
    """The upstream connection failed after (part of) the request was sent: never retried."""


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
    """Keep-alive connections to one unix-socket upstream; owned by one trio run."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_idle: int = 256,
        max_idle_time: float = 4.0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.path = str(path)
        self.max_idle = max_idle
        self.max_idle_time = max_idle_time
        self.connect_timeout = connect_timeout
        self._idle: collections.deque[UpstreamConnection] = collections.deque()
        self._in_use = 0
        self._connects = 0
        self._reuses = 0
        self._stale_retries = 0

    async def send_request(self, data: bytes) -> UpstreamConnection:
        """A connection that has been sent `data` (a request head, perhaps with body bytes).

        Pooled connections are tried first, most recently used first; one found closed before
        it took a single byte is dropped and the next is tried. Raises `UpstreamUnavailable` when
        no connection can be made, `UpstreamBroken` when the send failed after some bytes.
        """
        while True:
            conn = self._take_idle()
            if conn is None:
                conn = UpstreamConnection(await self._connect())
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
                raise UpstreamUnavailable(f"the API at {self.path} closed the connection") from exc
            except OSError as exc:
                self.discard(conn)
                raise UpstreamBroken(f"sending to the API failed: {exc}") from exc
            if sent < len(data):
                try:
                    await sockio.send_all(conn.sock, memoryview(data)[sent:])
                except OSError as exc:
                    self.discard(conn)
                    raise UpstreamBroken(f"sending to the API failed: {exc}") from exc
                except BaseException:
                    self.discard(conn)
                    raise
            return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Give back a connection whose exchange completed cleanly; it may be reused."""
        self._in_use -= 1
        if len(self._idle) >= self.max_idle:
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
        """Close every idle connection (connections in use are closed by their users)."""
        while self._idle:
            self._idle.pop().sock.close()

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

    def _take_idle(self) -> UpstreamConnection | None:
        idle = self._idle
        if not idle:
            return None
        now = trio.current_time()
        while idle:
            conn = idle.pop()
            age = now - conn.idle_since
            if age < self.max_idle_time and (age < _PEEK_AFTER or _still_open(conn.sock)):
                self._reuses += 1
                return conn
            conn.sock.close()
        return None

    async def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        deadline = trio.current_time() + self.connect_timeout
        try:
            while True:
                try:
                    sock.connect(self.path)
                    return sock
                except BlockingIOError:
                    # A unix socket's EAGAIN means its accept backlog is full: try again shortly.
                    if trio.current_time() >= deadline:
                        raise UpstreamUnavailable(
                            f"the API at {self.path} did not accept a connection within "
                            f"{self.connect_timeout:g} s"
                        ) from None
                    await trio.sleep(0.002)
        except OSError as exc:
            sock.close()
            what = "no socket" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
            raise UpstreamUnavailable(f"cannot connect to the API at {self.path}: {what}") from exc
        except BaseException:
            sock.close()
            raise


def _still_open(sock: socket.socket) -> bool:
    """Whether an idle connection has no EOF (or stray bytes) pending from its server."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False  # EOF, or bytes nobody asked for: either way not reusable
