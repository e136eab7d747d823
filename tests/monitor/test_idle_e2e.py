"""Idleness end to end (issue 12's "done when"): `markco run` with the REAL `criu` checkpointer
on the process backend, `[monitor] idle_timeout` of a few seconds, everything through the front
door. A quiet user is put to sleep by the monitor (the decision and its outcome in the event
log) and a navigation wakes them with `x` intact; a user whose cell is still running, with no
browser at all, is not put to sleep — until the cell ends."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from markco_trio.builtin.auth.tokens import hash_token, new_api_token
from markco_trio.storage.sqlite import SqliteStorage
from markco_trio.testing.network import free_port
from markco_trio.testing.system import missing_system
from markco_trio.testing.workload_python import WorkloadPython
from tests.compute.harness import config_text, plugin_modules
from tests.compute.test_daemon_restart import DaemonProcess
from tests.lifecycle.test_checkpoint_e2e import Markco

pytestmark = [pytest.mark.usefixtures("cleanup_workloads"), pytest.mark.slow,
              pytest.mark.system]

IDLE_TIMEOUT = 3.0
MONITOR = f"\n[monitor]\ninterval = 0.5\nidle_timeout = {IDLE_TIMEOUT}\n"


@pytest.fixture
async def markco(data_dir: Path, wpython: WorkloadPython,
                 deployment_ids: Callable[[str], str]) -> AsyncIterator[Markco]:
    if os.geteuid() != 0:
        missing_system("root", "the process backend's CRIU checkpoints need root")
    if shutil.which("criu", path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin") is None:
        missing_system("criu", "run scripts/setup-criu")
    port = free_port()
    deployment = deployment_ids("idle")
    config = data_dir.parent / f"{data_dir.name}-idle.toml"
    config.write_text(config_text(
        data_dir, deployment, wpython, listen=f"127.0.0.1:{port}",
        modules=plugin_modules("markco_trio.builtin.auth"), on_shutdown="stop",
        start_on_login=False, ready_timeout=60.0,
        extra='\n[auth]\nlogin_link = "never"\n\n[checkpoint]\nprovider = "criu"\n' + MONITOR))
    daemon = DaemonProcess(config, port, data_dir.parent / f"{data_dir.name}-idle.log",
                           deployment)
    await daemon.start()
    running = Markco(daemon, data_dir)
    await running.make_user()
    try:
        yield running
    finally:
        if daemon.process is not None and daemon.process.returncode is None:
            with trio.CancelScope(shield=True):
                await daemon.kill9()


async def api_events(markco: Markco, *types: str) -> list[dict[str, Any]]:
    """The user's events of `types` as `GET /api/v1/events` shows them (an `events:read`
    token of the user: a user sees their own)."""
    token = new_api_token()
    async with SqliteStorage(markco.data_dir / "markco.db") as storage:
        await storage.create_api_token(user_id=markco.user_id, name="events",
                                       token_hash=hash_token(token), scopes=("events:read",),
                                       expires_at=None, now=1.0)
    async with httpx.AsyncClient(base_url=markco.daemon.base, trust_env=False,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        answer = await http.get("/api/v1/events", params={"type": list(types), "limit": 100})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def events(markco: Markco, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
    """The user's events in the log (read-only), oldest first."""
    db = sqlite3.connect(f"file:{markco.data_dir / 'markco.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT type, data FROM events WHERE user_id = ? ORDER BY seq",
                          (markco.user_id,)).fetchall()
    finally:
        db.close()
    return [(kind, json.loads(data)) for kind, data in rows if kind.startswith(prefix)]


async def runtime_state(markco: Markco) -> str | None:
    return (await markco.records()).get("runtime", {}).get("state")


async def wait_for_state(markco: Markco, state: str, within: float) -> None:
    with trio.fail_after(within):
        while await runtime_state(markco) != state:  # noqa: ASYNC110 - another process
            await trio.sleep(0.25)


async def test_a_quiet_user_is_put_to_sleep_and_a_navigation_wakes_them_with_x(
        markco: Markco) -> None:
    await markco.navigate_until_ready()
    assert await markco.execute("x = 42\nprint('set')") == "set\n"
    async with markco.client() as http:  # what the monitor sees, as the user may ask
        with trio.fail_after(10):
            while not (seen := (await http.get("/api/v1/monitor")).json()["runtimes"]) or \
                    seen[0]["memory_limit"] is None:  # noqa: ASYNC110 - another process
                await trio.sleep(0.25)
    assert seen[0]["user_id"] == markco.user_id and seen[0]["memory_used"] > 0
    await wait_for_state(markco, "sleeping", within=IDLE_TIMEOUT + 30)
    assert markco.runtime_pids() == []
    kinds = [k for k, _ in events(markco)]
    assert "idle-sleep" in kinds
    decisions = events(markco, "elasticity.")
    assert [(d["action"], d.get("outcome")) for _, d in decisions] == \
        [("sleep", None), ("sleep", "done")]
    seen = await api_events(markco, "idle-sleep", "elasticity.decision", "elasticity.outcome")
    assert [e["type"] for e in seen] == ["idle-sleep", "elasticity.decision",
                                         "elasticity.outcome"]
    pages = await markco.navigate_until_ready()
    assert pages and "waking" in pages[0]
    assert await markco.execute("print(x)") == "42\n"
    with trio.fail_after(10):
        while "idle-wake" not in [k for k, _ in events(markco)]:  # noqa: ASYNC110
            await trio.sleep(0.25)


async def test_a_running_cell_without_a_browser_is_not_idle(markco: Markco) -> None:
    await markco.navigate_until_ready()
    release = markco.data_dir / "users" / markco.user_id / "release-the-cell"
    cell = (f"import os, time\nwhile not os.path.exists({str(release)!r}):\n"
            f"    time.sleep(0.2)\nprint('released')")
    output: list[str] = []

    async def run_cell() -> None:
        output.append(await markco.execute(cell))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_cell)
        # Three idle timeouts with nothing but the cell in flight (no navigation, no
        # request, no input, no CPU to speak of): still running, never an idle-sleep.
        await trio.sleep(3 * IDLE_TIMEOUT)
        assert await runtime_state(markco) == "running"
        assert "idle-sleep" not in [k for k, _ in events(markco)]
        release.write_text("go")
    assert output == ["released\n"]
    # The monitor was watching all along: once the cell ended, the user is idle.
    await wait_for_state(markco, "sleeping", within=IDLE_TIMEOUT + 30)
