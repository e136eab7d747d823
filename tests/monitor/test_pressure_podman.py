"""Memory pressure end to end on podman (issue 12's "done when"): `markco run` with the docker
plugin on a throw-away rootful `podman system service`, `[monitor] interval = 0.5`. A runtime
that allocates past 75 % of its 256 MiB limit gets a bigger limit, in place — the container's
cgroup says so, and its variables are all there; the pressure event, the decision, its outcome
and the limit change are in the event log, and the record holds the new limit."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from markco_docker.testing import (
    cleanup_fixture,
    local_images_fixture,
    podman_service_fixture,
)

from markco_trio.testing.network import free_port
from tests.compute.test_daemon_restart import DaemonProcess
from tests.lifecycle.test_checkpoint_e2e import Markco
from tests.lifecycle.test_checkpoint_e2e_podman import config_text

from .test_idle_e2e import api_events, events

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20

podman_engine_url = podman_service_fixture(containers_conf=ROOT / "config" / "containers.conf")
local_image_mounts = local_images_fixture()
podman_deployments = cleanup_fixture()

pytestmark = [pytest.mark.slow, pytest.mark.system]

PLAN = 256  # MiB; elasticity may raise it to 512 (max_memory_mib)
MONITOR = textwrap.dedent("""
    [monitor]
    interval = 0.5
    decision_interval = 0
    idle_timeout = 3600
    """)
HOARD = textwrap.dedent("""\
    class Hoard(list):
        def __repr__(self):
            return f"<{len(self)} chunks>"
    """)
LIMIT_NOW = textwrap.dedent("""\
    import os
    for path in ('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'):
        if os.path.exists(path):
            print(int(open(path).read()) >> 20)
            break
    """)


@pytest.fixture
async def markco(data_dir: Path, podman_engine_url: str, local_image_mounts: list[str],
                 podman_deployments: Callable[[str], str]) -> AsyncIterator[Markco]:
    port = free_port()
    deployment = podman_deployments("mon")
    config = data_dir.parent / f"{data_dir.name}-monitor-podman.toml"
    text = config_text(port, data_dir, deployment, podman_engine_url, local_image_mounts)
    text = text.replace("memory_mib = 1024", f"memory_mib = {PLAN}\nmax_memory_mib = 512")
    config.write_text(text + MONITOR)
    daemon = DaemonProcess(config, port,
                           data_dir.parent / f"{data_dir.name}-monitor-podman.log", deployment)
    await daemon.start()
    running = Markco(daemon, data_dir)
    await running.make_user()
    try:
        yield running
    finally:
        if daemon.process is not None and daemon.process.returncode is None:
            with trio.CancelScope(shield=True):
                await daemon.kill9()


async def runtime_limit_mib(markco: Markco) -> int:
    record = (await markco.records())["runtime"]
    return int(record["limits"]["memory_bytes"]) >> 20


async def test_on_podman_a_runtime_under_pressure_gets_more_memory_and_keeps_its_variables(
        markco: Markco) -> None:
    await markco.navigate_until_ready()
    assert await markco.execute(HOARD + "x = 42\nchunks = Hoard()\nprint(x)") == "42\n"
    assert (await markco.execute(LIMIT_NOW)).strip() == str(PLAN)
    # Allocate 16 MiB at a time (written, so it is resident) until the limit moves: past
    # 75 % the monitor raises `migrate` and the policy raises the limit before it is reached.
    # In a list whose repr is short: mrmd-python summarises variables after each execution
    # with their repr (cut only afterwards), four times the size of the bytes it shows.
    with trio.fail_after(120):
        for step in range(1, 40):
            out = await markco.execute("chunks.append(bytes([7]) * (16 << 20))\n"
                                       "print(len(chunks))")
            assert out == f"{step}\n", out
            await trio.sleep(1.5)  # three polls
            if await runtime_limit_mib(markco) > PLAN:
                break
    assert await runtime_limit_mib(markco) == 384  # × 1.5
    assert (await markco.execute(LIMIT_NOW)).strip() == "384"  # the container's own cgroup
    check = "print(x, len(chunks), all(c.count(7) == len(c) for c in chunks))"
    assert await markco.execute(check) == f"42 {step} True\n"
    kinds = [kind for kind, _ in events(markco)]
    assert {"migrate", "urgent-migrate", "critical"} & set(kinds)
    decisions = [(d["action"], d.get("outcome")) for _, d in events(markco, "elasticity.")]
    assert decisions[:2] == [("raise_limit", None), ("raise_limit", "done")]
    [(_, changed)] = events(markco, "runtime.limits_changed")
    assert changed["before"]["memory_bytes"] == PLAN * MiB
    assert changed["after"]["memory_bytes"] == 384 * MiB
    assert "runtime.crashed" not in kinds
    seen = await api_events(markco, "migrate", "urgent-migrate", "critical",
                            "elasticity.decision", "elasticity.outcome")
    types = [e["type"] for e in seen]
    assert types[0] in ("migrate", "urgent-migrate", "critical")
    assert types.index("elasticity.decision") < types.index("elasticity.outcome")
    outcome = next(e for e in seen if e["type"] == "elasticity.outcome")
    assert outcome["data"]["outcome"] == "done"
    assert outcome["data"]["after"]["memory_bytes"] == 384 * MiB
