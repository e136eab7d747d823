"""A sleeping user is not released: their runtime front keeps listening, so that an execute
request arriving there wakes the runtime (DESIGN §3.4) — however long they sleep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import trio

from tests.compute.harness import Harness, run_harness

from .fake_checkpointer import FakeCheckpointer

pytestmark = pytest.mark.usefixtures("cleanup_workloads")


@pytest.fixture
async def harness(write_compute_config: Callable[..., Path]) -> AsyncIterator[Harness]:
    async with run_harness(write_compute_config(), checkpointer=FakeCheckpointer()) as h:
        yield h


async def test_a_sleeping_users_front_outlasts_the_release_delay_and_wakes_them(
        harness: Harness) -> None:
    user = await harness.user("ada")
    await harness.service.ensure_started(user.id, reason="test")
    await harness.service.sleep(user.id, reason="test")
    await trio.sleep(harness.service.release_after * 2.5)
    assert harness.service.active_actors() == 1
    path = harness.service.front_path(user.id)
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)),
                                 base_url="http://runtime", timeout=30,
                                 trust_env=False) as front:
        answer = await front.post("/mrp/v1/execute", json={"code": "print(6 * 7)"})
    assert answer.status_code == 200 and answer.json()["stdout"] == "42\n"
