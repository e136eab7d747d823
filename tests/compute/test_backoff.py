"""Crash restarts back off exponentially — measured on trio's MockClock, so minutes of backoff
take a second of real time (the workloads themselves are real processes)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from markco_trio.records import WorkloadRole

from .harness import run_harness
from .test_compute_lifecycle import payload_pid

pytestmark = pytest.mark.usefixtures("cleanup_workloads")


async def test_restarts_wait_longer_after_each_crash(
        mock_clock: trio.testing.MockClock,
        write_compute_config: Callable[..., Path]) -> None:
    # Jump only when everything has waited 0.2 s of real time: real I/O with the processes
    # (a few milliseconds) never lets virtual time run ahead of it. Crashes are looked for
    # every 5 virtual seconds, so each wait below is the backoff plus up to 5 s.
    mock_clock.autojump_threshold = 0.2
    config = write_compute_config(restart_backoff_initial=20.0, restart_backoff_max=50.0,
                                  max_crashes=5, crash_window=3600.0, watch_interval=5.0)
    async with run_harness(config) as h:
        user = await h.user("backoff")
        await h.service.ensure_started(user.id, reason="test")
        waits = []
        for attempt in (1, 2, 3):
            killed_at = trio.current_time()
            os.kill(payload_pid(h, user.id, WorkloadRole.RUNTIME), signal.SIGKILL)
            await h.wait_event("runtime.restarted", user.id, count=attempt, within=1000)
            waits.append(trio.current_time() - killed_at)
        assert 20 <= waits[0] < 26, waits
        assert 40 <= waits[1] < 46, waits
        assert 50 <= waits[2] < 56, waits  # 80 capped by restart_backoff_max
