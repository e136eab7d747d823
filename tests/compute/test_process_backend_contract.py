"""The built-in `process` backend passes the ContainerBackend contract kit — with cgroups and
namespaces (the default), and without either (limits then are not enforced, and the kit's limit
tests skip by capability)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from markco_trio.testing.backend_kit import BackendContract, SpecFactory

SpecsFor = Callable[[str], SpecFactory]


class TestProcessBackend(BackendContract):
    """Defaults: cgroups and PID/mount namespaces, workloads as `nobody`."""

    options: dict[str, object] = {}

    @pytest.fixture
    def deployment(self, deployment_ids: Callable[[str], str]) -> str:
        return deployment_ids("kit-a")

    @pytest.fixture
    def other_deployment(self, deployment_ids: Callable[[str], str]) -> str:
        return deployment_ids("kit-b")

    @pytest.fixture
    async def backend(self, make_process_backend: Callable[..., object],
                      deployment: str) -> object:
        return await make_process_backend(deployment, **self.options)  # type: ignore[misc]

    @pytest.fixture
    async def other_backend(self, make_process_backend: Callable[..., object],
                            other_deployment: str) -> object:
        return await make_process_backend(other_deployment, **self.options)  # type: ignore[misc]

    @pytest.fixture
    def spec_factory(self, process_specs: SpecsFor, deployment: str) -> SpecFactory:
        return process_specs(deployment)

    @pytest.fixture
    def other_spec_factory(self, process_specs: SpecsFor, other_deployment: str) -> SpecFactory:
        return process_specs(other_deployment)


class TestProcessBackendWithoutCgroupsOrNamespaces(TestProcessBackend):
    """The fallback: plain processes in their own session; stats from /proc."""

    options = {"cgroups": False, "namespaces": False}
