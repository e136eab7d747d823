"""Serving the API app with hypercorn on a unix socket in a 0700 directory.

Never loopback TCP: any local process (user code included, on the process backend) could reach
that and forge the headers the front door sets. The socket's directory is 0700 and owned by the
daemon, so only the daemon's user reaches it.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart_trio import QuartTrio


def prepare_socket_dir(path: Path) -> None:
    """Create the socket's directory 0700 (or tighten it) and remove a stale socket file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if path.exists() or path.is_symlink():
        path.unlink()


async def serve_api(app: QuartTrio, socket_path: Path, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on `socket_path` until cancelled."""
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
