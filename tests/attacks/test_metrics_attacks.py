"""Attacks on the Prometheus listener (`[metrics] listen`): what a client of the public port
can do to the metrics (grow the number of series with paths, ids and headers of its choosing;
inject lines into the exposition), and the loopback-only guard of the listen address."""

from __future__ import annotations

import re

import httpx
import pytest

from markco_trio.config import MetricsOptions
from tests.auth.conftest import Markco, StartMarkco, free_port
from tests.events.test_events_api import QUIET

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*'  # name
                    r'(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})?'  # labels
                    r' [^ \n]+$')  # value


@pytest.fixture
async def markco(start_markco: StartMarkco) -> tuple[Markco, str]:
    port = free_port()
    markco = await start_markco(auth=QUIET + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    return markco, f"http://127.0.0.1:{port}/metrics"


async def series(url: str) -> list[str]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200
    return [line for line in response.text.splitlines() if line and not line.startswith("#")]


async def test_a_public_client_cannot_grow_the_number_of_series(
        markco: tuple[Markco, str]) -> None:
    """Hundreds of distinct paths, users, request ids, methods and hostile bytes on the public
    port add no series per value (each would be a cardinality bomb for Prometheus), and every
    line of the exposition stays one well-formed sample."""
    daemon, metrics = markco
    async with httpx.AsyncClient(base_url=daemon.url, trust_env=False, timeout=10) as http:
        for i in range(3):  # every kind of request once: their fixed series exist now
            await http.get(f"/warmup{i}")
            await http.get(f"/@nobody{i}/p")
            await http.get(f"/u/nobody{i}/")
            await http.get(f"/api/v1/users/u{i}/plan")
        before = await series(metrics)
        for i in range(150):
            hostile = f'x{i}"}}\\n{{evil="1'
            await http.get(f"/path-{i}/{hostile}", headers={"X-Request-Id": f"r-{i}"})
            await http.get(f"/@user{i}/project{i}/{hostile}")
            await http.get(f"/u/user{i}/x", headers={"Cookie": f"markco_session=s{i}"})
            await http.get(f"/api/v1/users/u{i}/plan",
                           headers={"Authorization": f"Bearer mk_{i}"})
            await http.request(f"M{i}", "/")
    after = await series(metrics)
    assert len(after) - len(before) < 20, sorted(set(after) - set(before))[:20]
    assert [line for line in after if not SAMPLE.match(line)] == []
    assert not any("evil" in line or "user1" in line for line in after)


@pytest.mark.parametrize("listen", ["localhost.evil.test:9464", "127.0.0.1.example.org:9464",
                                    "127.evil.test:9464"])
def test_a_host_that_only_looks_like_loopback_is_refused(listen: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        MetricsOptions(listen=listen)


@pytest.mark.parametrize("listen", ["0.0.0.0:9464", "[::]:9464", "10.1.2.3:9464"])
def test_a_remote_metrics_address_needs_allow_remote(listen: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        MetricsOptions(listen=listen)
