"""The runtime front serves its user's editor, never a web page: a request with an Origin or
Fetch Metadata, a CORS preflight, or a Host that is not a loopback name is refused before it
reaches the runtime (mrmd-python answers `Access-Control-Allow-Origin: *` and checks no Host),
and the runtime's CORS headers never leave the front."""

from __future__ import annotations

import pytest

from .conftest import Tenants

MARKER = "print('ran')"


@pytest.mark.parametrize("headers", [
    {"Origin": "http://127.0.0.2:8000"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
    {"Host": "evil.example"},
    {"Host": "evil.example:8000"},
], ids=["foreign-origin", "null-origin", "fetch-metadata", "rebound-host", "rebound-host-port"])
async def test_a_browser_shaped_execute_is_refused(tenant: Tenants,
                                                   headers: dict[str, str]) -> None:
    async with tenant.front(tenant.a) as front:
        response = await front.post("/mrp/v1/execute", json={"code": MARKER}, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    stats = tenant.harness.service.front_statistics_nowait(tenant.a.id)
    assert stats is not None and stats.executions == 0


async def test_a_cors_preflight_is_refused(tenant: Tenants) -> None:
    async with tenant.front(tenant.a) as front:
        response = await front.options("/mrp/v1/execute", headers={
            "Access-Control-Request-Method": "POST"})
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


async def test_the_runtimes_cors_headers_are_dropped(tenant: Tenants) -> None:
    async with tenant.front(tenant.a) as front:
        response = await front.get("/mrp/v1/capabilities")
    assert response.status_code == 200
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
