"""`/metrics` sees a real start: a runtime and an editor started through the API (the process
backend, real mrmd-python and the built-in editor), then stopped; the starts, their durations,
the events by type and the users by state move accordingly."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import trio

from markco_trio.config import load_config
from markco_trio.daemon import Daemon
from markco_trio.testing.network import free_port
from markco_trio.testing.workload_python import WorkloadPython
from tests.compute.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    cleanup_workloads,
    compute_root,
    data_dir,
    deployment_ids,
    wpython,
)
from tests.compute.harness import config_text, plugin_modules
from tests.compute.polling import eventually
from tests.compute.test_compute_api import Running

pytestmark = [pytest.mark.usefixtures("cleanup_workloads"), pytest.mark.slow]


def value(text: str, sample: str) -> float:
    match = re.search("^" + re.escape(sample) + r" (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
async def running(data_dir: Path, wpython: WorkloadPython,  # noqa: F811
                  deployment_ids: Callable[[str], str]  # noqa: F811
                  ) -> AsyncIterator[Running]:
    port = free_port()
    path = data_dir.parent / f"{data_dir.name}-metrics.toml"
    path.write_text(config_text(
        data_dir, deployment_ids("metrics"), wpython, listen=f"127.0.0.1:{port}",
        modules=plugin_modules("markco_trio.builtin.auth"),
        extra='\n[auth]\nlogin_link = "never"\n\n[metrics]\nlisten = "127.0.0.1:0"\n'))
    config, pm = load_config(path, entry_points=False)
    daemon = Daemon(config, pm)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: daemon.run(task_status=task_status, handle_signals=False))
        await eventually(lambda: daemon.readiness.snapshot().ready, what="/readyz")
        yield Running(daemon, bound)
        nursery.cancel_scope.cancel()


async def scrape(running: Running) -> str:
    listener = running.daemon.metrics_listener
    assert listener is not None
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.get(f"http://127.0.0.1:{listener.port}/metrics")
    assert answer.status_code == 200
    return answer.text


async def test_a_start_moves_the_start_counters_durations_events_and_users(
        running: Running) -> None:
    user = await running.user("metrics-ada")
    before = await scrape(running)
    assert value(before, 'markco_users{state="active"}') == 0
    async with running.client(headers=await running.token(user)) as api:
        started = await api.post(f"/api/v1/users/{user.id}/runtimes/start?wait=1")
        assert started.status_code == 200, started.text
        text = await scrape(running)
        with trio.fail_after(10):  # the metrics observer gets events in its own task
            while value(text, 'markco_events_total{type="runtime.started"}') < 1:
                await trio.sleep(0.05)
                text = await scrape(running)
        assert value(text, 'markco_starts_total{role="runtime",operation="start"}') == 1
        assert value(text, 'markco_starts_total{role="editor",operation="start"}') == 1
        assert value(text, 'markco_start_seconds_count{role="runtime"}') == 1
        assert value(text, 'markco_start_seconds_sum{role="runtime"}') > 0
        assert value(text, 'markco_users{state="active"}') == 1
        assert value(text, 'markco_runtimes{role="runtime",state="running"}') == 1
        assert value(text, 'markco_proxy_requests_total') >= 1  # the API call went through
        stopped = await api.post(f"/api/v1/users/{user.id}/runtimes/stop")
        assert stopped.status_code == 200
    after = await scrape(running)
    assert value(after, 'markco_users{state="active"}') == 0
    assert value(after, 'markco_users{state="stopped"}') == 1
