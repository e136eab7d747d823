"""Deploying, as docs/deploy.md and the README tell an operator to:

- `markco workloads purge` removes this deployment's workloads (podman containers, labelled with
  its deployment id) and checkpoint archives for good — never another deployment's; it lists
  and refuses without `--yes`, and refuses while a daemon holds the instance lock;
- the systemd units: the daemon's has `KillMode=process` (a restart keeps the workloads) and
  runs what the docs say;
- the default workload uid is no host account's (not 1000);
- the fake GitHub runs on a fixed port for demos (`python -m markco_trio.testing.fake_github`);
- the README links only to files inside the repository, and they exist.
"""

from __future__ import annotations

import configparser
import json
import os
import pwd
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from markco_docker import DockerOptions, localimage
from markco_docker.testing import (
    kit_spec_factory,
    local_images_fixture,
    podman_service_fixture,
    purge_deployment,
)

from markco_trio.cli import context_for, open_storage
from markco_trio.records import WorkloadRole
from markco_trio.testing.network import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

podman_engine_url = podman_service_fixture(containers_conf=ROOT / "config" / "containers.conf")
local_image_mounts = local_images_fixture()

SLEEPER = "import time\nwhile True: time.sleep(1)"


def markco(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "markco_trio", *args], capture_output=True,
                          text=True, timeout=120, check=False)


async def deployment_config(tmp_path: Path, engine_url: str, mounts: list[str],
                            deployment: str) -> Path:
    config = tmp_path / f"{deployment}.toml"
    config.write_text(textwrap.dedent(f"""\
        [server]
        listen = "127.0.0.1:{free_port()}"
        data_dir = "data-{deployment}"
        deployment_id = "{deployment}"

        [compute]
        backend = "docker"

        [compute.docker]
        engine_url = "{engine_url}"
        mounts = {json.dumps(mounts)}
        """))
    ctx = context_for(config)
    ctx.config.data_dir.mkdir()
    async with open_storage(ctx.config, ctx) as storage:
        await storage.upgrade()
    return config


async def start_sleepers(config: Path, users: int) -> list[str]:
    """Start `users` containers through the deployment's own backend; their names."""
    ctx = context_for(config)
    choice = ctx.config.roles["compute"]
    specs = kit_spec_factory(ctx.config.server.deployment_id, config.parent / "users")
    names = []
    async with choice.make("docker", ctx) as backend:
        for _ in range(users):
            spec = specs(uuid.uuid4().hex, WorkloadRole.RUNTIME, script=SLEEPER)
            info = await backend.start((await backend.create(spec)).handle)
            names.append(info.name)
    return names


async def listed(config: Path) -> list[str]:
    ctx = context_for(config)
    async with ctx.config.roles["compute"].make("docker", ctx) as backend:
        return sorted(info.name for info in await backend.list())


@pytest.fixture
async def two_deployments(tmp_path: Path, podman_engine_url: str,
                          local_image_mounts: list[str]) -> AsyncIterator[list[Path]]:
    ids = [f"purge-{os.urandom(3).hex()}", f"other-{os.urandom(3).hex()}"]
    try:
        yield [await deployment_config(tmp_path, podman_engine_url, local_image_mounts, d)
               for d in ids]
    finally:
        for deployment in ids:
            await trio.to_thread.run_sync(purge_deployment, podman_engine_url, deployment)


@pytest.mark.system
@pytest.mark.slow
async def test_purge_removes_this_deployments_workloads_and_archives_only(
        two_deployments: list[Path]) -> None:
    mine, other = two_deployments
    started = await start_sleepers(mine, 2)
    kept = await start_sleepers(other, 1)
    archive = mine.parent / f"data-{mine.stem}" / "snapshots" / "u1" / "sleep-1.img"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"checkpoint")

    done = await trio.to_thread.run_sync(markco, "workloads", "purge", "--yes", "--config",
                                         str(mine))
    assert done.returncode == 0, done.stderr
    assert "removed 2 workloads and 1 archives" in done.stdout
    assert await listed(mine) == []
    assert not archive.exists()
    assert await listed(other) == kept
    assert sorted(started) != kept


@pytest.mark.system
async def test_purge_without_yes_lists_and_removes_nothing(
        two_deployments: list[Path]) -> None:
    mine, _ = two_deployments
    started = await start_sleepers(mine, 1)
    done = await trio.to_thread.run_sync(markco, "workloads", "purge", "--config", str(mine))
    assert done.returncode == 1
    assert f"workload {started[0]}" in done.stdout and "--yes" in done.stderr
    assert await listed(mine) == started


@pytest.mark.system
async def test_purge_is_refused_while_a_daemon_holds_the_lock(
        two_deployments: list[Path]) -> None:
    mine, _ = two_deployments
    started = await start_sleepers(mine, 1)
    ctx = context_for(mine)
    async with open_storage(ctx.config, ctx) as storage, storage.instance_lock():
        done = await trio.to_thread.run_sync(markco, "workloads", "purge", "--yes",
                                             "--config", str(mine))
    assert done.returncode == 1 and "a daemon is running" in done.stderr
    assert await listed(mine) == started


def test_the_daemons_unit_keeps_workloads_across_a_restart() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "markco.service")
    service = unit["Service"]
    assert service["KillMode"] == "process"
    assert service["ExecStart"].split()[1:] == ["run", "--config",
                                                "/opt/markco/config/production.toml"]
    assert service["ExecStart"].split()[0] == "/opt/markco/.venv/bin/markco"
    assert service["EnvironmentFile"].lstrip("-") == "/etc/markco/markco.env"
    assert "markco-podman.service" in unit["Unit"]["Requires"]


def test_the_podman_unit_serves_the_socket_production_toml_names() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(DEPLOY / "markco-podman.service")
    service = unit["Service"]
    production = (ROOT / "config" / "production.toml").read_text()
    socket_url = re.search(r'^engine_url = "([^"]+)"', production, re.MULTILINE)
    assert socket_url is not None and socket_url.group(1) in service["ExecStart"]
    assert "CONTAINERS_CONF=/opt/markco/config/containers.conf" in service["Environment"]
    # CRIU from scripts/setup-criu (/usr/local/sbin) ahead of Debian's broken one.
    assert service["Environment"].index("/usr/local/sbin") < \
        service["Environment"].index("/usr/sbin")


def test_the_default_workload_uid_is_no_host_accounts() -> None:
    uid, gid = DockerOptions().uid_gid
    assert uid != 0 and not 1000 <= uid < 60000  # Debian's range for people's accounts
    assert (uid, gid) == (localimage.WORKLOAD_UID, localimage.WORKLOAD_UID)
    assert f'user = "{uid}:{gid}"' in (ROOT / "config" / "production.toml").read_text()
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)  # not an account on this machine either


def test_the_fake_github_runs_on_a_fixed_port(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "markco_trio.testing.fake_github",
                                "--port", str(port), "--user", "ada"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith(f"fake GitHub at http://127.0.0.1:{port};"), \
            first + process.stderr.read() if process.poll() is not None else first
        consent = httpx.get(f"http://127.0.0.1:{port}/login/oauth/authorize", params={
            "client_id": "markco-demo-client", "redirect_uri": "http://127.0.0.1:1/cb",
            "state": "s", "code_challenge": "c" * 43, "code_challenge_method": "S256"})
        assert consent.status_code == 302 and "code=" in consent.headers["location"]
    finally:
        process.terminate()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_the_fake_github_says_when_its_port_is_taken() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "markco_trio.testing.fake_github",
                               "--port", str(port)], capture_output=True, text=True,
                              timeout=30, check=False)
    assert done.returncode != 0 and time.monotonic() - started < 30
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_the_readme_links_only_inside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets
    for target in targets:
        assert "://" not in target and not target.startswith(("/", "..")), target
        path = target.split("#", 1)[0]
        assert (ROOT / path).exists(), f"README links to a missing {path}"
