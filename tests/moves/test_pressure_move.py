"""Memory pressure moves a runtime off a full host, end to end: the markco daemon over two podman
hosts of this machine (`hosts.py`), the real `criu` checkpointer, the monitor polling every
0.5 s. Host `a`'s memory budget holds exactly the user's 256 MiB plan, so the limit cannot be
raised in place: the policy moves the runtime to `b` with the bigger limit (384 MiB, within
the plan's 512 MiB ceiling), and every variable — `x` and the memory that caused the
pressure — is there after the move, reached through the proxy."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import trio
from markco_docker import cgroups
from markco_docker.testing import purge_deployment

from markco_trio.testing.network import free_port
from tests.compute.polling import eventually_async
from tests.compute.test_daemon_restart import DaemonProcess
from tests.lifecycle.test_checkpoint_e2e import Markco
from tests.monitor.test_idle_e2e import api_events, events
from tests.monitor.test_pressure_podman import HOARD

from .test_moves import (  # noqa: F401 - fixtures, found by pytest by name
    HISTORY_NOTICE,
    Deployment,
    config_text,
    host_b,
    local_image_mounts,
    podman_engine_url,
    x_of,
)

pytestmark = [pytest.mark.system, pytest.mark.slow]

MiB = 1 << 20
PLAN = 256


def pressure_config(text: str) -> str:
    """Host `a` with room for one 256 MiB runtime, `b` with plenty; the monitor on."""
    text = text.replace('host_name = "a"\n', 'host_name = "a"\nmemory_budget_mb = 256\n')
    text = text.replace('name = "b"\n', 'name = "b"\nmemory_budget_mb = 2048\n')
    text = text.replace("memory_mib = 512\ncpus = 1.0",
                        f"memory_mib = {PLAN}\nmax_memory_mib = 512\ncpus = 1.0")
    assert text.count("memory_budget_mb") == 2 and "max_memory_mib" in text
    return text + textwrap.dedent("""
        [monitor]
        interval = 0.5
        decision_interval = 0
        idle_timeout = 3600
        """)


@pytest.fixture
async def deployment(data_dir: Path, podman_engine_url: str,  # noqa: F811
                     host_b: str, local_image_mounts: list[str],  # noqa: F811
                     deployment_ids: Callable[[str], str]) -> AsyncIterator[Deployment]:
    port = free_port()
    name = deployment_ids("pm")
    config = data_dir.parent / f"{data_dir.name}-pressure-move.toml"
    config.write_text(pressure_config(config_text(port, data_dir, name, podman_engine_url,
                                                  host_b, local_image_mounts)))
    daemon = DaemonProcess(config, port, data_dir.parent / f"{data_dir.name}-pm.log", name)
    await daemon.start()
    running = Deployment(daemon, data_dir, {"a": podman_engine_url, "b": host_b})
    running.admin = (await running.user("root", admin=True)).headers
    try:
        yield running
    finally:
        with trio.CancelScope(shield=True):
            if daemon.process is not None and daemon.process.returncode is None:
                await daemon.kill9()
            for url in running.hosts.values():
                await trio.to_thread.run_sync(purge_deployment, url, name)


async def test_a_runtime_on_a_full_host_is_moved_with_a_bigger_limit_and_its_variables(
        deployment: Deployment) -> None:
    d = deployment
    ada = await d.user("ada")
    await ada.navigate_until_ready()
    assert await ada.execute("x = 42\nprint('set')") == "set\n"
    if (await d.record(ada))["host"] != "a":  # placed where the most room is: put it on `a`
        moved = await d.move(ada, "a")
        assert moved.status_code == 200, moved.text
    [source] = await d.runtimes_on("a", ada, running=True)
    assert await run(ada, HOARD + "chunks = Hoard()\nprint(0)") == "0\n"
    # 16 MiB at a time (written, so resident) until the policy decides to move: past 75 % of
    # its 256 MiB the monitor raises `migrate`, `a` has no room to raise it, so it moves.
    # Nothing is executed while the move runs (see `settled`).
    with trio.fail_after(150):
        for step in range(1, 40):
            out = await run(ada, "chunks.append(bytes([7]) * (16 << 20))\n"
                                 "print(len(chunks))")
            assert out == f"{step}\n", out
            await trio.sleep(1.5)
            if await settled(ada):
                break
    record = await d.record(ada)
    assert record["host"] == "b" and record["state"] == "running", log_tail(d)
    assert record["limits"]["memory_bytes"] == 384 * MiB
    assert record["limits"]["raised_from"] == PLAN * MiB
    assert await x_of(ada) == "42\n"
    check = f"print(len(chunks) == {step}, all(c.count(7) == len(c) for c in chunks))"
    assert await run(ada, check) == "True True\n"
    assert await d.runtimes_on("a", ada, running=False) == []  # the source is gone
    [target] = await d.runtimes_on("b", ada, running=True)
    assert target != source
    assert await engine_memory_limit(d, "b", target) == 384 * MiB  # what the engine enforces
    decisions = [(e["action"], e.get("outcome")) for _, e in events(ada, "elasticity.")]
    assert ("move", None) in decisions and ("move", "done") in decisions, decisions
    assert ("raise_limit", "done") not in decisions
    moved = [e for _, e in events(ada, "elasticity.") if e["action"] == "move"]
    assert moved[0]["to"] == "b" and moved[0]["to_bytes"] == 384 * MiB
    assert "runtime.crashed" not in [kind for kind, _ in events(ada)]
    seen = [e["type"] for e in await api_events(ada, "elasticity.decision",
                                                "elasticity.outcome", "runtime.moved")]
    assert "runtime.moved" in seen and "elasticity.outcome" in seen
    last = (await d.migrations())[0]
    assert last["status"] == "done" and last["to_host"] == "b", last


async def settled(user: Markco) -> bool:
    """Whether the policy decided a move (then: wait for its outcome)."""
    if not any(e["action"] == "move" for _, e in events(user, "elasticity.decision")):
        return False

    async def outcome() -> bool:
        return any(e["action"] == "move" for _, e in events(user, "elasticity.outcome"))

    await eventually_async(outcome, what="the move's outcome", within=60)
    return True


async def run(user: Markco, code: str) -> str:
    """`code` through the proxy; IPython's read-only-history notice after a move dropped
    (see `x_of`)."""
    out = await user.execute(code)
    return "".join(line for line in out.splitlines(keepends=True)
                   if not line.startswith(HISTORY_NOTICE))


async def engine_memory_limit(d: Deployment, host: str, container: str) -> int:
    """The limit the container's memory cgroup enforces, read on this machine (podman 4.3's
    inspect and stats keep the checkpoint's original limit after a live update)."""
    transport = httpx.AsyncHTTPTransport(uds=d.hosts[host].removeprefix("unix://"))
    async with httpx.AsyncClient(transport=transport, base_url="http://podman",
                                 trust_env=False) as engine:
        answer = await engine.get(f"/containers/{container}/json")
    pid = int(answer.json()["State"]["Pid"])
    memory = cgroups.container_memory(pid, container)
    assert memory is not None, f"no memory cgroup found for {container} (pid {pid})"
    return int(memory.limit)


def log_tail(d: Deployment) -> str:
    return d.daemon.log.read_text(errors="replace")[-4000:]
