"""The authorisation matrix of `/u/<owner>/`: who reaches which editor, over HTTP and WebSocket.

The real daemon with the real auth plugin and policy; each user's editor is a stand-in
(`echo_editor.EchoEditor`) that reports which editor it is and what identity headers it got,
so every cell checks both the answer and that the request reached THAT owner's editor (or none
at all). Compute is `fake_compute.FakeCompute` (every editor ready). The runtime-front column
of the matrix needs real runtimes: it is in `test_runtime_front.py`.

The cast: alice, bob and carol own editors; bob holds an `editor` grant on alice (a
collaborator), carol a `viewer` grant on alice (pages only, never the editor); root is an admin
who explicitly entered alice's editor (and nobody else's), admin2 an admin who entered nothing;
eve is a user with no relation to anyone; plus anonymous callers, alice's API token (scope
`user`), an `events:read`-only token of alice, and an `admin`-scoped token of root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from markco_trio.records import User

from .conftest import NAVIGATE, XHR, Plane, ws_status


@dataclass
class Caller:
    """Who calls, and how they present themselves."""

    name: str
    headers: dict[str, str]
    user: User | None


@dataclass
class Cast:
    plane: Plane
    owners: dict[str, User]
    callers: list[Caller]
    allowed: dict[tuple[str, str], str]  # (caller, owner) -> the role the editor must see


@pytest.fixture
async def cast(plane: Plane) -> Cast:
    alice, bob, carol = [await plane.user(n) for n in ("alice", "bob", "carol")]
    root = await plane.user("root", admin=True, editor=False)
    admin2 = await plane.user("admin2", admin=True, editor=False)
    eve = await plane.user("eve", editor=False)
    await plane.grant(alice, bob, "editor")
    await plane.grant(alice, carol, "viewer")
    root_session = await plane.session(root)
    plane.authority.grant_admin_entry(root_session, alice.id)

    def session_caller(name: str, user: User, token: str) -> Caller:
        return Caller(name, plane.cookie(token), user)

    callers = [
        session_caller("alice", alice, await plane.session(alice)),
        session_caller("bob", bob, await plane.session(bob)),
        session_caller("carol", carol, await plane.session(carol)),
        session_caller("root (entered alice)", root, root_session),
        session_caller("admin2 (entered nobody)", admin2, await plane.session(admin2)),
        session_caller("eve", eve, await plane.session(eve)),
        Caller("anonymous", {}, None),
        Caller("a made-up session", plane.cookie("A" * 43), None),
        Caller("alice's token", {"Authorization": f"Bearer {await plane.api_token(alice)}"},
               alice),
        Caller("alice's events:read token",
               {"Authorization": f"Bearer {await plane.api_token(alice, ('events:read',))}"},
               alice),
        Caller("root's admin token",
               {"Authorization": f"Bearer {await plane.api_token(root, ('admin', 'user'))}"},
               root),
    ]
    allowed = {
        ("alice", "alice"): "owner",
        ("bob", "bob"): "owner",
        ("bob", "alice"): "collaborator",
        ("carol", "carol"): "owner",
        ("root (entered alice)", "alice"): "admin",
        ("alice's token", "alice"): "owner",
    }
    return Cast(plane, {"alice": alice, "bob": bob, "carol": carol}, callers, allowed)


def refusal_for(caller: Caller) -> int:
    """What a refused caller gets from an XHR: 401 without valid credentials, else 404."""
    return 401 if caller.user is None else 404


def check_reached(problems: list[str], cell: str, report: dict[str, Any], owner: str,
                  caller: Caller, role: str) -> None:
    headers: dict[str, list[str]] = {}
    for name, value in report["headers"]:
        headers.setdefault(name, []).append(value)
    assert caller.user is not None
    if report["editor"] != owner:
        problems.append(f"{cell}: reached {report['editor']}'s editor")
    if headers.get("x-markco-user") != [caller.user.id]:
        problems.append(f"{cell}: X-Markco-User {headers.get('x-markco-user')}")
    if headers.get("x-markco-role") != [role]:
        problems.append(f"{cell}: X-Markco-Role {headers.get('x-markco-role')}")
    cookie = " ".join(headers.get("cookie", []))
    if "markco_session" in cookie or "authorization" in headers:
        problems.append(f"{cell}: a markco credential reached the editor")


async def test_http_every_allowed_cell_works_and_every_other_is_refused(cast: Cast) -> None:
    plane = cast.plane
    client = plane.client()
    problems: list[str] = []
    for caller in cast.callers:
        for owner_name, owner in cast.owners.items():
            cell = f"{caller.name} -> {owner_name} (HTTP)"
            response = await client.get(f"/u/{owner.id}/whoami",
                                        headers={**caller.headers, **XHR})
            role = cast.allowed.get((caller.name, owner_name))
            if role is not None:
                if response.status_code != 200:
                    problems.append(f"{cell}: {response.status_code} {response.text[:200]}")
                    continue
                check_reached(problems, cell, response.json(), owner_name, caller, role)
            elif response.status_code != refusal_for(caller):
                problems.append(f"{cell}: {response.status_code}, expected "
                                f"{refusal_for(caller)}")
    assert problems == []
    # Refusals reached no editor at all: each editor saw exactly its allowed callers.
    for owner_name, owner in cast.owners.items():
        expected = sum(1 for (_, o) in cast.allowed if o == owner_name)
        assert len(plane.editors[owner.id].requests) == expected, owner_name


async def test_websocket_every_allowed_cell_works_and_every_other_is_refused(
        cast: Cast) -> None:
    plane = cast.plane
    problems: list[str] = []
    for caller in cast.callers:
        for owner_name, owner in cast.owners.items():
            cell = f"{caller.name} -> {owner_name} (WebSocket)"
            status, hello = await ws_status(plane, f"/u/{owner.id}/ws", caller.headers)
            role = cast.allowed.get((caller.name, owner_name))
            if role is not None:
                if status != 101 or hello is None:
                    problems.append(f"{cell}: {status}")
                    continue
                check_reached(problems, cell, hello, owner_name, caller, role)
            elif status != refusal_for(caller):
                problems.append(f"{cell}: {status}, expected {refusal_for(caller)}")
    assert problems == []
    for owner_name, owner in cast.owners.items():
        expected = sum(1 for (_, o) in cast.allowed if o == owner_name)
        assert plane.editors[owner.id].websockets == expected, owner_name


async def test_an_anonymous_navigation_is_sent_to_the_login_page(cast: Cast) -> None:
    client = cast.plane.client()
    alice = cast.owners['alice'].id
    response = await client.get(f"/u/{alice}/", headers=NAVIGATE)
    assert response.status_code == 302
    # ...and comes back to the editor once logged in (tests/ops/test_login_next.py).
    assert response.headers["location"] == f"{cast.plane.url}/login?next=%2Fu%2F{alice}%2F"


async def test_a_refused_navigation_looks_the_same_as_a_missing_user(cast: Cast) -> None:
    client = cast.plane.client()
    eve = next(c for c in cast.callers if c.name == "eve")
    forbidden = await client.get(f"/u/{cast.owners['alice'].id}/",
                                 headers={**eve.headers, **NAVIGATE})
    missing = await client.get("/u/nobody-at-all/", headers={**eve.headers, **NAVIGATE})
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.content == missing.content
    assert "text/html" in forbidden.headers["content-type"]


async def test_a_websocket_must_come_from_a_markco_page(cast: Cast) -> None:
    plane = cast.plane
    alice = cast.callers[0]
    path = f"/u/{cast.owners['alice'].id}/ws"
    assert (await ws_status(plane, path, alice.headers))[0] == 101
    assert (await ws_status(plane, path, alice.headers, origin=None))[0] == 403
    assert (await ws_status(plane, path, alice.headers, origin="https://evil.example"))[0] == 403
    assert (await ws_status(plane, path, alice.headers, origin="null"))[0] == 403
    cross_site = {**alice.headers, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "websocket"}
    assert (await ws_status(plane, path, cross_site))[0] == 403
    # An API token's client need not be a browser: no Origin is fine, a foreign one is not.
    token = next(c for c in cast.callers if c.name == "alice's token")
    assert (await ws_status(plane, path, token.headers, origin=None))[0] == 101
    assert (await ws_status(plane, path, token.headers, origin="https://evil.example"))[0] == 403


async def test_a_state_changing_request_from_another_origin_is_refused(cast: Cast) -> None:
    client = cast.plane.client()
    alice = cast.callers[0]
    url = f"/u/{cast.owners['alice'].id}/upload"
    ok = await client.post(url, content=b"x", headers={**alice.headers, "Origin": cast.plane.url})
    assert ok.status_code == 200
    evil = await client.post(url, content=b"x",
                             headers={**alice.headers, "Origin": "https://evil.example"})
    assert evil.status_code == 403
    cross = await client.post(url, content=b"x", headers={
        **alice.headers, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert cross.status_code == 403  # a cross-site form POST is not a GET navigation


async def test_a_revoked_session_stops_at_once(cast: Cast) -> None:
    plane = cast.plane
    client = plane.client()
    alice = cast.owners["alice"]
    token = await plane.session(alice)
    url = f"/u/{alice.id}/whoami"
    assert (await client.get(url, headers={**plane.cookie(token), **XHR})).status_code == 200
    await plane.authority.close_session(token)
    assert (await client.get(url, headers={**plane.cookie(token), **XHR})).status_code == 401


async def test_a_revoked_grant_ends_the_collaboration(cast: Cast) -> None:
    plane = cast.plane
    alice, bob = cast.owners["alice"], cast.owners["bob"]
    client = plane.client()
    headers = {**next(c for c in cast.callers if c.name == "bob").headers, **XHR}
    assert (await client.get(f"/u/{alice.id}/x", headers=headers)).status_code == 200
    [grant] = [g for g in await plane.storage.list_grants(user_id=bob.id)
               if g.owner_id == alice.id]
    assert await plane.storage.revoke_grant(grant.id, owner_id=alice.id,
                                            now=plane.daemon.ctx.clock.now())
    plane.authority.evict_user(bob.id)  # (what the invites API does after a revocation)
    assert (await client.get(f"/u/{alice.id}/x", headers=headers)).status_code == 404


# ------------------------------------------------------------------------------ smuggling


async def test_dot_segments_and_encoded_separators_never_change_the_editor(cast: Cast) -> None:
    plane = cast.plane
    bob = next(c for c in cast.callers if c.name == "bob")
    carol_id, bob_id = cast.owners["carol"].id, cast.owners["bob"].id
    client = plane.client()
    for path in (f"/u/{bob_id}/../{carol_id}/whoami", f"/u/{bob_id}/%2e%2e/{carol_id}/whoami",
                 f"/u/{bob_id}/..%2f{carol_id}/whoami", f"/u/{bob_id}%2f..%2f{carol_id}/",
                 f"//u/{carol_id}/whoami", f"/u//{carol_id}/whoami",
                 f"/u/{bob_id}%2f{carol_id}/whoami", f"/api/../u/{carol_id}/whoami"):
        response = await client.get(path, headers={**bob.headers, **XHR})
        assert response.status_code in (400, 404), path
    assert plane.editors[cast.owners["carol"].id].requests == []
    assert plane.editors[bob_id].requests == []


async def test_a_second_prefix_stays_inside_the_first_editor(cast: Cast) -> None:
    plane = cast.plane
    bob = next(c for c in cast.callers if c.name == "bob")
    carol_id, bob_id = cast.owners["carol"].id, cast.owners["bob"].id
    response = await plane.client().get(f"/u/{bob_id}/u/{carol_id}/whoami",
                                        headers={**bob.headers, **XHR})
    assert response.status_code == 200
    assert response.json()["editor"] == "bob"
    assert response.json()["path"] == f"/u/{carol_id}/whoami"


async def test_forged_identity_headers_are_replaced(cast: Cast) -> None:
    plane = cast.plane
    bob = next(c for c in cast.callers if c.name == "bob")
    alice_id, bob_id = cast.owners["alice"].id, cast.owners["bob"].id
    forged = {"X-Markco-User": alice_id, "X-Markco-Role": "admin",
              "X-Forwarded-Prefix": f"/u/{alice_id}", "X-Forwarded-Host": "evil.example",
              "X-Forwarded-For": "10.0.0.1"}
    response = await plane.client().get(f"/u/{bob_id}/whoami",
                                        headers={**bob.headers, **XHR, **forged})
    headers: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        headers.setdefault(name, []).append(value)
    assert headers["x-markco-user"] == [bob_id]
    assert headers["x-markco-role"] == ["owner"]
    assert headers["x-forwarded-prefix"] == [f"/u/{bob_id}"]
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-forwarded-host"] != ["evil.example"]
    # A forged identity gets nobody in either.
    eve = next(c for c in cast.callers if c.name == "eve")
    response = await plane.client().get(f"/u/{alice_id}/whoami",
                                        headers={**eve.headers, **XHR, **forged})
    assert response.status_code == 404


async def test_the_host_header_decides_nothing(cast: Cast) -> None:
    plane = cast.plane
    alice = cast.callers[0]
    eve = next(c for c in cast.callers if c.name == "eve")
    alice_id = cast.owners["alice"].id
    client = plane.client()
    for host in ("evil.example", f"127.0.0.1:{plane.port}", "localhost"):
        ok = await client.get(f"/u/{alice_id}/whoami", headers={**alice.headers, **XHR,
                                                              "Host": host})
        assert ok.status_code == 200 and ok.json()["editor"] == "alice"
        refused = await client.get(f"/u/{alice_id}/whoami", headers={**eve.headers, **XHR,
                                                                   "Host": host})
        assert refused.status_code == 404


async def test_cookie_injection_cannot_borrow_a_session(cast: Cast) -> None:
    plane = cast.plane
    alice_id = cast.owners["alice"].id
    alice_token = cast.callers[0].headers["Cookie"].partition("=")[2]
    eve_token = next(c for c in cast.callers if c.name == "eve").headers["Cookie"].partition(
        "=")[2]
    client = plane.client()
    url = f"/u/{alice_id}/whoami"
    # The first session cookie is the one that counts (the most specific one, for a browser).
    eve_first = {"Cookie": f"markco_session={eve_token}; markco_session={alice_token}", **XHR}
    assert (await client.get(url, headers=eve_first)).status_code == 404
    # A cookie with a look-alike name is not the session.
    lookalike = {"Cookie": f"xmarkco_session={alice_token}; Markco_Session={alice_token}",
                 **XHR}
    assert (await client.get(url, headers=lookalike)).status_code == 401
    # Two Cookie headers are read as one, in order.
    response = await client.get(url, headers=[("Cookie", "theme=dark"),
                                              ("Cookie", f"markco_session={alice_token}"),
                                              *XHR.items()])
    assert response.status_code == 200
    forwarded = [v for n, v in response.json()["headers"] if n == "cookie"]
    assert forwarded == ["theme=dark"]


async def test_an_api_token_is_the_credential_when_present(cast: Cast) -> None:
    plane = cast.plane
    alice_id = cast.owners["alice"].id
    token = next(c for c in cast.callers if c.name == "alice's token").headers
    eve = next(c for c in cast.callers if c.name == "eve").headers
    client = plane.client()
    both = await client.get(f"/u/{alice_id}/whoami", headers={**token, **eve, **XHR})
    assert both.status_code == 200
    bad = {"Authorization": "Bearer mkt_" + "x" * 43}
    alice_cookie = cast.callers[0].headers
    assert (await client.get(f"/u/{alice_id}/whoami",
                             headers={**bad, **alice_cookie, **XHR})).status_code == 401
    # An Authorization that is not markco's passes through to the editor untouched.
    basic = await client.get(f"/u/{alice_id}/whoami",
                             headers={**alice_cookie, **XHR, "Authorization": "Basic eDp5"})
    assert ["authorization", "Basic eDp5"] in basic.json()["headers"]


async def test_smuggling_shapes_never_reach_an_editor(cast: Cast) -> None:
    import trio

    plane = cast.plane
    alice_id = cast.owners["alice"].id
    cookie = cast.callers[0].headers["Cookie"]
    shapes = [
        f"POST /u/{alice_id}/upload HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n"
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        f"POST /u/{alice_id}/upload HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n"
        "Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
        f"GET /u/{alice_id}/whoami HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n"
        " X-Folded: yes\r\n\r\n",
        f"GET /u/{alice_id}/whoami HTTP/1.1\nHost: h\nCookie: {cookie}\n\n",
    ]
    for shape in shapes:
        stream = await trio.open_tcp_stream("127.0.0.1", plane.port)
        async with stream:
            await stream.send_all(shape.encode())
            answer = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 "), (shape, answer[:100])
    assert plane.editors[alice_id].requests == []


async def test_an_editor_cannot_plant_markcos_cookies(cast: Cast) -> None:
    plane = cast.plane
    alice = cast.callers[0]
    alice_id = cast.owners["alice"].id
    response = await plane.client().get(f"/u/{alice_id}/cookies", headers={**alice.headers,
                                                                          **XHR})
    assert response.status_code == 200
    cookies = response.headers.get_list("set-cookie")
    assert cookies == [
        f"theme=dark; HttpOnly; Path=/u/{alice_id}/",
        f"prefs=1; SameSite=Strict; Path=/u/{alice_id}/settings",
        f"plain=1; Path=/u/{alice_id}/",
    ]
    assert "service-worker-allowed" not in response.headers
    assert "clear-site-data" not in response.headers
    assert response.headers["x-editor-header"] == "kept"
