"""A markco plugin for the proxy benchmark only: every user's editor "is" the benchmark's
upstream (`MARKCO_BENCH_UPSTREAM=host:port`), always ready.

It stands in for compute (`ctx.extras["compute"]`) so that `bench/proxy.py` measures the data
plane — the real daemon, the real auth plugin and a real session cookie — and not the start of
processes. Loaded with `[plugins] modules = ["markco_bench_compute"]` and `bench/` on PYTHONPATH.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import trio

from markco_trio.context import PluginContext
from markco_trio.hookspecs import hookimpl


class StaticCompute:
    """The compute interface the front door uses, with one always-ready editor address."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address

    def editor_address_nowait(self, user_id: str) -> tuple[str, int] | None:
        return self.address

    def state_nowait(self, user_id: str) -> Any:
        return SimpleNamespace(phase="ready", message="", operation=None, ready=True)

    def request_start(self, user_id: str, *, reason: str) -> None:
        pass

    def record_activity(self, user_id: str, kind: str) -> None:
        pass

    @contextmanager
    def subscribe_progress(self, user_id: str) -> Iterator[trio.MemoryReceiveChannel[Any]]:
        send, receive = trio.open_memory_channel[Any](1)
        with send, receive:
            yield receive


@hookimpl
def markco_web_routes(ctx: PluginContext) -> list[Any]:
    """Publish the static compute (this hook runs before the front door is built)."""
    host, _, port = os.environ["MARKCO_BENCH_UPSTREAM"].rpartition(":")
    ctx.extras["compute"] = StaticCompute((host, int(port)))
    return []
