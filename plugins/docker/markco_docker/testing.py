"""A throw-away podman API service for tests, and what the backend's tests share.

`running_podman_service()` starts `podman system service` on a unix socket in a temporary
directory, with the project's containers.conf, waits until `/_ping` answers, yields the engine
URL and stops the service at the end. For pytest, in a conftest.py:

    from markco_docker.testing import podman_service_fixture, local_images_fixture

    podman_engine_url = podman_service_fixture(containers_conf=ROOT / "config/containers.conf")
    local_image_mounts = local_images_fixture()   # builds the images if needed; their mounts

Without podman (or without root, which the bridge networks need) the tests that use them are
skipped, saying how to install it — or fail when MARKCO_REQUIRE_SYSTEM=1 (CI).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from markco_trio.records import WorkloadRole
from markco_trio.roles import (
    LABEL_DEPLOYMENT,
    LABEL_ROLE,
    LABEL_USER,
    ContainerSpec,
    workload_name,
)
from markco_trio.testing.system import missing_system

from . import localimage

INSTALL_HINT = ("run `scripts/setup-podman` as root (it apt-installs podman, runc and their "
                "helpers and builds the local images)")
START_TIMEOUT = 20.0


class PodmanUnavailable(RuntimeError):
    """Podman cannot be run here: the message says what is missing and how to fix it."""


def _ping(socket_path: Path) -> bool:
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket_path)),
                          base_url="http://engine", timeout=2.0) as client:
            return client.get("/_ping").status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def running_podman_service(*, containers_conf: Path | None = None,
                           tmp_dir: Path | None = None) -> Iterator[str]:
    """Run `podman system service` until the block ends; yield its `unix://` engine URL.

    Rootful: markco's containers sit on bridge networks the host routes to, which rootless
    podman (slirp4netns) does not give. Raises `PodmanUnavailable` when that cannot be.
    """
    podman = shutil.which("podman")
    if podman is None:
        raise PodmanUnavailable(f"podman is not installed: {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise PodmanUnavailable(f"the docker backend's tests need rootful podman (bridge "
                                f"networks routable from the host): run them as root; "
                                f"{INSTALL_HINT}")
    base = Path(tempfile.mkdtemp(prefix="markco-podman-", dir=tmp_dir))
    socket_path = base / "podman.sock"
    env = dict(os.environ)
    if containers_conf is not None:
        env["CONTAINERS_CONF"] = str(containers_conf)
    log = (base / "service.log").open("wb")
    # cwd: conmon (podman 4) creates a file named `oom` in its working directory, inherited
    # from the service, when a container is OOM-killed; ours would be pytest's (the repo root).
    process = subprocess.Popen([podman, "system", "service", "--time=0", f"unix://{socket_path}"],
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               env=env, start_new_session=True, cwd=base)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (socket_path.exists() and _ping(socket_path)):
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                output = (base / "service.log").read_text(errors="replace")[-2000:]
                raise PodmanUnavailable(f"`podman system service` did not answer on "
                                        f"{socket_path} within {START_TIMEOUT:g} s "
                                        f"(exit status {process.poll()}):\n{output}")
            time.sleep(0.05)
        yield f"unix://{socket_path}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


def purge_deployment(engine_url: str, deployment_id: str) -> list[str]:
    """Remove every container and network labelled with `deployment_id` (test teardown, so
    that a failed test leaves nothing behind); return what was removed."""
    socket_path = engine_url.removeprefix("unix://")
    filters = json.dumps({"label": [f"{LABEL_DEPLOYMENT}={deployment_id}"]})
    removed: list[str] = []
    with httpx.Client(transport=httpx.HTTPTransport(uds=socket_path),
                      base_url="http://engine/v1.41", timeout=60.0) as client:
        for item in client.get("/containers/json",
                               params={"all": "true", "filters": filters}).json():
            client.delete(f"/containers/{item['Id']}", params={"force": "true", "v": "true"})
            removed.append("container " + "/".join(item.get("Names") or [item["Id"]]))
        for network in client.get("/networks", params={"filters": filters}).json():
            client.delete(f"/networks/{network['Name']}")
            removed.append(f"network {network['Name']}")
    return removed


def podman_service_fixture(*, containers_conf: Path | None = None,
                           scope: Any = "session") -> Any:
    """A pytest fixture yielding the engine URL of a throw-away podman service (skipped, or
    failed under MARKCO_REQUIRE_SYSTEM=1, when podman cannot run here)."""

    @pytest.fixture(scope=scope)
    def podman_engine_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        try:
            with running_podman_service(containers_conf=containers_conf) as url:
                yield url
        except PodmanUnavailable as exc:
            missing_system("podman", str(exc))

    return podman_engine_url


def local_images_fixture(*, venv: Path | None = None, scope: Any = "session") -> Any:
    """A pytest fixture that builds the local images when they are missing or stale (see
    `localimage`) and returns the read-only host mounts they need (`[compute.docker] mounts`).
    It needs the podman service fixture first (so a missing podman skips before building)."""

    @pytest.fixture(scope=scope)
    def local_image_mounts(podman_engine_url: str) -> list[str]:
        path = venv or Path(sys.prefix)
        try:
            localimage.ensure_images(path)
        except RuntimeError as exc:
            missing_system("the local markco images", f"{exc}; {INSTALL_HINT}")
        return localimage.dev_mounts(path)

    return local_image_mounts


def cleanup_fixture(engine_fixture: str = "podman_engine_url") -> Callable[..., Any]:
    """A pytest fixture factory: `deployment_ids` — a callable handing out fresh deployment
    ids, whose containers and networks are all purged when the session ends."""

    @pytest.fixture(scope="session")
    def deployment_ids(request: pytest.FixtureRequest) -> Iterator[Callable[[str], str]]:
        engine_url: str = request.getfixturevalue(engine_fixture)
        issued: list[str] = []

        def fresh(prefix: str) -> str:
            deployment = f"{prefix}-{os.urandom(3).hex()}"
            issued.append(deployment)
            return deployment

        yield fresh
        for deployment in issued:
            purge_deployment(engine_url, deployment)

    return deployment_ids


def kit_spec_factory(deployment_id: str, base: Path) -> Callable[..., ContainerSpec]:
    """`spec_factory(user_id, role, *, script=None)` as the contract kit wants it (see
    `markco_trio.testing.backend_kit`), for the local images: the real runtime (mrmd-python),
    the real editor (markco-editor), or `python -c script`; user directories under `base`."""

    def make(user_id: str, role: WorkloadRole, *, script: str | None = None) -> ContainerSpec:
        env: dict[str, str] = {}
        stop_signal = "SIGTERM"
        if script is not None:
            command: tuple[str, ...] = ("python", "-c", script)
        elif role == WorkloadRole.RUNTIME:
            command = ("mrmd-python", "--foreground", "--managed", "--host", "{host}",
                       "--port", "{port}", "--cwd", "{user_dir}")
            stop_signal = "SIGKILL"  # mrmd-python --managed ignores SIGTERM
        else:
            command = ("markco-editor",)
            env = {"CLOUD_MODE": "1", "HOST": "{host}", "PORT": "{port}",
                   "BASE_PATH": f"/u/{user_id}/", "MARKCO_USER_DIR": "{user_dir}",
                   "CLOUD_USER_ID": user_id}
        user_dir = base / deployment_id / user_id
        return ContainerSpec(
            name=workload_name(deployment_id, user_id, role), user_id=user_id, role=role,
            command=command, env=env, user_dir=str(user_dir), memory_bytes=256 << 20,
            cpus=0.5, labels={LABEL_USER: user_id, LABEL_ROLE: role.value},
            stop_signal=stop_signal)

    return make
