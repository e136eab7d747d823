"""`GET /api/v1/events`: filters, cursor paging that stays put while events are appended, and
who may read what — a user only their own events, whatever filter or cursor they forge; an
administrator everything; a token only with the `events:read` (or `admin`) scope."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from markco_trio.builtin.auth.tokens import hash_token, new_api_token
from markco_trio.builtin.events.query import EventQuery
from markco_trio.records import User
from tests.auth.conftest import Markco, StartMarkco

QUIET = "\n[workloads]\nstart_on_login = false\n"


async def token(markco: Markco, user: User, *scopes: str) -> dict[str, str]:
    """An `Authorization` header for a new API token of `user` with `scopes`."""
    raw = new_api_token()
    await markco.storage.create_api_token(user_id=user.id, name="t", token_hash=hash_token(raw),
                                          scopes=scopes, expires_at=None,
                                          now=markco.clock.now())
    return {"Authorization": f"Bearer {raw}"}


async def publish(markco: Markco, kind: str, user: User | None = None, **data: Any) -> None:
    bus = markco.daemon.ctx.events
    assert bus is not None
    await bus.publish(kind, user_id=user.id if user else None, data=data)


async def get(markco: Markco, headers: dict[str, str], **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        return await http.get("/api/v1/events", params=params, headers=headers)


async def all_pages(markco: Markco, headers: dict[str, str], **params: Any
                    ) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        response = await get(markco, headers, **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items


@pytest.fixture
async def world(start_markco: StartMarkco) -> tuple[Markco, User, User, User]:
    """A daemon with users alice and bob, an admin, and events of each and of nobody."""
    markco = await start_markco(auth=QUIET)
    alice, bob = await markco.user("alice"), await markco.user("bob")
    admin = await markco.user("root", admin=True)
    await publish(markco, "critical", alice, n=1)
    await publish(markco, "critical", bob, n=2)
    await publish(markco, "idle-sleep", alice, n=3)
    await publish(markco, "gpu-hint", alice, n=4)
    await publish(markco, "deployment.started", None, n=5)
    return markco, alice, bob, admin


def ns(items: list[dict[str, Any]]) -> list[int]:
    return [i["data"]["n"] for i in items if "n" in i["data"]]


async def test_an_event_has_an_opaque_id_type_user_time_and_data(world: Any) -> None:
    markco, alice, _, _ = world
    response = await get(markco, await token(markco, alice, "events:read"), type="gpu-hint")
    (item,) = response.json()["items"]
    assert set(item) == {"id", "type", "user_id", "created_at", "data"}
    assert item["type"] == "gpu-hint" and item["user_id"] == alice.id
    assert item["created_at"].endswith("Z") and item["data"] == {"n": 4}


async def test_a_user_sees_only_their_own_events(world: Any) -> None:
    markco, alice, _, _ = world
    items = await all_pages(markco, await token(markco, alice, "events:read"))
    assert {i["user_id"] for i in items} == {alice.id}
    assert ns(items) == [1, 3, 4]


async def test_an_admin_sees_every_event_and_filters_by_user(world: Any) -> None:
    markco, _, bob, admin = world
    headers = await token(markco, admin, "admin")
    assert ns(await all_pages(markco, headers)) == [1, 2, 3, 4, 5]
    assert ns(await all_pages(markco, headers, user_id=bob.id)) == [2]


async def test_events_are_filtered_by_one_or_several_types(world: Any) -> None:
    markco, _, _, admin = world
    headers = await token(markco, admin, "admin")
    assert ns(await all_pages(markco, headers, type="critical")) == [1, 2]
    assert ns(await all_pages(markco, headers, type=["critical", "gpu-hint"])) == [1, 2, 4]
    assert ns(await all_pages(markco, headers, type="idle-sleep,gpu-hint")) == [3, 4]


async def test_events_are_filtered_by_a_time_range(start_markco: StartMarkco) -> None:
    markco = await start_markco(auth=QUIET)
    admin = await markco.user("root", admin=True)
    markco.clock.advance(1 - markco.clock.now() % 1)  # a whole second: ISO times are exact
    start = markco.clock.now()
    for n in range(4):
        await publish(markco, "tick", None, n=n)
        markco.clock.advance(60)
    since = _iso(start + 60)
    until = _iso(start + 180)
    items = await all_pages(markco, await token(markco, admin, "admin"), type="tick",
                            since=since, until=until)
    assert ns(items) == [1, 2]


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


async def test_paging_neither_repeats_nor_skips_while_events_are_appended(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(auth=QUIET)
    admin = await markco.user("root", admin=True)
    headers = await token(markco, admin, "admin")
    for n in range(5):
        await publish(markco, "tick", None, n=n)
    seen: list[int] = []
    cursor = None
    for round_ in range(10):
        params: dict[str, Any] = {"type": "tick", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await get(markco, headers, **params)).json()
        seen.extend(ns(body["items"]))
        if round_ < 3:  # more arrive while the reader pages
            await publish(markco, "tick", None, n=100 + round_)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [0, 1, 2, 3, 4, 100, 101, 102]


async def test_a_user_cannot_ask_for_another_users_events(world: Any) -> None:
    markco, alice, bob, _ = world
    response = await get(markco, await token(markco, alice, "events:read"), user_id=bob.id)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


async def test_a_forged_cursor_of_another_users_query_is_refused(world: Any) -> None:
    markco, alice, bob, _ = world
    # The fingerprint is not secret: alice can compute a cursor for bob's query. It is refused
    # because it belongs to another query than hers (her user filter is forced).
    forged = EventQuery(user_id=bob.id).cursor(0)
    response = await get(markco, await token(markco, alice, "events:read"), cursor=forged)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_cursor"


async def test_a_rewound_cursor_still_shows_only_the_callers_events(world: Any) -> None:
    markco, alice, _, _ = world
    rewound = EventQuery(user_id=alice.id).cursor(0)
    response = await get(markco, await token(markco, alice, "events:read"), cursor=rewound)
    assert response.status_code == 200
    assert {i["user_id"] for i in response.json()["items"]} == {alice.id}


BAD_CURSORS = ["garbage!", "djE6MTI=", base64.urlsafe_b64encode(b"v1:-5:abc").decode(),
               base64.urlsafe_b64encode(b"v2:1:" + b"0" * 16).decode(), "A" * 500]

BAD_FILTERS: list[tuple[dict[str, str], str]] = [
    ({"type": "bad type!"}, "bad_type"),
    ({"type": ",".join(f"t{i}" for i in range(21))}, "bad_type"),
    ({"since": "yesterday"}, "bad_since"),
    ({"since": "2026-12-04T21:00:00"}, "bad_since"),  # no zone
    ({"since": "2026-12-04T22:00:00Z", "until": "2026-12-04T21:00:00Z"}, "bad_range"),
    ({"limit": "0"}, "bad_limit"),
    ({"limit": "201"}, "bad_limit"),
]


async def test_a_bad_cursor_is_a_400(world: Any) -> None:
    markco, alice, _, _ = world
    headers = await token(markco, alice, "events:read")
    for cursor in BAD_CURSORS:  # one daemon for all: each is the same behaviour
        response = await get(markco, headers, cursor=cursor)
        assert response.status_code == 400, cursor
        assert response.json()["error"]["code"] == "bad_cursor", cursor


async def test_a_bad_filter_is_a_400_naming_it(world: Any) -> None:
    markco, alice, _, _ = world
    headers = await token(markco, alice, "events:read")
    for params, code in BAD_FILTERS:
        response = await get(markco, headers, **params)
        assert response.status_code == 400, params
        assert response.json()["error"]["code"] == code, params


async def test_reading_events_needs_the_events_read_scope(world: Any) -> None:
    markco, alice, _, _ = world
    response = await get(markco, await token(markco, alice, "user"))
    assert response.status_code == 403
    assert "events:read" in response.json()["error"]["message"]


async def test_an_admins_events_read_token_reads_only_their_own_events(world: Any) -> None:
    markco, _, _, admin = world
    await publish(markco, "critical", admin, n=6)
    items = await all_pages(markco, await token(markco, admin, "events:read"))
    assert ns(items) == [6]


async def test_an_anonymous_caller_is_a_401(world: Any) -> None:
    markco, *_ = world
    response = await get(markco, {})
    assert response.status_code == 401


async def test_a_browser_session_reads_its_users_events(world: Any) -> None:
    markco, alice, _, _ = world
    browser = await markco.login_as("alice")
    response = await browser.get("/api/v1/events", params={"type": "critical"})
    assert response.status_code == 200
    assert ns(response.json()["items"]) == [1]


async def test_only_an_admin_reads_the_webhook_delivery_log(world: Any) -> None:
    markco, alice, _, admin = world
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False) as http:
        for path in ("/api/v1/webhooks", "/api/v1/webhooks/deliveries"):
            refused = await http.get(path, headers=await token(markco, alice, "events:read",
                                                              "user"))
            assert refused.status_code == 403
            allowed = await http.get(path, headers=await token(markco, admin, "admin"))
            assert allowed.status_code == 200 and allowed.json()["items"] == []
        bad = await http.get("/api/v1/webhooks/deliveries", params={"cursor": "x"},
                             headers=await token(markco, admin, "admin"))
        assert bad.status_code == 400
