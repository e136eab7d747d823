"""Network helpers for tests: free local ports."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (the usual small race applies)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
