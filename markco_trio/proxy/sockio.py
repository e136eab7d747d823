"""Moving bytes on non-blocking sockets with trio's low-level readiness waits.

`trio.socket` and `SocketStream` make every call a checkpoint, even when the kernel already has the
data or buffer room: two trips through the scheduler per call (DESIGN §3.1 puts one at ~4–5 µs).
These helpers try the system call first and wait only when the kernel says EAGAIN, or, where the
caller knows the bytes cannot be there yet (an upstream that was just sent a request), wait
first and save the failing call. They are checkpoints only when they wait, so a loop that may
never wait (a pipelining client, a fast bulk transfer) must `trio.lowlevel.checkpoint()` now and
then itself. Errors are the kernel's (`ConnectionResetError`, `BrokenPipeError`, ...).
"""

from __future__ import annotations

import socket

from trio.lowlevel import wait_readable, wait_writable

__all__ = ["recv", "recv_into", "recv_waiting", "send_all"]

Buffer = bytes | bytearray | memoryview


async def recv(sock: socket.socket, size: int) -> bytes:
    """Up to `size` bytes; b"" at end of stream."""
    while True:
        try:
            return sock.recv(size)
        except BlockingIOError:
            await wait_readable(sock)


async def recv_waiting(sock: socket.socket, size: int) -> bytes:
    """Like `recv`, but waits for readability first (the caller expects nothing buffered yet)."""
    while True:
        await wait_readable(sock)
        try:
            return sock.recv(size)
        except BlockingIOError:
            pass


async def recv_into(sock: socket.socket, buffer: bytearray, size: int) -> int:
    """Read up to `size` bytes into the start of `buffer`; 0 at end of stream."""
    while True:
        try:
            return sock.recv_into(buffer, size)
        except BlockingIOError:
            await wait_readable(sock)


async def send_all(sock: socket.socket, data: Buffer) -> None:
    """Send every byte of `data`, waiting for buffer room as needed."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return
    view = memoryview(data)[sent:]
    while view:
        await wait_writable(sock)
        try:
            sent = sock.send(view)
        except BlockingIOError:
            continue
        view = view[sent:]
