"""The hostile page against the docker backend (on podman) in `egress` mode, where each user's
editor IS published on the host's loopback: a page on another loopback origin, and one using a
name that resolves to 127.0.0.1, attack the published editor (fetch, WebSocket) with code that
would create a marker in the user's files; the editor's Host/Origin checks refuse it all, while
the same execute from a non-browser client runs (editor → real runtime front → the runtime's
container). The runtime itself is published nowhere."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from markco_trio.builtin.compute.front import RuntimeFront
from markco_trio.dial import parse
from markco_trio.records import WorkloadRole
from markco_trio.testing.backend_kit import Workloads, fresh_user
from markco_trio.testing.chromium import chromium
from markco_trio.testing.system import missing_system

from .test_hostile_page import MARKER, serve_page
from .test_hostile_page_editor import PAGE

markco_docker = pytest.importorskip("markco_docker")
from markco_docker import DockerBackend, DockerOptions  # noqa: E402
from markco_docker.testing import (  # noqa: E402
    cleanup_fixture,
    kit_spec_factory,
    local_images_fixture,
    podman_service_fixture,
)

ROOT = Path(__file__).resolve().parents[2]

podman_engine_url = podman_service_fixture(containers_conf=ROOT / "config" / "containers.conf")
local_image_mounts = local_images_fixture()
deployment_ids = cleanup_fixture()


async def answering(url: str, within: float = 30.0) -> None:
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        with trio.fail_after(within):
            while True:
                try:
                    if (await client.get(url, headers={"Host": "localhost"})).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.1)


async def test_a_hostile_page_cannot_drive_a_published_podman_editor(
        podman_engine_url: str, local_image_mounts: list[str], deployment_ids: Any,
        tmp_path: Path, nursery: trio.Nursery) -> None:
    if shutil.which("chromium") is None:
        missing_system("chromium", "apt-get install -y chromium")
    options = DockerOptions(engine_url=podman_engine_url, mounts=local_image_mounts,
                            network="egress")  # type: ignore[arg-type]
    short = Path("/nonexistent")
    async with DockerBackend(options, deployment_id=deployment_ids("page"),
                             state_dir=tmp_path / "state") as backend:
        workloads = Workloads(backend)
        try:
            specs = kit_spec_factory(backend.deployment_id, tmp_path)
            user = fresh_user()
            runtime = await workloads.run(specs(user, WorkloadRole.RUNTIME))
            assert runtime.address is not None
            target = parse(runtime.address)

            async def locate(*, wake: bool) -> tuple[str, int]:
                return target.host, target.port

            short = Path(tempfile.mkdtemp(prefix="mkf-"))  # a unix socket path is short
            socket_path = short / "f" / "runtime.sock"
            await backend.prepare_user(user)
            front = RuntimeFront(user, socket_path, locate, owner=backend.workload_owner(user))
            await nursery.start(front.serve)
            plain = specs(user, WorkloadRole.EDITOR)
            editor = await workloads.run(dataclasses.replace(
                plain, mounts=((str(socket_path.parent), "/run/markco", False),),
                env={**plain.env, "MARKCO_RUNTIME_SOCKET": "/run/markco/runtime.sock",
                     "MARKCO_PUBLIC_URL": "https://markco.example.org"}))
            assert editor.address is not None and editor.address.startswith("127.0.0.1:")
            port = parse(editor.address).port
            await answering(f"http://127.0.0.1:{port}/health")
            user_dir = Path(plain.user_dir)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                         trust_env=False) as http:
                direct = await http.post("/api/execute",
                                         json={"code": "open('direct', 'w').write('ok')"})
            assert direct.status_code == 200 and "done" in direct.text
            assert (user_dir / "direct").exists(), direct.text

            html = PAGE.replace("MARKER", json.dumps(MARKER)).replace("PORT", str(port))
            async with trio.open_nursery() as pages:
                page_port = await pages.start(serve_page, html)
                async with chromium(tmp_path / "profile", extra_flags=(
                        "--host-resolver-rules=MAP rebound.test 127.0.0.1",)) as browser:
                    await browser.call("Page.enable")
                    await browser.call("Page.navigate",
                                       {"url": f"http://127.0.0.2:{page_port}/"})
                    await browser.wait_for("window.done === true", within=90)
                    results = await browser.evaluate("JSON.stringify(window.results)")
                pages.cancel_scope.cancel()
            assert not (user_dir / MARKER).exists(), results
            assert not (user_dir / "planted.md").exists(), results
        finally:
            with trio.CancelScope(shield=True):
                await workloads.remove_all()
            nursery.cancel_scope.cancel()
            shutil.rmtree(short, ignore_errors=True)
