"""Serving the API app with hypercorn on a unix socket in a 0700 directory.

Never loopback TCP: any local process (user code included, on the process backend) could reach
that and forge the headers the front door sets. The socket's directory is 0700 and owned by the
daemon, so only the daemon's user reaches it.

hypercorn 0.18 has a race that takes down its whole `serve()` — every connection of the API —
when a peer closes a connection in the middle of a request body: h11 reports the truncated body,
hypercorn starts sending a 400 while its connection-closing path is inside `send_eof()`, and
trio's send-conflict detector raises `BusyResourceError`, which nothing catches. The front door
closes its API connection exactly so when a client drops an upload halfway (it cannot finish
the body: the API would take a truncated upload for a whole one). `guard_hypercorn_close_race()`
makes that send do what a send to a closed peer already does: treat the connection as closed.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed
from hypercorn.trio import serve
from hypercorn.trio.tcp_server import TCPServer
from quart_trio import QuartTrio

_GUARDED = "_markco_close_race_guarded"


def guard_hypercorn_close_race() -> None:
    """Patch hypercorn's trio `TCPServer.protocol_send` (once per process) so a send that
    collides with the connection's own closing `send_eof()` closes the connection instead of
    crashing the server. Harmless once hypercorn fixes the race itself."""
    if getattr(TCPServer, _GUARDED, False):
        return
    original: Callable[[Any, Any], Awaitable[None]] = TCPServer.protocol_send

    async def protocol_send(self: Any, event: Any) -> None:
        try:
            await original(self, event)
        except trio.BusyResourceError:
            # Only `_close()` sends besides this method (under its lock): the connection is
            # being closed, so the peer will not get this data anyway.
            await self.protocol.handle(Closed())

    setattr(TCPServer, "protocol_send", protocol_send)  # noqa: B010 - a method, patched
    setattr(TCPServer, _GUARDED, True)


def prepare_socket_dir(path: Path) -> None:
    """Create the socket's directory 0700 (or tighten it) and remove a stale socket file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if path.exists() or path.is_symlink():
        path.unlink()


async def serve_api(app: QuartTrio, socket_path: Path, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on `socket_path` until cancelled."""
    guard_hypercorn_close_race()
    prepare_socket_dir(socket_path)
    config = HypercornConfig()
    config.bind = [f"unix:{socket_path}"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 5
    config.graceful_timeout = 5
    config.umask = 0o077

    async with trio.open_nursery() as nursery:
        await nursery.start(serve, app, config)
        os.chmod(socket_path, 0o600)
        task_status.started()
