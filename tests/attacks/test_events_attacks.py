"""Attacks on the events API: a stream outliving the credential that opened it, hostile query
parameters (`limit`, cursors, types), and the webhook surfaces (who reads the delivery log,
whether any route lets a caller configure a webhook URL: an SSRF if it did)."""

from __future__ import annotations

import h11
import httpx
import pytest
import trio

from markco_trio.builtin.auth.tokens import hash_token, new_api_token
from markco_trio.records import User
from tests.auth.conftest import Markco, StartMarkco
from tests.events.test_events_api import QUIET, publish
from tests.events.test_events_stream import RawSse

# A short heartbeat, so a stream that is still open shows it quickly.
FAST = QUIET + "\n[events]\nstream_heartbeat = 0.2\n"


async def token_with_id(markco: Markco, user: User, *scopes: str) -> tuple[str, str]:
    """A new API token of `user`: (its id, the raw token)."""
    raw = new_api_token()
    record = await markco.storage.create_api_token(
        user_id=user.id, name="t", token_hash=hash_token(raw), scopes=scopes, expires_at=None,
        now=markco.clock.now())
    return record.id, raw


async def rest_of_stream(sse: RawSse) -> bytes:
    """Everything the stream sends until the server ends it."""
    data = sse.buffer
    while True:
        event = await sse._next()
        if isinstance(event, h11.Data):
            data += bytes(event.data)
        else:
            assert isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)), event
            return data


@pytest.fixture
async def markco(start_markco: StartMarkco) -> Markco:
    return await start_markco(auth=FAST)


async def test_an_event_stream_ends_when_its_token_is_revoked(markco: Markco) -> None:
    alice = await markco.user("alice")
    token_id, raw = await token_with_id(markco, alice, "events:read")
    with trio.fail_after(5):
        async with RawSse.open(markco.url, "/api/v1/events/stream",
                               {"Authorization": f"Bearer {raw}"}) as sse:
            assert sse.status == 200
            await sse.block()
            assert await markco.storage.revoke_api_token(token_id, now=markco.clock.now())
            await trio.sleep(0.5)  # the revocation poll (0.2 s) has seen it
            await publish(markco, "critical", alice, secret="after revocation")
            rest = await rest_of_stream(sse)
    assert b"after revocation" not in rest


async def test_an_event_stream_ends_when_its_session_is_logged_out_everywhere(
        markco: Markco) -> None:
    alice = await markco.user("alice")
    browser = await markco.login_as("alice")
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    with trio.fail_after(5):
        async with RawSse.open(markco.url, "/api/v1/events/stream", {"Cookie": cookie}) as sse:
            assert sse.status == 200
            await sse.block()
            assert await markco.storage.revoke_user_sessions(alice.id, now=markco.clock.now())
            await trio.sleep(0.5)
            await publish(markco, "critical", alice, secret="after logout")
            rest = await rest_of_stream(sse)
    assert b"after logout" not in rest


async def test_an_event_stream_ends_when_its_user_is_demoted_from_admin(
        markco: Markco) -> None:
    """An admin's stream of every user's events stops once they are no longer an admin."""
    root = await markco.user("root", admin=True)
    bob = await markco.user("bob")
    _, raw = await token_with_id(markco, root, "admin")
    with trio.fail_after(5):
        async with RawSse.open(markco.url, "/api/v1/events/stream",
                               {"Authorization": f"Bearer {raw}"}) as sse:
            assert sse.status == 200
            await sse.block()
            await markco.storage.update_user(root.id, is_admin=False)
            markco.authority.clear()
            await trio.sleep(0.5)
            await publish(markco, "critical", bob, secret="bob's, after demotion")
            rest = await rest_of_stream(sse)
    assert b"after demotion" not in rest


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/webhooks/deliveries"])
async def test_a_hostile_limit_is_a_400_never_a_500(markco: Markco, path: str) -> None:
    """`str.isdigit` accepts '²' and '١' (int() does not), and int() refuses more than 4300
    digits: each must be the 400 naming the range, not an unhandled error."""
    root = await markco.user("root", admin=True)
    _, raw = await token_with_id(markco, root, "admin")
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        for limit in ("²", "١٢", "9" * 5000, "-1", "0", "1e3", " 5", "100000000000000000000"):
            response = await http.get(path, params={"limit": limit},
                                      headers={"Authorization": f"Bearer {raw}"})
            assert response.status_code == 400, (limit, response.text)
            assert response.json()["error"]["code"] == "bad_limit"


async def test_hostile_cursors_and_types_are_400s(markco: Markco) -> None:
    alice = await markco.user("alice")
    _, raw = await token_with_id(markco, alice, "events:read")
    headers = {"Authorization": f"Bearer {raw}"}
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        for params in ({"cursor": "x" * 20_000}, {"cursor": "djE6wrI6YWJj"},  # 'v1:²:abc'
                       {"type": ",".join(f"t{i}" for i in range(2000))},
                       {"type": "a\r\nX-Injected: 1"}, {"since": "9" * 5000},
                       {"since": "2026-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}):
            response = await http.get("/api/v1/events", params=params, headers=headers)
            assert response.status_code == 400, (params, response.text)


async def test_a_user_cannot_read_the_webhooks_or_their_delivery_log(markco: Markco) -> None:
    alice = await markco.user("alice")
    _, raw = await token_with_id(markco, alice, "events:read", "user")
    browser = await markco.login_as("alice")
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        for path in ("/api/v1/webhooks", "/api/v1/webhooks/deliveries"):
            assert (await http.get(path, headers={"Authorization": f"Bearer {raw}"})
                    ).status_code == 403
            assert (await browser.get(path)).status_code == 403


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_no_route_configures_a_webhook_url(markco: Markco, method: str) -> None:
    """Webhook URLs come only from the config file: not even an administrator can point the
    daemon at an address (an SSRF) through the API."""
    root = await markco.user("root", admin=True)
    _, raw = await token_with_id(markco, root, "admin")
    body = {"name": "x", "url": "http://127.0.0.1:1/", "types": ["critical"]}
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        for path in ("/api/v1/webhooks", "/api/v1/webhooks/x", "/api/v1/webhooks/deliveries"):
            response = await http.request(method, path, json=body, headers={
                "Authorization": f"Bearer {raw}", "Origin": markco.url})
            assert response.status_code in (404, 405), (path, response.status_code)
        listed = await http.get("/api/v1/webhooks", headers={"Authorization": f"Bearer {raw}"})
    assert listed.json()["items"] == []


async def test_an_idle_stream_ends_soon_after_its_token_is_revoked(
        start_markco: StartMarkco) -> None:
    """No event and no heartbeat due (15 s): the stream still ends within seconds."""
    markco = await start_markco(auth=QUIET)
    alice = await markco.user("alice")
    token_id, raw = await token_with_id(markco, alice, "events:read")
    with trio.fail_after(5):
        async with RawSse.open(markco.url, "/api/v1/events/stream",
                               {"Authorization": f"Bearer {raw}"}) as sse:
            await sse.block()
            assert await markco.storage.revoke_api_token(token_id, now=markco.clock.now())
            assert b"heartbeat" not in await rest_of_stream(sse)


async def test_an_editor_pages_event_source_cannot_read_the_visitors_events(
        markco: Markco) -> None:
    """On a single origin, an administrator visiting a user's editor must not have that
    page's script (an EventSource, a fetch) read every event with the admin's cookie."""
    alice = await markco.user("alice")
    root = await markco.login_as("root", admin=True)
    for dest in ("empty", "document"):
        for path in ("/api/v1/events", "/api/v1/events/stream",
                     "/api/v1/webhooks/deliveries"):
            response = await root.get(path, headers={
                "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors",
                "Sec-Fetch-Dest": dest, "Accept": "text/event-stream",
                "Referer": f"{markco.url}/u/{alice.id}/"})
            assert response.status_code == 403, (path, dest)
            assert response.json()["error"]["code"] == "editor_initiated"
