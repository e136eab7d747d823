"""`markco doctor` (markco_trio/doctor.py): on this machine as CI sets it up — podman with the
local images, CRIU, markco's firewall, a migrated database, the daemon behind the real Caddyfile
— every check passes; and when one part is broken on purpose, the report names that part, says
what to do, and the exit status is 1. Nothing is mocked: a missing CRIU is a binary path that
does not exist, a stopped engine is a socket path nothing listens on, an absent firewall is a
network namespace of the test's own (the host's real table, which other tests rely on, is never
touched), an unreachable edge is a free port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from markco_docker.testing import (
    local_images_fixture,
    podman_service_fixture,
    purge_deployment,
)

from markco_trio.config import load_config
from markco_trio.daemon import Daemon
from markco_trio.doctor import Result, diagnose
from markco_trio.testing.edge import running_edge
from markco_trio.testing.netns import namespace
from markco_trio.testing.network import free_port
from markco_trio.testing.system import missing_system

ROOT = Path(__file__).resolve().parents[2]

podman_engine_url = podman_service_fixture(containers_conf=ROOT / "config" / "containers.conf")
local_image_mounts = local_images_fixture()


def write_config(path: Path, *, compute: str = "", checkpoint: str = "",
                 public_url: str | None = None, listen_port: int | None = None,
                 extra: str = "") -> Path:
    port = listen_port or free_port()
    path.write_text(textwrap.dedent(f"""\
        [server]
        listen = "127.0.0.1:{port}"
        public_url = "{public_url or f'http://127.0.0.1:{port}'}"
        data_dir = "data"
        deployment_id = "doc-{uuid.uuid4().hex[:8]}"
        trusted_proxies = ["127.0.0.1"]
        drain_seconds = 0.5

        [auth]
        login_link = "never"
        """) + textwrap.dedent(compute) + textwrap.dedent(checkpoint) + textwrap.dedent(extra))
    return path


def doctor_cli(config: Path, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "markco_trio", "doctor", "--config",
                           str(config), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=config.parent, check=False)


def migrate(config: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "markco_trio", "db", "upgrade", "--config",
                           str(config)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def by_name(results: list[Result]) -> dict[str, Result]:
    return {r.name: r for r in results}


@pytest.fixture
def docker_deployments(podman_engine_url: str) -> Iterator[list[str]]:
    """Deployment ids whose containers are removed after the test."""
    ids: list[str] = []
    yield ids
    for deployment in ids:
        purge_deployment(podman_engine_url, deployment)


@pytest.mark.system
@pytest.mark.slow
async def test_every_check_passes_on_a_machine_set_up_as_ci_does(
        nursery: trio.Nursery, tmp_path: Path, podman_engine_url: str,
        local_image_mounts: list[str], docker_deployments: list[str]) -> None:
    port = free_port()
    with running_edge(f"127.0.0.1:{port}", tmp_path / "caddy") as edge:
        config = write_config(tmp_path / "markco.toml", listen_port=port, public_url=edge.url,
                              compute=f"""
            [compute]
            backend = "docker"

            [compute.docker]
            engine_url = "{podman_engine_url}"
            mounts = {json.dumps(local_image_mounts)}
            """, checkpoint="""
            [checkpoint]
            provider = "criu"
            """)
        loaded, pm = load_config(config)
        docker_deployments.append(loaded.server.deployment_id)
        daemon = Daemon(loaded, pm)
        with trio.fail_after(60):
            await nursery.start(partial(daemon.run, handle_signals=False))
        done = await trio.to_thread.run_sync(
            lambda: doctor_cli(config, "--json", env={"SSL_CERT_FILE": str(edge.ca_file)}))
    report = json.loads(done.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert done.returncode == 0 and report["ok"], done.stdout + done.stderr
    # disk may warn on a small CI disk; every other check must pass outright.
    assert statuses.pop("disk") in ("pass", "warn")
    assert set(statuses.values()) == {"pass"}, statuses
    assert set(statuses) == {"config", "storage", "engine", "images", "criu", "firewall",
                             "isolation", "edge"}


async def test_a_missing_criu_is_named(tmp_path: Path) -> None:
    config = write_config(tmp_path / "markco.toml", checkpoint="""
        [checkpoint]
        provider = "criu"

        [checkpoint.criu]
        criu = "/nonexistent/criu"
        """)
    migrate(config)
    results = by_name(await diagnose(config, skip=["edge"]))
    assert results["criu"].status == "fail"
    assert "locate" in results["criu"].detail and "/nonexistent/criu" in results["criu"].detail
    assert "setup-criu" in results["criu"].fix
    assert results["storage"].status == "pass" and results["config"].status == "pass"


async def test_an_engine_that_does_not_answer_is_named(tmp_path: Path) -> None:
    dead = tmp_path / "nothing-listens.sock"
    config = write_config(tmp_path / "markco.toml", compute=f"""
        [compute]
        backend = "docker"

        [compute.docker]
        engine_url = "unix://{dead}"
        """)
    migrate(config)
    results = by_name(await diagnose(config, skip=["edge", "firewall"]))
    assert results["engine"].status == "fail"
    assert str(dead) in results["engine"].detail and "does not answer" in results["engine"].detail
    assert "engine_url" in results["engine"].fix
    assert results["images"].status == "skip" and "engine" in results["images"].detail


@pytest.mark.system
async def test_an_absent_firewall_is_named(tmp_path: Path) -> None:
    """Checked in a fresh network namespace of the test's own, which has no markco table."""
    if os.geteuid() != 0:
        missing_system("root (for a network namespace)", "run the tests as root, as CI does")
    config = write_config(tmp_path / "markco.toml", compute="""
        [compute]
        backend = "docker"

        [compute.docker]
        network = "egress"
        """)
    migrate(config)
    with namespace("markco-doctor") as netns:
        results = by_name(await diagnose(config, skip=["edge", "engine"],
                                         firewall_netns=netns))
    assert results["firewall"].status == "fail"
    assert "inet markco is not installed" in results["firewall"].detail
    assert "setup-podman --firewall" in results["firewall"].fix


async def test_an_unmigrated_database_is_named_with_the_command_that_migrates_it(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "markco.toml")
    (tmp_path / "data").mkdir()
    results = by_name(await diagnose(config, skip=["edge", "criu"]))
    assert results["storage"].status == "fail"
    assert f"markco db upgrade --config {config}" in results["storage"].fix


async def test_a_public_url_nobody_answers_is_named(tmp_path: Path) -> None:
    config = write_config(tmp_path / "markco.toml",
                          public_url=f"http://127.0.0.1:{free_port()}")
    migrate(config)
    results = by_name(await diagnose(config, skip=["criu"]))
    assert results["edge"].status == "fail" and "does not answer" in results["edge"].detail


def test_a_bad_config_fails_first_and_the_rest_is_skipped(tmp_path: Path) -> None:
    config = tmp_path / "markco.toml"
    config.write_text('[server]\nlisten = "nowhere"\n')
    done = doctor_cli(config, "--json")
    assert done.returncode == 1
    checks: list[dict[str, Any]] = json.loads(done.stdout)["checks"]
    assert checks[0]["name"] == "config" and checks[0]["status"] == "fail"
    assert "listen" in checks[0]["detail"]
    assert {c["status"] for c in checks[1:]} == {"skip"}


def test_a_missing_secret_is_a_config_failure_naming_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "markco.toml", extra="""
        [storage]
        provider = "postgres"

        [storage.postgres]
        dsn_env = "MARKCO_DOCTOR_TEST_UNSET_DSN"
        """)
    env = {k: v for k, v in os.environ.items() if k != "MARKCO_DOCTOR_TEST_UNSET_DSN"}
    done = subprocess.run([sys.executable, "-m", "markco_trio", "doctor", "--config",
                           str(config)], capture_output=True, text=True, timeout=60, env=env,
                          check=False)
    assert done.returncode == 1
    assert "[FAIL] config" in done.stdout and "MARKCO_DOCTOR_TEST_UNSET_DSN" in done.stdout
    assert done.stdout.rstrip().endswith("failed: config")


def test_the_text_report_says_what_to_do_and_an_unknown_skip_is_refused(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "markco.toml",
                          public_url=f"http://127.0.0.1:{free_port()}")
    done = doctor_cli(config, "--skip", "criu", "--skip", "storage")
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    edge = next(i for i, line in enumerate(lines) if line.startswith("[FAIL] edge"))
    assert lines[edge + 1].strip().startswith("-> start the daemon and Caddy")
    assert "[skip] criu" in done.stdout
    refused = doctor_cli(config, "--skip", "everything")
    assert refused.returncode == 2 and "no check named everything" in refused.stderr


def test_the_process_backend_not_as_root_is_a_warning_naming_the_limit() -> None:
    """Run as an unprivileged account (`nobody`), where the process backend cannot isolate."""
    if os.geteuid() != 0:
        missing_system("root (to run the check as another account)",
                       "run the tests as root, as CI does")
    readable = Path(tempfile.mkdtemp(prefix="mk-doctor-", dir="/tmp"))  # pytest's is 0700
    os.chmod(readable, 0o755)
    config = write_config(readable / "markco.toml", compute="""
        [compute]
        backend = "process"
        """)
    os.chmod(config, 0o644)
    script = ("import json, trio; from pathlib import Path; from markco_trio.doctor import "
              f"diagnose; r = trio.run(lambda: diagnose(Path({str(config)!r}), skip=["
              "'storage', 'criu', 'disk', 'edge'])); print(json.dumps({x.name: [x.status, "
              "x.detail] for x in r}))")
    try:
        done = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup",
                               "--clear-groups", sys.executable, "-c", script],
                              capture_output=True, text=True, timeout=60, check=False, cwd="/")
    finally:
        shutil.rmtree(readable, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    isolation = json.loads(done.stdout)["isolation"]
    assert isolation[0] == "warn" and "one person only" in isolation[1], done.stdout
