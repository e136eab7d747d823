"""When a user's actor cannot even start (preparing the user's account writes to a storage that
is full), the start asked of it fails at once with that cause — on the API call and in the
progress a wait page follows — instead of waiting forever; the next request, the cause gone,
starts the user."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from markco_trio.builtin.compute import StartFailed
from markco_trio.storage.failures import StorageUnavailable

from .harness import run_harness

pytestmark = pytest.mark.usefixtures("cleanup_workloads")


async def test_a_start_fails_with_the_cause_when_the_actor_cannot_start_then_succeeds(
        write_compute_config: Callable[..., Path]) -> None:
    async with run_harness(write_compute_config()) as h:
        real_prepare = h.backend.prepare_user
        failures = [StorageUnavailable("disk full", "database or disk is full")]

        async def prepare_user(user_id: str) -> None:
            if failures:
                raise failures.pop()
            await real_prepare(user_id)

        h.backend.prepare_user = prepare_user  # type: ignore[method-assign]
        user = await h.user("ada")
        with h.service.subscribe_progress(user.id) as progress:
            with trio.fail_after(10), pytest.raises(StartFailed, match="disk full"):
                await h.service.ensure_started(user.id, reason="test")
            seen = []
            while True:
                try:
                    seen.append(progress.receive_nowait())
                except trio.WouldBlock:
                    break
        assert seen and seen[-1].failed and "disk full" in seen[-1].message
        with trio.fail_after(30):
            state = await h.service.ensure_started(user.id, reason="again")
        assert state.ready
