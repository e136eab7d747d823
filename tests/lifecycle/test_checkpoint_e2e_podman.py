"""The end-to-end sleep/wake and snapshot tests of `test_checkpoint_e2e.py` on podman (the
docker plugin on a throw-away rootful `podman system service`, the local images), with the
real `criu` checkpointer (podman's checkpoint/restore API): through the front door, `x = 42`
and a 200 MB object survive a sleep and a navigation's wake, and a snapshot's restore; a fork,
a second container next to the running original, has them while the original is untouched."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import trio
from markco_docker import localimage
from markco_docker.testing import (
    cleanup_fixture,
    local_images_fixture,
    podman_service_fixture,
)

from markco_trio.testing.network import free_port
from tests.compute.harness import plugin_modules
from tests.compute.test_daemon_restart import DaemonProcess

from .test_checkpoint_e2e import BIG, CHECK, INTACT, Markco

ROOT = Path(__file__).resolve().parents[2]

podman_engine_url = podman_service_fixture(containers_conf=ROOT / "config" / "containers.conf")
local_image_mounts = local_images_fixture()
podman_deployments = cleanup_fixture()


def config_text(port: int, data_dir: Path, deployment: str, engine_url: str,
                mounts: list[str]) -> str:
    return textwrap.dedent(f"""\
        [server]
        listen = "127.0.0.1:{port}"
        public_url = "http://127.0.0.1:{port}"
        data_dir = "{data_dir}"
        deployment_id = "{deployment}"
        drain_seconds = 1

        [plugins]
        modules = {json.dumps(plugin_modules("markco_trio.builtin.auth"))}

        [auth]
        login_link = "never"

        [compute]
        backend = "docker"

        [compute.docker]
        engine_url = "{engine_url}"
        runtime_image = "{localimage.RUNTIME_TAG}"
        editor_image = "{localimage.EDITOR_TAG}"
        mounts = {json.dumps(mounts)}

        [checkpoint]
        provider = "criu"

        [workloads]
        start_on_login = false
        ready_timeout = 60.0
        stop_timeout = 2.0
        on_shutdown = "keep"

        [workloads.plans.free]
        memory_mib = 1024
        cpus = 1.0
        """)


async def running_runtimes(engine_url: str, deployment: str, user_id: str, *,
                           any_status: bool = False) -> list[str]:
    """Names of the user's running runtime containers (`any_status`: stopped ones too), as
    podman lists them."""
    filters: dict[str, list[str]] = {"label": [f"markco.deployment={deployment}",
                                               f"markco.user={user_id}", "markco.role=runtime"]}
    if not any_status:
        filters["status"] = ["running"]
    transport = httpx.AsyncHTTPTransport(uds=engine_url.removeprefix("unix://"))
    async with httpx.AsyncClient(transport=transport, base_url="http://podman",
                                 trust_env=False) as engine:
        answer = await engine.get("/containers/json", params={
            "filters": json.dumps(filters), "all": str(any_status).lower()})
    return sorted(c["Names"][0] for c in answer.json())


@pytest.fixture
async def markco(data_dir: Path, podman_engine_url: str, local_image_mounts: list[str],
                 podman_deployments: Callable[[str], str]) -> AsyncIterator[Markco]:
    port = free_port()
    deployment = podman_deployments("e2p")
    config = data_dir.parent / f"{data_dir.name}-e2e-podman.toml"
    config.write_text(config_text(port, data_dir, deployment, podman_engine_url,
                                  local_image_mounts))
    daemon = DaemonProcess(config, port, data_dir.parent / f"{data_dir.name}-e2e-podman.log",
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


async def test_on_podman_a_navigation_wakes_a_sleeping_runtime_with_its_memory(
        markco: Markco, podman_engine_url: str) -> None:
    await markco.navigate_until_ready()
    assert await markco.execute(BIG + "print('built')") == "built\n"
    slept = await markco.api("POST", "/runtimes/sleep")
    assert slept.status_code == 200, slept.text
    assert await running_runtimes(podman_engine_url, markco.daemon.deployment,
                                  markco.user_id) == []
    pages = await markco.navigate_until_ready()
    assert pages and "waking" in pages[0]
    assert (await markco.execute(CHECK)).endswith(INTACT)


async def test_on_podman_restoring_a_snapshot_brings_x_back(markco: Markco) -> None:
    await markco.navigate_until_ready()
    assert await markco.execute(BIG + "print('built')") == "built\n"
    assert (await markco.api("POST", "/snapshots", json={"name": "s1"})).status_code == 201
    assert await markco.execute("x = 7\nprint(x)") == "7\n"
    restored = await markco.api("POST", "/snapshots/s1/restore")
    assert restored.status_code == 200, restored.text
    assert (await markco.execute(CHECK)).endswith(INTACT)


async def test_on_podman_a_fork_has_x_and_the_original_is_untouched(
        markco: Markco, podman_engine_url: str) -> None:
    await markco.navigate_until_ready()
    assert await markco.execute(BIG + "print('built')") == "built\n"
    [original] = await running_runtimes(podman_engine_url, markco.daemon.deployment,
                                        markco.user_id)
    made = await markco.api("POST", "/forks", json={"name": "try"})
    assert made.status_code == 201, made.text
    both = await running_runtimes(podman_engine_url, markco.daemon.deployment, markco.user_id)
    assert both == sorted([original, f"{original}-fork-try"]), both
    ran = await markco.api("POST", "/forks/try/execute", json={"code": CHECK + "x = 7"})
    assert ran.status_code == 200 and ran.json()["stdout"].endswith(INTACT), ran.text
    ran = await markco.api("POST", "/forks/try/execute", json={"code": "print(x)"})
    assert ran.status_code == 200 and ran.json()["stdout"] == "7\n", ran.text
    assert (await markco.execute(CHECK)).endswith(INTACT)
    removed = await markco.api("DELETE", "/forks/try")
    assert removed.status_code == 204, removed.text
    assert await running_runtimes(podman_engine_url, markco.daemon.deployment, markco.user_id,
                                  any_status=True) == [original]
    assert (await markco.execute(CHECK)).endswith(INTACT)
