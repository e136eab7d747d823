"""The compute control contract kit (`markco_trio.testing.compute_kit`) on the built-in
provider: the compute plugin's `ComputeService` on the process backend, starting real
editors (markco-editor) and runtimes (mrmd-python)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from markco_trio.roles import ComputeControl
from markco_trio.testing.compute_kit import ComputeControlContract

from .harness import Harness, run_harness

pytestmark = pytest.mark.usefixtures("cleanup_workloads")


class TestBuiltinComputeContract(ComputeControlContract):
    @pytest.fixture
    async def harness(self, write_compute_config: Callable[..., Path]
                      ) -> AsyncIterator[Harness]:
        async with run_harness(write_compute_config()) as harness:
            yield harness

    @pytest.fixture
    async def compute(self, harness: Harness) -> AsyncIterator[ComputeControl]:
        yield harness.service

    @pytest.fixture
    async def compute_user(self, harness: Harness) -> str:
        return (await harness.user("kit")).id
