"""Fixtures of the monitor tests: trio's MockClock (autojump) for everything time-based, and
fakes of what the monitor samples and tells (a backend's stats, compute's view, the policy)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.compute.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    cleanup_workloads,
    compute_root,
    data_dir,
    deployment_ids,
    wpython,
    write_compute_config,
)
from tests.compute.test_front import (  # noqa: F401 - fixtures, found by pytest by name
    runtime_address,
    serve_front,
)


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    """Time jumps whenever every task waits: 15 idle minutes take milliseconds."""
    return trio.testing.MockClock(autojump_threshold=0)


class TrioWallClock:
    """A wall clock that follows trio's (mock) clock, for code that asks `now()`."""

    def now(self) -> float:
        return 1_800_000_000.0 + trio.current_time()
