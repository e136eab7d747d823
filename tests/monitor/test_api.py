"""`GET /api/v1/monitor` through a real daemon: a user sees only their own runtime (another
user's is a 403), an administrator sees every one and the monitor's counters, anonymous
callers are refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from markco_trio.builtin.auth.api_tokens import create_api_token
from markco_trio.builtin.auth.login_links import ensure_user
from markco_trio.daemon import Daemon

Start = Callable[..., Awaitable[tuple[Daemon, int]]]


@pytest.fixture
async def live(daemon: Start) -> tuple[Daemon, int]:
    return await daemon('[auth]\nlogin_link = "never"\n')


async def token_of(d: Daemon, username: str, *scopes: str, admin: bool = False
                   ) -> tuple[str, str]:
    storage = d.ctx.require_storage()
    user, _ = await ensure_user(storage, d.ctx.clock, username, admin=admin)
    token, _ = await create_api_token(storage, d.ctx.clock, user, name="t", scopes=scopes)
    return user.id, token


async def get(port: int, token: str | None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(trust_env=False) as http:
        return await http.get(f"http://127.0.0.1:{port}/api/v1/monitor", params=params,
                              headers=headers)


async def test_a_user_sees_their_own_runtime_only(live: tuple[Daemon, int]) -> None:
    d, port = live
    ada, token = await token_of(d, "ada", "user")
    bob, _ = await token_of(d, "bob", "user")
    mine = await get(port, token)
    assert mine.status_code == 200
    body: dict[str, Any] = mine.json()
    assert body["runtimes"] == [] and "statistics" not in body  # nothing running yet
    assert (await get(port, token, user_id=ada)).status_code == 200
    theirs = await get(port, token, user_id=bob)
    assert theirs.status_code == 403


async def test_an_administrator_sees_the_monitors_counters(live: tuple[Daemon, int]) -> None:
    d, port = live
    _, token = await token_of(d, "root", "admin", admin=True)
    answer = await get(port, token)
    assert answer.status_code == 200
    assert answer.json()["interval"] == 5.0
    assert set(answer.json()["statistics"]) >= {"polls", "sample_errors", "events"}


async def test_anonymous_and_events_only_tokens_are_refused(live: tuple[Daemon, int]) -> None:
    d, port = live
    _, events_only = await token_of(d, "eve", "events:read")
    assert (await get(port, None)).status_code == 401
    assert (await get(port, events_only)).status_code == 403
