"""A container start that fails says why: the engine's own message, the exit status and the last
output — not "no address to check". And the cause met most often, local images without the
host mounts they run from, is refused when the daemon starts, in one message saying what to add."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from markco_docker import DockerBackend, localimage

from markco_trio.builtin.compute import probes
from markco_trio.errors import BackendError
from markco_trio.records import WorkloadRole
from markco_trio.roles import STATUS_RUNNING
from markco_trio.testing.backend_kit import Workloads, fresh_user, wait_for_status

pytestmark = pytest.mark.system

SpecFactory = Any
NO_SUCH_COMMAND = ("markco-no-such-command",)


async def test_local_images_without_their_mounts_are_refused_when_the_backend_starts(
        make_backend: Callable[..., DockerBackend], local_image_mounts: list[str]) -> None:
    backend = make_backend("no-mounts", mounts=[])
    with pytest.raises(BackendError) as raised:
        async with backend:
            pass  # pragma: no cover
    message = str(raised.value)
    assert localimage.RUNTIME_TAG in message and "/usr" in message
    venv = next(m.split(":")[0] for m in local_image_mounts if m.split(":")[0] != "/usr")
    assert venv in message
    assert "scripts/setup-podman --print-config" in message


async def test_a_start_the_engine_refuses_says_what_the_engine_said(
        backend: DockerBackend, spec_factory: SpecFactory, workloads: Workloads) -> None:
    # The runtime has no init: the engine itself fails to exec the command.
    spec = dataclasses.replace(spec_factory(fresh_user(), WorkloadRole.RUNTIME),
                               command=NO_SUCH_COMMAND)
    info = await workloads.create(spec)
    with pytest.raises(BackendError) as raised:
        await backend.start(info.handle)
    message = str(raised.value)
    assert f"{spec.name} did not start" in message
    assert "markco-no-such-command" in message and "not found" in message


async def test_an_editor_that_ends_as_it_starts_is_reported_with_its_exit_and_output(
        backend: DockerBackend, spec_factory: SpecFactory, workloads: Workloads) -> None:
    # The editor runs under an init, which starts, fails to exec the command and exits: the
    # engine's start succeeds, and there is no address to check readiness at.
    spec = dataclasses.replace(spec_factory(fresh_user(), WorkloadRole.EDITOR),
                               command=NO_SUCH_COMMAND)
    info = await workloads.run(spec)
    ended = await wait_for_status(backend, info.handle, {"crashed", "exited"})
    assert ended.status != STATUS_RUNNING and ended.address is None
    error = await probes.without_address(backend, ended, WorkloadRole.EDITOR)
    message = str(error)
    assert "the editor ended as it started" in message
    assert f"exit code {ended.exit_code}" in message
    assert "failed to exec" in message  # the init's own words, from the container's log
