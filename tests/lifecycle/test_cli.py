"""`markco runtimes sleep|wake USER` and `markco snapshots ...` against a running daemon (real
workloads, the checkpointer test double), as an operator types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.compute.test_compute_api import Running

from .test_api import running, started  # noqa: F401 - the daemon fixture

pytestmark = pytest.mark.usefixtures("cleanup_workloads")
ROOT = Path(__file__).resolve().parents[2]


async def markco(daemon: Running, *args: str) -> subprocess.CompletedProcess[bytes]:
    data_dir = daemon.daemon.config.data_dir
    config = data_dir.parent / f"{data_dir.name}-daemon.toml"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await trio.run_process(
        [sys.executable, "-m", "markco_trio", *args, "--config", str(config)],
        capture_stdout=True, capture_stderr=True, check=False, env=env, cwd=str(ROOT))


async def test_runtimes_sleep_puts_the_users_runtime_to_sleep(running: Running) -> None:  # noqa: F811
    uid, _ = await started(running)
    done = await markco(running, "runtimes", "sleep", "ada")
    assert done.returncode == 0, done.stderr.decode()
    assert running.compute.state_nowait(uid).summary == "sleeping"


async def test_runtimes_wake_wakes_it(running: Running) -> None:  # noqa: F811
    uid, _ = await started(running)
    await running.compute.sleep(uid, reason="test")
    done = await markco(running, "runtimes", "wake", "ada")
    assert done.returncode == 0, done.stderr.decode()
    assert running.compute.state_nowait(uid).summary == "running"


async def test_snapshots_create_then_list(running: Running) -> None:  # noqa: F811
    await started(running)
    made = await markco(running, "snapshots", "create", "ada", "first")
    assert made.returncode == 0, made.stderr.decode()
    listed = await markco(running, "snapshots", "list", "ada", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)] == ["first"]


async def test_a_refused_operation_says_why_and_exits_1(running: Running) -> None:  # noqa: F811
    await started(running)
    done = await markco(running, "snapshots", "restore", "ada", "nothing")
    assert done.returncode == 1 and b"no snapshot 'nothing'" in done.stderr
