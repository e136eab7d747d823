"""Fixtures of the tenancy tests: the compute fixtures (a data dir the workloads' accounts can
reach, their Python, throw-away deployments), and two users — A, the attacker, and B, the
victim — with their runtime and editor running on the process backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from compute.conftest import (  # noqa: F401 - fixtures, registered by being imported here
    cleanup_workloads,
    compute_root,
    data_dir,
    deployment_ids,
    wpython,
    write_compute_config,
)
from compute.harness import Harness, run_harness

from markco_trio.records import User
from markco_trio.testing.system import missing_system


@dataclass
class Tenants:
    """A running compute with two users started: `a` attacks, `b` is attacked."""

    harness: Harness
    a: User
    b: User

    def front(self, user: User) -> httpx.AsyncClient:
        """A client of `user`'s runtime front (what their editor uses)."""
        path = self.harness.service.front_path(user.id)
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)),
                                 base_url="http://runtime", timeout=60, trust_env=False)

    async def run_as(self, user: User, code: str) -> str:
        """Run `code` in `user`'s runtime (through their front); its stdout."""
        async with self.front(user) as front:
            response = await front.post("/mrp/v1/execute", json={"code": code})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body.get("success", True), body
        stdout: str = body["stdout"]
        return stdout


@asynccontextmanager
async def started(config: Path, *, both: bool) -> AsyncIterator[Tenants]:
    async with run_harness(config) as harness:
        caps = harness.service.capabilities
        if not (caps.isolated_network and caps.pid_namespace):
            missing_system("PID and network namespaces for the process backend",
                           "run the tests as root with util-linux and iproute2")
        a, b = await harness.user("mallory"), await harness.user("bob")
        for user in (a, b) if both else (a,):
            await harness.service.ensure_started(user.id, reason="test")
        yield Tenants(harness, a, b)


@pytest.fixture
async def tenants(write_compute_config: Callable[..., Path],  # noqa: F811
                  cleanup_workloads: None) -> AsyncIterator[Tenants]:  # noqa: F811
    """A and B, both started."""
    async with started(write_compute_config(), both=True) as running:
        yield running


@pytest.fixture
async def tenant(write_compute_config: Callable[..., Path],  # noqa: F811
                 cleanup_workloads: None) -> AsyncIterator[Tenants]:  # noqa: F811
    """A alone started (B exists, with nothing running)."""
    async with started(write_compute_config(), both=False) as running:
        yield running
