"""A markco plugin for the proxy benchmark only: every user's editor "is" the benchmark's
upstream (`MARKCO_BENCH_UPSTREAM=host:port`), always ready.

It is a compute control provider named `bench` (`[compute_control] provider = "bench"`), so that
`bench/proxy.py` measures the data plane — the real daemon, the real auth plugin and a real
session cookie — and not the start of processes. Loaded with `[plugins] modules =
["markco_bench_compute"]` and `bench/` on PYTHONPATH. (Not `markco_trio.testing.compute_kit`'s
`MemoryCompute`: that module imports pytest, which would count in the daemon's RSS.)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import trio

from markco_trio import MarkcoError, PluginContext, ProviderSpec, hookimpl


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

    def request(self, user_id: str, kind: str, *, reason: str) -> None:
        pass

    async def ensure_started(self, user_id: str, *, reason: str) -> Any:
        return self.state_nowait(user_id)

    async def stop(self, user_id: str, *, reason: str) -> Any:
        return self.state_nowait(user_id)

    def last_activity_nowait(self, user_id: str) -> float | None:
        return None

    def host_names(self) -> list[str]:
        return []

    def request_move(self, user_id: str, to_host: str, *, reason: str) -> None:
        raise MarkcoError("the benchmark's compute moves nothing")

    async def __aenter__(self) -> StaticCompute:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    @contextmanager
    def subscribe_progress(self, user_id: str) -> Iterator[trio.MemoryReceiveChannel[Any]]:
        send, receive = trio.open_memory_channel[Any](1)
        with send, receive:
            yield receive


def _make(options: None, ctx: PluginContext) -> StaticCompute:
    host, _, port = os.environ["MARKCO_BENCH_UPSTREAM"].rpartition(":")
    return StaticCompute((host, int(port)))


@hookimpl
def markco_compute_controls() -> list[ProviderSpec]:
    """The `bench` compute control: every editor is the benchmark's upstream."""
    return [ProviderSpec("bench", _make, description="the proxy benchmark's upstream")]
