"""Fixtures of the docker backend's tests: a throw-away podman service for the session, the
local images, and specs that run on them (the tests are skipped when podman cannot run here)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from markco_docker import DockerBackend, DockerOptions
from markco_docker.testing import (
    cleanup_fixture,
    kit_spec_factory,
    local_images_fixture,
    podman_service_fixture,
    purge_deployment,
)

from markco_trio.roles import ContainerSpec
from markco_trio.testing.backend_kit import Workloads

ROOT = Path(__file__).resolve().parents[2]

SpecFactory = Callable[..., ContainerSpec]
BackendFactory = Callable[..., DockerBackend]

podman_engine_url = podman_service_fixture(containers_conf=ROOT / "config" / "containers.conf")
local_image_mounts = local_images_fixture()
deployment_ids = cleanup_fixture()



@pytest.fixture
def make_backend(podman_engine_url: str, local_image_mounts: list[str],
                 tmp_path: Path) -> BackendFactory:
    """`make_backend(deployment_id, **options)`: a backend (to enter) on the test podman."""

    def make(deployment_id: str, **options: object) -> DockerBackend:
        settings = {"engine_url": podman_engine_url, "mounts": local_image_mounts, **options}
        return DockerBackend(DockerOptions(**settings),  # type: ignore[arg-type]
                             deployment_id=deployment_id,
                             state_dir=tmp_path / f"state-{deployment_id}")

    return make


@pytest.fixture
async def backends(make_backend: BackendFactory, deployment_ids: Callable[[str], str],
                   podman_engine_url: str) -> AsyncIterator[tuple[DockerBackend, DockerBackend]]:
    """Two entered backends of two fresh deployments on the same engine. One fixture for both,
    so that neither is closed before the kit's `workloads` teardown has used it."""
    async with make_backend(deployment_ids("kit")) as first, \
            make_backend(deployment_ids("other")) as second:
        yield first, second
    # Every test removes what it made (the kit's `workloads` does); a user's network goes with
    # their last container. Anything still there is a leak: say so (and clean it up).
    leftovers = []
    for deployment in (first.deployment_id, second.deployment_id):
        leftovers += await trio.to_thread.run_sync(purge_deployment, podman_engine_url,
                                                   deployment)
    assert not leftovers, f"left behind on the engine: {leftovers}"


@pytest.fixture
def backend(backends: tuple[DockerBackend, DockerBackend]) -> DockerBackend:
    """An entered backend of a fresh deployment."""
    return backends[0]


@pytest.fixture
def other_backend(backends: tuple[DockerBackend, DockerBackend]) -> DockerBackend:
    """An entered backend of ANOTHER fresh deployment, on the same engine."""
    return backends[1]


@pytest.fixture
def spec_factory(backend: DockerBackend, tmp_path: Path) -> SpecFactory:
    """Specs for `backend`'s deployment."""
    return kit_spec_factory(backend.deployment_id, tmp_path / "users")


@pytest.fixture
def other_spec_factory(other_backend: DockerBackend, tmp_path: Path) -> SpecFactory:
    """Specs for `other_backend`'s deployment."""
    return kit_spec_factory(other_backend.deployment_id, tmp_path / "users")


@pytest.fixture
async def workloads(backend: DockerBackend) -> AsyncIterator[Workloads]:
    """What a test creates (on either backend), removed at teardown even when it fails — as
    the kit's own fixture of that name does for the kit's tests."""
    tracked = Workloads(backend)
    try:
        yield tracked
    finally:
        with trio.CancelScope(shield=True):
            await tracked.remove_all()
