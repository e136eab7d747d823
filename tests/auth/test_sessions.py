"""Sessions: cookie secrecy, expiry and sliding renewal, revocation (here and from the CLI in
another process), the in-memory cache, and the Origin check of state-changing requests."""

from __future__ import annotations

import hashlib

import httpx
import trio
from trio_websocket import open_websocket_url

from markco_trio.builtin.auth.authority import LOOKUP_NEEDED, SessionAuthority
from markco_trio.builtin.auth.options import AuthOptions
from markco_trio.clock import ManualClock

from .conftest import (
    Markco,
    StartMarkco,
    eventually,
    markco_command,
    set_cookies,
    subprocess_env,
)


def session_cookie(client: httpx.AsyncClient) -> str:
    token = client.cookies.get("markco_session")
    assert token
    return token


async def me_status(client: httpx.AsyncClient) -> int:
    return (await client.get("/api/v1/me")).status_code


async def test_the_database_holds_no_raw_token(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    created = await browser.post("/api/v1/tokens", headers=markco.origin(),
                                 json={"name": "ci", "scopes": ["user"]})
    invite = await browser.post("/api/v1/invites", headers=markco.origin(),
                                json={"project": "thesis", "role": "viewer"})
    secrets = [session_cookie(browser), created.json()["token"], invite.json()["token"]]
    user = await markco.user("alice")
    from markco_trio.builtin.auth.login_links import issue_login_link

    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=5)
    secrets.append(link.rsplit("/", 1)[1])
    stored = b"".join(p.read_bytes() for p in markco.db_path.parent.glob("markco.db*"))
    for secret in secrets:
        assert secret.encode() not in stored
        assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored  # scan works


async def test_an_expired_session_is_refused_and_its_cookie_removed(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(auth="session_ttl_days = 1\n")
    browser = await markco.login_as("alice")
    assert await me_status(browser) == 200
    markco.clock.advance(86400 + 1)
    response = await browser.get("/dashboard")
    assert response.status_code == 303 and response.headers["location"].endswith("/login")
    assert "Max-Age=0" in set_cookies(response)["markco_session"]
    assert await me_status(browser) == 401


async def test_use_slides_the_expiry_forward(start_markco: StartMarkco) -> None:
    markco = await start_markco(auth="session_ttl_days = 1\nrenew_after_seconds = 60\n")
    browser = await markco.login_as("alice")
    for _ in range(3):  # used every 20 hours, never idle for a day: still logged in
        markco.clock.advance(20 * 3600)
        assert await me_status(browser) == 200
        await markco.authority.flush_renewals()  # what `auth-renewals` does every 30 s


async def test_no_session_outlives_the_maximum_age(start_markco: StartMarkco) -> None:
    markco = await start_markco(
        auth="session_ttl_days = 1\nsession_max_days = 2\nrenew_after_seconds = 60\n")
    browser = await markco.login_as("alice")
    for _ in range(2):
        markco.clock.advance(20 * 3600)
        assert await me_status(browser) == 200
        await markco.authority.flush_renewals()
    markco.clock.advance(9 * 3600)  # 49 hours after login
    assert await me_status(browser) == 401


async def test_renewals_are_written_in_batches_not_per_request(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(auth="renew_after_seconds = 60\n")
    browser = await markco.login_as("alice")
    user = await markco.user("alice")
    [before] = await markco.storage.list_sessions(user.id, now=markco.clock.now())
    markco.clock.advance(120)
    for _ in range(5):
        assert await me_status(browser) == 200
    [unwritten] = await markco.storage.list_sessions(user.id, now=markco.clock.now())
    assert unwritten.expires_at == before.expires_at  # the hot path wrote nothing
    assert markco.authority.statistics().pending_renewals == 1
    assert await markco.authority.flush_renewals() == 1
    [after] = await markco.storage.list_sessions(user.id, now=markco.clock.now())
    assert after.expires_at == before.expires_at + 120
    assert after.last_seen_at == markco.clock.now()


async def test_logout_ends_the_session_and_clears_the_cookie(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    stolen = session_cookie(browser)
    response = await browser.post("/logout", headers=markco.origin())
    assert response.status_code == 303
    assert "Max-Age=0" in set_cookies(response)["markco_session"]
    thief = markco.client(cookies={"markco_session": stolen})
    assert await me_status(thief) == 401
    assert len(await markco.events("auth.logout")) == 1


async def test_a_tampered_cookie_is_refused(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    token = session_cookie(browser)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for forged in (flipped, token + "x", token[:20], "", "../../etc"):
        client = markco.client(cookies={"markco_session": forged})
        assert await me_status(client) == 401, forged


async def test_logout_all_ends_every_session_of_the_user(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    laptop, phone = await markco.login_as("alice"), await markco.login_as("alice")
    other = await markco.login_as("bob")
    response = await phone.post("/logout-all", headers=markco.origin())
    assert response.status_code == 303
    assert await me_status(laptop) == 401
    assert await me_status(phone) == 401
    assert await me_status(other) == 200
    [revoked] = await markco.events("auth.session_revoked")
    assert revoked.data["count"] == 2


async def test_a_revocation_by_the_cli_reaches_the_daemon_within_the_poll_interval(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()  # revocation_poll_seconds = 0.2
    browser = await markco.login_as("alice")
    assert await me_status(browser) == 200
    loads = markco.authority.statistics().loads
    assert await me_status(browser) == 200
    assert markco.authority.statistics().loads == loads  # served from the cache
    result = await trio.run_process(
        markco_command("sessions", "revoke-all", "alice", "--config", str(markco.config_path)),
        env=subprocess_env(), capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert b"revoked 1 session(s) of alice" in result.stdout
    async def refused() -> bool:
        return await me_status(browser) == 401

    # The poll interval is 0.2 s; the rest is slack for a loaded 2-core machine.
    assert await eventually(refused, within=5, step=0.02) < 0.2 + 1.0


async def test_a_new_login_ends_the_session_the_browser_had(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    first = session_cookie(browser)
    user = await markco.user("alice")
    from markco_trio.builtin.auth.login_links import issue_login_link

    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=5)
    assert (await browser.get(link)).status_code == 303
    assert session_cookie(browser) != first
    assert await me_status(markco.client(cookies={"markco_session": first})) == 401


async def test_tokens_in_the_query_string_are_ignored(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    anonymous = markco.client()
    for name in ("token", "session", "access_token", "markco_session"):
        response = await anonymous.get("/api/v1/me", params={name: session_cookie(browser)})
        assert response.status_code == 401


async def test_state_changes_need_an_origin_of_markco(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    for headers in ({}, {"Origin": "https://evil.example"}, {"Origin": "null"},
                    {"Referer": "https://evil.example/page"},
                    {"Origin": markco.url.replace("127.0.0.1", "localhost")}):
        refused = await browser.post("/logout-all", headers=headers)
        assert refused.status_code == 403, headers
        assert "did not come from a markco page" in refused.text
    assert await me_status(browser) == 200
    api = await browser.delete("/api/v1/sessions")
    assert api.status_code == 403 and api.json()["error"]["code"] == "bad_origin"
    via_referer = await browser.post("/logout", headers={"Referer": markco.url + "/dashboard"})
    assert via_referer.status_code == 303
    # The same decision, for the front door's WebSocket handshakes.
    assert markco.authority.origin_allowed(markco.url)
    assert not markco.authority.origin_allowed("https://evil.example")


async def test_trusted_origins_may_post(start_markco: StartMarkco) -> None:
    markco = await start_markco(auth='trusted_origins = ["https://notebooks.example"]\n')
    browser = await markco.login_as("alice")
    response = await browser.post("/logout", headers={"Origin": "https://notebooks.example"})
    assert response.status_code == 303


async def test_bearer_token_requests_need_no_origin(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    token = (await browser.post("/api/v1/tokens", headers=markco.origin(),
                                json={"name": "script", "scopes": ["user"]})).json()["token"]
    script = markco.client(headers={"Authorization": f"Bearer {token}"})
    response = await script.post("/api/v1/invites", json={"project": "p1", "role": "viewer"})
    assert response.status_code == 201


async def test_the_cache_answers_from_memory_after_one_lookup(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    header = f"markco_session={session_cookie(browser)}"
    authority = markco.authority
    authority.clear()
    assert authority.principal_for_cookie_nowait(header) is LOOKUP_NEEDED
    principal = await authority.principal_for_cookie(header)
    assert principal is not None and principal.username == "alice" and principal.scopes is None
    loads = authority.statistics().loads
    for _ in range(100):
        assert authority.principal_for_cookie_nowait(header) == principal
    assert authority.statistics().loads == loads
    assert authority.principal_for_cookie_nowait(None) is None
    assert authority.principal_for_cookie_nowait("other=1") is None


async def test_concurrent_lookups_of_one_cookie_read_storage_once(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    header = f"markco_session={session_cookie(browser)}"
    authority = markco.authority
    authority.clear()
    loads = authority.statistics().loads
    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(authority.principal_for_cookie, header)
    assert authority.statistics().loads == loads + 1


async def test_an_unknown_cookie_is_remembered_as_unknown(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    header = "markco_session=" + "A" * 43
    authority = markco.authority
    assert await authority.principal_for_cookie(header) is None
    loads = authority.statistics().loads
    for _ in range(10):
        assert authority.principal_for_cookie_nowait(header) is None
        assert await authority.principal_for_cookie(header) is None
    assert authority.statistics().loads == loads


def test_on_https_the_cookie_is_secure_and_host_prefixed() -> None:
    authority = SessionAuthority(storage=None, clock=ManualClock(),  # type: ignore[arg-type]
                                 options=AuthOptions(), secure=True)
    header = authority.set_cookie_header("t" * 43)
    assert header.startswith("__Host-markco_session=" + "t" * 43 + ";")
    assert "; Secure" in header and "; HttpOnly" in header and "; Path=/" in header
    assert "Domain" not in header
    assert authority.clear_cookie_header().startswith("__Host-markco_session=;")


async def test_https_public_url_sets_a_secure_cookie_end_to_end(
        start_markco: StartMarkco) -> None:
    markco: Markco = await start_markco(public_url="https://markco.example")
    user = await markco.user("alice")
    from markco_trio.builtin.auth.login_links import issue_login_link

    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=5)
    response = await markco.client().get(link)
    assert response.headers["location"] == "https://markco.example/dashboard"
    cookie = set_cookies(response)["__Host-markco_session"]
    assert "; Secure" in cookie


async def test_websockets_are_authenticated_and_origin_checked(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(modules=("auth.ws_probe",))
    browser = await markco.login_as("alice")
    cookie = (b"Cookie", f"markco_session={session_cookie(browser)}".encode())
    url = markco.url.replace("http://", "ws://") + "/probe/ws"

    async def who(*headers: tuple[bytes, bytes]) -> str:
        async with open_websocket_url(url, extra_headers=list(headers)) as ws:
            return str(await ws.get_message())

    async def handshake_refusal(headers: dict[str, str]) -> tuple[int, str]:
        # A refused handshake checked with a plain request: trio-websocket leaks the socket
        # of a rejected connection (its ConnectionRejected path never closes the stream).
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        response = await markco.client().get("/probe/ws", headers=upgrade | headers)
        return response.status_code, response.json()["error"]["code"]

    assert await who(cookie, (b"Origin", markco.url.encode())) == "alice"
    assert await who((b"Origin", markco.url.encode())) == "anonymous"
    cookie_header = {"Cookie": cookie[1].decode()}
    refused = (403, "bad_origin")
    assert await handshake_refusal(cookie_header | {"Origin": "https://evil.example"}) == refused
    assert await handshake_refusal(cookie_header) == refused
