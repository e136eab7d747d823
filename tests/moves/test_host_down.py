"""A host whose engine stops answering, with a real daemon and real engines: the markco daemon
over two podman hosts of this machine (`hosts.py`). The daemon reaches host `b`'s engine
through a relay socket run by the test; stopping the relay (its socket removed, every
connection through it closed) is the engine's socket going away (the engine itself, and the
user's container on it, keep running — as on a machine cut off the network); starting it
again is the engine answering again.

- The user on `b` reads `unavailable` (not failed) in the API while `b` does not answer; their
  records are not marked failed and nothing is restarted elsewhere.
- Nothing is placed on `b` meanwhile: a new user starts on `a` (it used to fail: looking for
  the new user's workload by name on every host, the down one made it "unavailable").
- When `b` answers again the user is back, `x` intact.
"""

from __future__ import annotations

import socket
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from markco_docker.testing import purge_deployment

from markco_trio.builtin.auth import pages
from markco_trio.builtin.compute.status import UserComputeState, WorkloadStatus
from markco_trio.records import RuntimeState, User, WorkloadRole
from markco_trio.testing.network import free_port
from tests.compute.polling import eventually_async
from tests.compute.test_daemon_restart import DaemonProcess
from tests.lifecycle.test_checkpoint_e2e import Markco

from .test_moves import (  # noqa: F401 - fixtures, found by pytest by name
    Deployment,
    config_text,
    host_b,
    local_image_mounts,
    podman_engine_url,
    x_of,
)

pytestmark = [pytest.mark.system, pytest.mark.slow]


class Relay:
    """A unix socket at `path` forwarding every connection to `target`, until stopped."""

    def __init__(self, path: Path, target: Path) -> None:
        self.path, self.target = path, target
        self.scope: trio.CancelScope | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self._serve)

    def stop(self) -> None:
        assert self.scope is not None
        self.scope.cancel()
        self.path.unlink(missing_ok=True)

    async def _serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                     ) -> None:
        with trio.CancelScope() as self.scope:
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await sock.bind(str(self.path))
            sock.listen(64)
            await trio.serve_listeners(self._forward, [trio.SocketListener(sock)],
                                       handler_nursery=None, task_status=task_status)

    async def _forward(self, client: trio.SocketStream) -> None:
        async with client, await trio.open_unix_socket(str(self.target)) as engine, \
                trio.open_nursery() as nursery:

            async def pump(a: trio.SocketStream, b: trio.SocketStream) -> None:
                async for data in a:
                    await b.send_all(data)
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump, client, engine)
            nursery.start_soon(pump, engine, client)


@pytest.fixture
async def deployment(data_dir: Path, podman_engine_url: str,  # noqa: F811
                     host_b: str, local_image_mounts: list[str],  # noqa: F811
                     deployment_ids: Callable[[str], str], nursery: trio.Nursery
                     ) -> AsyncIterator[tuple[Deployment, Relay]]:
    """The daemon, and the relay it reaches `b`'s engine through."""
    port = free_port()
    name = deployment_ids("hd")
    relay = Relay(data_dir.parent / f"{data_dir.name}-b-engine.sock",
                  Path(host_b.removeprefix("unix://")))
    await relay.start(nursery)
    text = config_text(port, data_dir, name, podman_engine_url, f"unix://{relay.path}",
                       local_image_mounts)
    # `b` has the most room (users go there first); engines are checked every 5 s.
    text = text.replace('host_name = "a"\n', 'host_name = "a"\nmemory_budget_mb = 1024\n')
    text = text.replace('name = "b"\n', 'name = "b"\nmemory_budget_mb = 4096\n')
    text = text.replace("stop_timeout = 2.0\n", "stop_timeout = 2.0\nwatch_interval = 0.5\n")
    assert text.count("memory_budget_mb") == 2 and "watch_interval" in text
    config = data_dir.parent / f"{data_dir.name}-host-down.toml"
    config.write_text(text + textwrap.dedent("""
        [monitor]
        interval = 5
        idle_timeout = 3600
        """))
    daemon = DaemonProcess(config, port, data_dir.parent / f"{data_dir.name}-hd.log", name)
    await daemon.start()
    running = Deployment(daemon, data_dir, {"a": podman_engine_url, "b": host_b})
    running.admin = (await running.user("root", admin=True)).headers
    try:
        yield running, relay
    finally:
        with trio.CancelScope(shield=True):
            if daemon.process is not None and daemon.process.returncode is None:
                await daemon.kill9()
            for url in running.hosts.values():
                await trio.to_thread.run_sync(purge_deployment, url, name)
            relay.stop()


async def state(user: Markco) -> dict[str, Any]:
    answer = await user.api("GET", "/runtimes")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()["state"]
    return found


async def test_a_host_whose_engine_goes_away_leaves_its_users_unavailable_then_back(
        deployment: tuple[Deployment, Relay], nursery: trio.Nursery) -> None:
    d, relay = deployment
    ada = await d.user("ada")
    await ada.navigate_until_ready()
    assert await ada.execute("x = 42\nprint('set')") == "set\n"
    assert (await d.record(ada))["host"] == "b"

    relay.stop()  # b's engine socket goes away

    async def unavailable() -> bool:
        return (await state(ada))["summary"] == "unavailable"

    await eventually_async(unavailable, within=30, what="ada's state reading unavailable")
    seen = await state(ada)
    assert seen["phase"] == "unavailable" and "unavailable" in seen["message"]
    records = await ada.records()
    assert records["runtime"]["state"] == "running" and records["runtime"]["host"] == "b"
    hosts = (await d.call("GET", "/hosts")).json()["items"]
    assert {h["name"]: h["state"] for h in hosts}["b"] == "down", hosts

    grace = await d.user("grace")  # nothing is placed on b while it is down
    await grace.navigate_until_ready()
    assert (await d.record(grace))["host"] == "a"
    assert await d.runtimes_on("b", grace, running=False) == []

    await relay.start(nursery)  # b answers again

    async def back() -> bool:
        return (await state(ada))["summary"] == "running"

    await eventually_async(back, within=30, what="ada's state back to running")
    assert await x_of(ada) == "42\n"  # the same runtime: nothing was restarted
    assert (await d.record(ada))["host"] == "b"


def test_the_dashboard_shows_an_unavailable_workspace_as_unavailable_not_failed() -> None:
    """What the dashboard renders of the state the test above reads from the API."""
    running = RuntimeState.RUNNING
    state = UserComputeState(
        user_id="u1", runtime=WorkloadStatus(WorkloadRole.RUNTIME, running, ready=True),
        editor=WorkloadStatus(WorkloadRole.EDITOR, running, ready=True), ready=True,
        phase="unavailable", message="unavailable: host b does not answer")
    assert state.summary == "unavailable"
    user = User(id="u1", username="ada", email=None, name="Ada", avatar_url=None,
                plan="free", is_admin=False, disabled=False, created_at=1.0)
    html = pages._workspace_section(user, state, None)
    assert "<strong>unavailable</strong>" in html and "failed" not in html
