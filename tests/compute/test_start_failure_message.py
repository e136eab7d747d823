"""A workload that ends as it starts is reported with its own words: compute's failure message
(what the dashboard and the wait page show) carries its status, exit code and last output —
not "no address to check". The process backend always gives an address; a container backend
gives none for a container that has already exited, which the test reproduces by hiding it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from markco_trio.builtin.compute import StartFailed
from markco_trio.roles import ContainerInfo
from markco_trio.testing.backend_kit import wait_for_status

from .harness import run_harness

pytestmark = pytest.mark.usefixtures("cleanup_workloads")


async def test_an_editor_that_ends_as_it_starts_fails_the_start_with_its_exit_and_output(
        write_compute_config: Callable[..., Path]) -> None:
    config = write_compute_config(
        editor_command=["/bin/sh", "-c", "echo 'markco-editor: not found' >&2; exit 127"])
    async with run_harness(config) as h:
        backend = h.backend
        real_start = backend.start

        async def start_like_a_container_engine(handle: str) -> ContainerInfo:
            info = await real_start(handle)
            if info.role.value != "editor":
                return info
            ended = await wait_for_status(backend, handle, {"crashed", "exited"})
            return dataclasses.replace(ended, address=None)

        backend.start = start_like_a_container_engine  # type: ignore[method-assign]
        user = await h.user("ada")
        with pytest.raises(StartFailed) as failed:
            await h.service.ensure_started(user.id, reason="test")
    message = str(failed.value)
    assert "no address to check" not in message
    assert "the editor ended as it started" in message and "exit code 127" in message
    assert "markco-editor: not found" in message
