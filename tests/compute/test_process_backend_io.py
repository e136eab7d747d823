"""The process backend keeps blocking work off trio's thread (issue 14, item 4): state files,
/proc scans and port reservation run in worker threads, and killed trees are waited for
through pidfds. Real processes, real /proc; nothing is mocked."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from markco_trio.builtin.process_backend import ProcessBackend
from markco_trio.builtin.process_backend import backend as backend_module
from markco_trio.builtin.process_backend.ports import ephemeral_range
from markco_trio.builtin.process_backend.state import WorkloadState
from markco_trio.errors import BackendError, NotFound
from markco_trio.records import WorkloadRole
from markco_trio.roles import ContainerSpec

SLEEPER = "import time\nwhile True:\n    time.sleep(1)\n"


def a_free_port() -> int:
    """A port outside the ephemeral range that nothing listens on now."""
    low, high = ephemeral_range()
    for port in range(20000, 32000) if low > 32000 else range(high + 1, 65000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port to test with")


def state_named(name: str) -> WorkloadState:
    return WorkloadState(name=name, user_id="u", role="runtime", labels={}, command=["x"],
                         env={}, user_dir="/nonexistent", memory_bytes=1 << 30, cpus=1.0,
                         stop_signal="SIGTERM", spec_port=None, created_at=0.0)


async def test_two_starts_at_once_never_get_the_same_port(
        make_process_backend: Callable[..., Any]) -> None:
    """Ports are picked in worker threads now: a pick not yet saved still reserves its port."""
    port = a_free_port()
    backend: ProcessBackend = await make_process_backend(port_range=f"{port}-{port}")
    first, second = state_named("w1"), state_named("w2")
    assert await trio.to_thread.run_sync(backend._pick_port, first) == port
    with pytest.raises(BackendError, match="no free port"):
        await trio.to_thread.run_sync(backend._pick_port, second)
    # The same workload keeps its port on a restart.
    first.port = port
    assert await trio.to_thread.run_sync(backend._pick_port, first) == port


async def test_state_files_and_proc_are_read_off_the_trio_thread(
        make_process_backend: Callable[..., Any], deployment_ids: Callable[[str], str],
        process_specs: Callable[[str], Callable[..., ContainerSpec]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = deployment_ids("io")
    backend: ProcessBackend = await make_process_backend(deployment)
    spec = process_specs(deployment)(uuid.uuid4().hex, WorkloadRole.RUNTIME, script=SLEEPER)
    trio_thread = threading.get_ident()
    readers: list[int] = []
    real_load = backend_module.load

    def load(directory: Path) -> WorkloadState | None:
        readers.append(threading.get_ident())
        return real_load(directory)

    monkeypatch.setattr(backend_module, "load", load)
    await backend.create(spec)
    try:
        await backend.start(spec.name)
        await backend.inspect(spec.name)
        await backend.list()
        await backend.stats(spec.name)
        await backend.logs(spec.name)
        await backend.stop(spec.name, timeout=0)
    finally:
        with trio.CancelScope(shield=True):
            try:
                await backend.remove(spec.name)
            except NotFound:
                pass
    assert readers and trio_thread not in readers

