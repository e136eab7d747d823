"""Hostile query parameters and cross-user ids on the compute and monitor routes: each is a
400 or a 403 naming the problem, never a 500 and never another user's data."""

from __future__ import annotations

import httpx
import pytest

from tests.auth.conftest import Markco, StartMarkco
from tests.events.test_events_api import QUIET, token


@pytest.fixture
async def markco(start_markco: StartMarkco) -> Markco:
    return await start_markco(auth=QUIET)


async def test_a_hostile_snapshot_cursor_is_a_400(markco: Markco) -> None:
    """`str.isdigit` accepts '²' (int() does not) and int() refuses 5000 digits."""
    alice = await markco.user("alice")
    headers = await token(markco, alice, "user")
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        for cursor in ("²", "9" * 5000, "-1", "x"):
            response = await http.get(f"/api/v1/users/{alice.id}/snapshots",
                                      params={"cursor": cursor}, headers=headers)
            assert response.status_code == 400, (cursor, response.text)


async def test_a_user_cannot_see_another_users_runtime_in_the_monitor(markco: Markco) -> None:
    alice, bob = await markco.user("alice"), await markco.user("bob")
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        for scopes in (("user",), ("user", "events:read")):
            response = await http.get("/api/v1/monitor", params={"user_id": bob.id},
                                      headers=await token(markco, alice, *scopes))
            assert response.status_code == 403, response.text
        own = await http.get("/api/v1/monitor", headers=await token(markco, alice, "user"))
    assert own.status_code == 200
    assert "statistics" not in own.json()
    assert all(r.get("user_id") in (None, alice.id) for r in own.json()["runtimes"])


async def test_another_users_snapshots_and_runtimes_are_refused(markco: Markco) -> None:
    alice, bob = await markco.user("alice"), await markco.user("bob")
    headers = await token(markco, alice, "user")
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        for method, path in (("GET", f"/api/v1/users/{bob.id}/snapshots"),
                             ("GET", f"/api/v1/users/{bob.id}/runtimes/logs"),
                             ("POST", f"/api/v1/users/{bob.id}/runtimes/stop"),
                             ("POST", f"/api/v1/users/{bob.id}/runtimes/sleep"),
                             ("PUT", f"/api/v1/users/{bob.id}/plan")):
            response = await http.request(method, path, headers=headers, json={"plan": "pro"})
            assert response.status_code in (403, 404), (path, response.status_code)
