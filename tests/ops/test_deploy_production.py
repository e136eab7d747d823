"""A production-style deployment, as docs/deploy.md sets it up, end to end: `config/production.toml`
itself (only its machine-specific values replaced: ports, paths, the test's podman socket and
mounts, the fake GitHub's URLs, localhost names), PostgreSQL (a throw-away cluster), podman
containers, CRIU, per-user editor origins, behind the real Caddyfile, logged in through a fake
GitHub:

- a GitHub user listed in `[auth] admins` logs in through Caddy, lands on the dashboard as an
  admin, opens the editor on its own origin (a podman container) and talks to it over a
  WebSocket;
- `markco doctor` passes on that configuration;
- the documented teardown (`markco workloads purge --yes` once the daemon is stopped) leaves
  nothing of the deployment on the engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import trio
from dataplane.conftest import NAVIGATE, XHR
from markco_docker.testing import (
    local_images_fixture,
    podman_service_fixture,
    purge_deployment,
)

from markco_trio.config import load_config
from markco_trio.daemon import Daemon
from markco_trio.testing.edge import Edge, running_edge
from markco_trio.testing.fake_github import FakeGitHub, running_fake_github
from markco_trio.testing.network import free_port
from markco_trio.testing.postgres import postgres_database_fixture, postgres_server_fixture

pytestmark = [pytest.mark.system, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "config" / "production.toml"

podman_engine_url = podman_service_fixture(containers_conf=ROOT / "config" / "containers.conf")
local_image_mounts = local_images_fixture()
postgres_server = postgres_server_fixture()
postgres_dsn = postgres_database_fixture()


def replace(text: str, pattern: str, value: str) -> str:
    """`pattern` (a regex of one line or block of production.toml) replaced by `value`; fails
    the test when production.toml no longer has it (this test must then be updated)."""
    new, count = re.subn(pattern, value.replace("\\", "\\\\"), text, count=1,
                         flags=re.MULTILINE | re.DOTALL)
    assert count == 1, f"config/production.toml no longer matches {pattern!r}"
    return new


def production_config(tmp_path: Path, *, data_dir: Path, port: int, edge: Edge,
                      engine_url: str, mounts: list[str], github: FakeGitHub,
                      deployment: str) -> Path:
    text = PRODUCTION.read_text()
    text = replace(text, r'^listen = "127\.0\.0\.1:3000"$', f'listen = "127.0.0.1:{port}"')
    text = replace(text, r'^public_url = "https://notebooks\.example\.org"$',
                   f'public_url = "{edge.url}"')
    text = replace(text, r'^data_dir = "/var/lib/markco"$', f'data_dir = "{data_dir}"')
    text = replace(text, r'^deployment_id = "prod"$', f'deployment_id = "{deployment}"')
    text = replace(text, r'^editor_domain = "u\.example\.org"$',
                   f'editor_domain = "{edge.editor_domain}"')
    text = replace(text, r'^engine_url = "unix:///run/podman/podman\.sock"$',
                   f'engine_url = "{engine_url}"')
    text = replace(text, r'^mounts = \[\n.*?^\]$', f"mounts = {json.dumps(mounts)}")
    options = github.provider_options()
    text = replace(text, r'^client_id = "Iv1\.0000000000000000"$',
                   "\n".join(f'{key} = "{value}"' for key, value in options.items()))
    text = replace(text, r"^admins = \[\]", 'admins = ["github:octocat"]')
    text = replace(text, r'^listen = "127\.0\.0\.1:9464"$', 'listen = "127.0.0.1:0"')  # metrics
    path = tmp_path / "production.toml"
    path.write_text(text)
    return path


def markco_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "markco_trio", *args], capture_output=True,
                          text=True, timeout=180, check=False, env={**os.environ, **env})


async def test_a_production_deployment_from_the_docs_works_end_to_end(
        tmp_path: Path, podman_engine_url: str, local_image_mounts: list[str],
        postgres_dsn: str) -> None:
    deployment = f"prod-{uuid.uuid4().hex[:8]}"
    port = free_port()
    # Short: unix sockets live under it (108 bytes at most), pytest's tmp_path is too deep.
    data_dir = Path(tempfile.mkdtemp(prefix="mk-", dir="/tmp"))
    try:
        async with running_fake_github(client_id="Iv1.test") as github:
            github.add_user("octocat", email="octocat@example.com", name="The Octocat")
            github.consent_as("octocat")
            with running_edge(f"127.0.0.1:{port}", tmp_path / "caddy") as edge:
                config = production_config(tmp_path, data_dir=data_dir, port=port, edge=edge,
                                           engine_url=podman_engine_url,
                                           mounts=local_image_mounts, github=github,
                                           deployment=deployment)
                secrets = {"MARKCO_DATABASE_URL": postgres_dsn,
                           "MARKCO_GITHUB_CLIENT_SECRET": github.client_secret}
                loaded, pm = load_config(config, environ={**os.environ, **secrets})
                async with trio.open_nursery() as nursery:
                    daemon = Daemon(loaded, pm)
                    with trio.fail_after(60):
                        await nursery.start(daemon.run)
                    await use_it_as_a_person_would(edge)
                    doctor = await trio.to_thread.run_sync(
                        lambda: markco_cli("doctor", "--config", str(config), "--json",
                                           env={**secrets, "SSL_CERT_FILE": str(edge.ca_file)}))
                    nursery.cancel_scope.cancel()
        report = json.loads(doctor.stdout)
        assert report["ok"], doctor.stdout + doctor.stderr
        assert {c["name"] for c in report["checks"] if c["status"] == "pass"} >= {
            "config", "storage", "engine", "images", "criu", "firewall", "edge"}

        # The documented teardown, once the daemon is stopped.
        purged = await trio.to_thread.run_sync(
            lambda: markco_cli("workloads", "purge", "--yes", "--config", str(config),
                               env=secrets))
        assert purged.returncode == 0, purged.stderr
        assert "removed 2 workloads" in purged.stdout  # the editor and the runtime
    finally:
        leftovers = await trio.to_thread.run_sync(purge_deployment, podman_engine_url,
                                                  deployment)
        shutil.rmtree(data_dir, ignore_errors=True)
    assert leftovers == [], "workloads purge left these behind"


async def use_it_as_a_person_would(edge: Edge) -> None:
    async with edge.client() as client:
        to_github = await client.get(f"{edge.url}/login/github", headers=NAVIGATE)
        assert to_github.status_code == 302, to_github.text
        consent = await client.get(to_github.headers["location"])
        assert consent.status_code == 302
        back = await client.get(consent.headers["location"], headers=NAVIGATE)
        assert back.status_code in (302, 303), back.text
        dashboard = await client.get(f"{edge.url}/dashboard", headers=NAVIGATE)
        assert dashboard.status_code == 200 and "octocat" in dashboard.text
        me_answer = await client.get(f"{edge.url}/api/v1/me")
        assert me_answer.status_code == 200, me_answer.text
        me = me_answer.json()["user"]
        assert me["is_admin"] is True  # [auth] admins = ["github:octocat"]
        user_id = me["id"]

        origin = edge.editor_origin(user_id)
        answer = await client.get(f"{edge.url}/u/{user_id}/", headers=NAVIGATE)
        for _ in range(6):
            if answer.status_code not in (302, 303):
                break
            answer = await client.get(answer.url.join(answer.headers["location"]),
                                      headers=NAVIGATE)
        assert str(answer.url).startswith(origin) and answer.status_code in (200, 503)
        with trio.fail_after(120):
            while True:
                page = await client.get(f"{origin}/u/{user_id}/", headers=NAVIGATE)
                if page.status_code == 200:
                    break
                assert page.status_code == 503, page.text
                await trio.sleep(0.5)
        cookies = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar
                            if c.domain.endswith(f"{user_id}.u.localhost"))
        async with edge.websocket(origin.replace("https://", "wss://") + f"/u/{user_id}/ws",
                                  [("Cookie", cookies), ("Origin", origin)]) as ws:
            with trio.fail_after(10):
                hello = json.loads(await ws.get_message())
        assert hello["type"] == "hello" and hello["owner"] == user_id
        # The runtime answers through the editor: the container pair works.
        output = b""
        with trio.fail_after(60):
            async with client.stream("POST", f"{origin}/u/{user_id}/api/execute",
                                     json={"code": "print(6 * 7)"},
                                     headers={**XHR, "Origin": origin}) as ran:
                assert ran.status_code == 200
                async for chunk in ran.aiter_bytes():
                    output += chunk
        assert b"42" in output, output
