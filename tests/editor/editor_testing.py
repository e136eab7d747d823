"""Test support for the built-in editor: the runtime front stand-in, free ports, the contract's
environment.

`RuntimeFront` is TEST-ONLY: a tiny unix-socket -> TCP forwarder playing the part of the runtime
front the daemon's compute plugin serves (docs/editor-contract.md). It forwards bytes and counts
connections, so a test can show that the editor reached the runtime through it.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

__all__ = [
    "EDITOR_COMMAND",
    "VENV_BIN",
    "EditorProcess",
    "RawRequest",
    "RuntimeFront",
    "StartEditor",
    "contract_env",
    "free_port",
]

VENV_BIN = Path(sys.executable).parent
EDITOR_COMMAND = str(VENV_BIN / "markco-editor")


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RuntimeFront:
    """TEST-ONLY stand-in for the daemon's runtime front: a unix socket forwarding to TCP."""

    socket_path: Path
    target_port: int
    connections: int = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on `socket_path` (0600, as the daemon's is) and forward every connection."""
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started()
        await trio.serve_listeners(self._forward, [listener])

    async def _forward(self, client: trio.SocketStream) -> None:
        self.connections += 1
        async with client:
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
            except OSError:
                return  # runtime gone: the client sees the connection close
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
                nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)


async def _pump(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        async for chunk in src:
            await dst.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()  # one side finished: HTTP/1.1 has nothing more to say in the other


@dataclass
class EditorProcess:
    """A running `markco-editor` subprocess."""

    process: trio.Process
    port: int
    base_url: str

    def ws_url(self) -> str:
        """Where its WebSocket is."""
        return f"ws://127.0.0.1:{self.port}/ws"


def contract_env(user_dir: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment markco gives an editor (docs/editor-contract.md), built explicitly."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CLOUD_MODE": "1",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "BASE_PATH": "/u/alice/",
        "MARKCO_USER_DIR": str(user_dir),
        "CLOUD_USER_ID": "alice",
        "CLOUD_USER_NAME": "Alice Liddell",
        "CLOUD_USER_USERNAME": "alice",
        "CLOUD_USER_EMAIL": "alice@example.org",
        "CLOUD_USER_AVATAR": "",
        "CLOUD_USER_PLAN": "free",
        **extra,
    }


StartEditor = Callable[..., Awaitable[EditorProcess]]
"""`await start_editor(**extra_env)`: the `start_editor` fixture's callable."""

RawRequest = Callable[[int, str], Awaitable[tuple[int, bytes]]]
"""`await raw_request(port, head)` -> (status, body): the `raw_request` fixture's callable."""
