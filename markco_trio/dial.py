"""Dialling a workload: one function every part of the daemon uses to open a connection to an
editor or a runtime, whatever kind of address the backend gave.

Address forms (`ContainerInfo.address`):

- `host:port` — plain TCP (`[::1]:8080` for IPv6): the docker backend's published ports, tests.
- `unix:/path/to.sock` — a unix socket.
- `netns:<pid>:<start ticks>:<host>:<port>` — TCP to `host:port` INSIDE the network namespace of
  process `pid`, which must still be the process that started at `<start ticks>` (clock ticks
  since boot, field 22 of `/proc/<pid>/stat`): a recycled pid is never dialled. The process
  backend gives each workload a network namespace of its own with only a loopback interface, so
  its `127.0.0.1` is reachable from nowhere on the host — except by the daemon, which opens the
  socket inside that namespace.

How a socket gets into another namespace: a short-lived thread of its own opens
`/proc/<pid>/ns/net`, checks the pid is still the same process, `setns(CLONE_NEWNET)` (which
moves only that thread), creates the socket, and ends — a socket stays in the namespace it was
created in, so the connect is then made from trio like any other; and the thread never returns to
the pool of worker threads in a foreign namespace. Needs CAP_SYS_ADMIN (the daemon runs as root
whenever workloads have namespaces of their own).

A `(host, port)` pair is the same address split at its last colon (`rpartition(":")`): for the
netns form the host part keeps the `netns:<pid>:<ticks>:` prefix, so code that carries a pair
around (the proxy's pools, compute's actor) carries the namespace with it. `tcp_socket(host)`
and `open_tcp_stream(host, port)` accept such a host.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import h11
import trio

__all__ = [
    "NETNS_PREFIX",
    "Target",
    "http_get",
    "netns_address",
    "open_stream",
    "open_tcp_stream",
    "parse",
    "split_netns",
    "tcp_socket",
]

NETNS_PREFIX = "netns:"
UNIX_PREFIX = "unix:"
CLONE_NEWNET = 0x40000000
PROC = Path("/proc")


@dataclass(frozen=True)
class Target:
    """A parsed address: a unix socket `path`, or TCP `host:port`, inside the network namespace
    of process `ns_pid` (started at `ns_start_ticks`) when those are set."""

    host: str = ""
    port: int = 0
    path: str = ""
    ns_pid: int | None = None
    ns_start_ticks: int | None = None

    def __str__(self) -> str:
        if self.path:
            return UNIX_PREFIX + self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.ns_pid is not None:
            return f"{NETNS_PREFIX}{self.ns_pid}:{self.ns_start_ticks}:{host}:{self.port}"
        return f"{host}:{self.port}"


def netns_address(pid: int, start_ticks: int, host: str, port: int) -> str:
    """The netns form of `host:port` inside the network namespace of (pid, start ticks)."""
    return str(Target(host=host, port=port, ns_pid=pid, ns_start_ticks=start_ticks))


def split_netns(host: str) -> tuple[int | None, int | None, str]:
    """`netns:<pid>:<ticks>:127.0.0.1` → (pid, ticks, "127.0.0.1"); a plain host → (None,
    None, host). ValueError when the prefix is malformed."""
    if not host.startswith(NETNS_PREFIX):
        return None, None, host.strip("[]")
    pid_text, ticks_text, inner = host[len(NETNS_PREFIX):].split(":", 2)
    pid, ticks = int(pid_text), int(ticks_text)
    if pid <= 0 or ticks < 0 or not inner:
        raise ValueError(f"not a netns host: {host!r}")
    return pid, ticks, inner.strip("[]")


def parse(address: str) -> Target:
    """Parse an address in any of the forms of the module doc (ValueError if malformed)."""
    if address.startswith(UNIX_PREFIX):
        path = address[len(UNIX_PREFIX):]
        if not path.startswith("/"):
            raise ValueError(f"a unix address needs an absolute path: {address!r}")
        return Target(path=path)
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ValueError(f"not an address (host:port, unix:/path or netns:...): {address!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {address!r}")
    pid, ticks, inner = split_netns(host)
    return Target(host=inner, port=port, ns_pid=pid, ns_start_ticks=ticks)


# ------------------------------------------------------------------------------ namespaces

_libc: ctypes.CDLL | None = None


def _setns(fd: int, nstype: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _start_ticks(pid: int) -> int | None:
    try:
        raw = (PROC / str(pid) / "stat").read_bytes().decode("utf-8", "replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X", "x"):
        return None
    return int(fields[19])


def _open_netns(pid: int, start_ticks: int) -> int:
    """An fd of the network namespace of (pid, start ticks). Opened BEFORE the identity check:
    if the pid is that process after the open, it already was at the open (a pid is not reused
    while its process lives, and this one started long before)."""
    try:
        fd = os.open(PROC / str(pid) / "ns" / "net", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConnectionRefusedError(errno.ECONNREFUSED,
                                     f"the workload's namespace holder {pid} is gone") from None
    if _start_ticks(pid) != start_ticks:
        os.close(fd)
        raise ConnectionRefusedError(
            errno.ECONNREFUSED, f"pid {pid} is no longer the workload's namespace holder")
    return fd


def _socket_in_namespace(ns_fd: int, family: int) -> socket.socket:
    """A new TCP socket created inside the namespace `ns_fd`, by a thread that ends at once."""
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            _setns(ns_fd, CLONE_NEWNET)  # this thread only; it ends right after
            result.append(socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC))
        except BaseException as exc:  # handed to the caller
            result.append(exc)

    thread = threading.Thread(target=work, name="markco-netns-dial", daemon=True)
    thread.start()
    thread.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _make_socket(target: Target) -> socket.socket:
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    if target.ns_pid is None or target.ns_start_ticks is None:
        return socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    ns_fd = _open_netns(target.ns_pid, target.ns_start_ticks)
    try:
        return _socket_in_namespace(ns_fd, family)
    finally:
        os.close(ns_fd)


async def tcp_socket(host: str) -> tuple[socket.socket, str]:
    """A new, unconnected TCP socket for `host` (plain, or the netns form's host part, see
    the module doc) and the IP to connect it to. Raises OSError (ConnectionRefusedError when
    the namespace's process is gone)."""
    pid, ticks, inner = split_netns(host)
    target = Target(host=inner, port=1, ns_pid=pid, ns_start_ticks=ticks)
    if pid is None:
        return _make_socket(target), inner
    return await trio.to_thread.run_sync(_make_socket, target), inner


async def open_tcp_stream(host: str, port: int) -> trio.SocketStream:
    """A connected stream to `host:port` (`host` may carry the netns prefix). Hosts are IP
    addresses: nothing here resolves names."""
    sock, ip = await tcp_socket(host)
    tsock = trio.socket.from_stdlib_socket(sock)
    try:
        await tsock.connect((ip, port))
    except BaseException:
        tsock.close()
        raise
    stream = trio.SocketStream(tsock)
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    return stream


async def open_stream(address: str) -> trio.SocketStream:
    """A connected stream to `address` (any form of the module doc). OSError if nothing
    accepts; ValueError if the address is malformed."""
    target = parse(address)
    if target.path:
        return await trio.open_unix_socket(target.path)
    host = address.rpartition(":")[0]
    return await open_tcp_stream(host, target.port)


async def http_request(address: str, method: str, path: str, headers: list[tuple[str, str]],
                       body: bytes = b"", *, limit: int | None = 1 << 20) -> tuple[int, bytes]:
    """One small HTTP/1.1 request over a new connection to `address` (any form above), sent
    with exactly `headers` (a body needs its Content-Length there): (status, response body up
    to `limit` bytes, or all of it when `limit` is None). Reading stops once the body passes
    `limit`. OSError or h11.ProtocolError when the peer misbehaves."""
    conn = h11.Connection(h11.CLIENT)
    stream = await open_stream(address)
    async with stream:
        await stream.send_all(conn.send(h11.Request(method=method, target=path,
                                                    headers=headers)))
        if body:
            await stream.send_all(conn.send(h11.Data(data=body)))
        await stream.send_all(conn.send(h11.EndOfMessage()))
        status, answer = 0, bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                answer += event.data
                if limit is not None and len(answer) > limit:
                    break
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        return status, bytes(answer[:limit])


async def http_get(address: str, path: str, *, host_header: str = "localhost",
                   limit: int = 1 << 20) -> tuple[int, bytes]:
    """A tiny HTTP/1.1 GET of `path` at `address`: (status, body up to `limit` bytes). For
    readiness checks and tests; OSError or h11.ProtocolError when the peer misbehaves."""
    return await http_request(address, "GET", path, [
        ("Host", host_header), ("Connection", "close"), ("User-Agent", "markco")], limit=limit)
