"""Per-user editor origins (`[server] editor_domain`, issue 9 item 5b) over real HTTP on
loopback: requests name `<userId>.u.test` in their Host header and reach the daemon at
127.0.0.1 (no DNS). The main origin is the public URL, `http://127.0.0.1:<port>`.

The handshake: the main origin's `/editor-auth` turns a live session into a one-time code for
one editor origin; that origin's `/_markco/editor-auth` turns the code into its own cookie.
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
import trio

from markco_trio.clock import ManualClock
from markco_trio.records import User

from .conftest import NAVIGATE, XHR, Plane, RawWebSocket, StartPlane

DOMAIN = "u.test"
REVOKED = (8, b"\x03\xf0access was revoked")


@pytest.fixture
async def plane(start_plane: StartPlane) -> Plane:
    return await start_plane(server=f'editor_domain = "{DOMAIN}"')


def host(plane: Plane, user: User) -> str:
    return f"{user.id}.{DOMAIN}:{plane.port}"


def on(plane: Plane, user: User, **headers: str) -> dict[str, str]:
    """Headers of a request to `user`'s editor origin."""
    return {"Host": host(plane, user), **headers}


async def code_for(plane: Plane, client: httpx.AsyncClient, token: str, owner: User,
                   next_path: str | None = None) -> httpx.Response:
    """The main origin's answer to `/editor-auth` for `owner`'s editor with session `token`."""
    next_path = next_path or f"/u/{owner.id}/"
    return await client.get(f"/editor-auth?user={owner.id}&next={quote(next_path, safe='')}",
                            headers={**plane.cookie(token), **NAVIGATE})


def code_of(answer: httpx.Response) -> str:
    assert answer.status_code == 303, answer.text
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


async def redeem(plane: Plane, client: httpx.AsyncClient, owner: User, code: str,
                 next_path: str | None = None) -> httpx.Response:
    next_path = next_path or f"/u/{owner.id}/"
    return await client.get(
        f"/_markco/editor-auth?code={quote(code, safe='')}&next={quote(next_path, safe='')}",
        headers=on(plane, owner, **NAVIGATE))


async def editor_cookie(plane: Plane, token: str, owner: User) -> dict[str, str]:
    """The Cookie header of `owner`'s editor origin after a handshake with session `token`."""
    client = plane.client()
    answer = await redeem(plane, client, owner, code_of(await code_for(plane, client, token,
                                                                        owner)))
    assert answer.status_code == 303, answer.text
    pair = answer.headers["set-cookie"].split(";", 1)[0]
    return {"Cookie": pair}


async def test_the_main_origin_redirects_an_editor_path_to_the_editor_origin(
        plane: Plane) -> None:
    alice = await plane.user("alice")
    answer = await plane.client().get(f"/u/{alice.id}/notes.md?x=1", headers=NAVIGATE)
    assert answer.status_code == 302
    assert answer.headers["location"] == (
        f"http://{alice.id}.{DOMAIN}:{plane.port}/u/{alice.id}/notes.md?x=1")


async def test_the_main_origin_never_forwards_to_an_editor(plane: Plane) -> None:
    alice = await plane.user("alice")
    token = await plane.session(alice)
    answer = await plane.client().post(f"/u/{alice.id}/save", content=b"x",
                                       headers={**plane.cookie(token), **XHR})
    assert answer.status_code == 404
    assert plane.editors[alice.id].requests == []


async def test_a_navigation_without_the_editor_cookie_starts_the_handshake(
        plane: Plane) -> None:
    alice = await plane.user("alice")
    answer = await plane.client().get(f"/u/{alice.id}/a?b=c", headers=on(plane, alice,
                                                                          **NAVIGATE))
    assert answer.status_code == 302
    assert answer.headers["location"] == (
        f"{plane.url}/editor-auth?user={alice.id}&next={quote(f'/u/{alice.id}/a?b=c', safe='')}")


async def test_the_main_session_cookie_does_not_open_an_editor_origin(plane: Plane) -> None:
    alice = await plane.user("alice")
    token = await plane.session(alice)
    answer = await plane.client().get(f"/u/{alice.id}/", headers=on(
        plane, alice, **plane.cookie(token), **XHR))
    assert answer.status_code == 401
    assert plane.editors[alice.id].requests == []


async def test_the_handshake_sets_a_host_only_editor_cookie_and_lands_in_the_editor(
        plane: Plane) -> None:
    alice = await plane.user("alice")
    token = await plane.session(alice)
    client = plane.client()
    to_editor = await code_for(plane, client, token, alice, f"/u/{alice.id}/notes.md")
    assert to_editor.headers["location"].startswith(
        f"http://{alice.id}.{DOMAIN}:{plane.port}/_markco/editor-auth?code=")
    assert to_editor.headers["referrer-policy"] == "no-referrer"
    assert token not in to_editor.headers["location"]
    landed = await redeem(plane, client, alice, code_of(to_editor), f"/u/{alice.id}/notes.md")
    assert landed.status_code == 303
    assert landed.headers["location"] == f"/u/{alice.id}/notes.md"
    assert landed.headers["referrer-policy"] == "no-referrer"
    cookie = landed.headers["set-cookie"]
    name, _, value = cookie.split(";", 1)[0].partition("=")
    attributes = [a.strip().lower() for a in cookie.split(";")[1:]]
    assert name == "markco_editor" and name != plane.authority.cookie_name
    assert value != token
    assert {"httponly", "samesite=lax", "path=/"} <= set(attributes)
    assert not any(a.startswith("domain") for a in attributes)
    page = await client.get(f"/u/{alice.id}/notes.md", headers=on(
        plane, alice, Cookie=f"{name}={value}", **NAVIGATE))
    assert page.status_code == 200 and page.json()["path"] == "/notes.md"


async def test_the_editor_sees_a_request_from_an_editor_origin_as_on_one_origin(
        plane: Plane) -> None:
    alice = await plane.user("alice")
    cookie = await editor_cookie(plane, await plane.session(alice), alice)
    await plane.client().post(f"/u/{alice.id}/save", content=b"x", headers=on(
        plane, alice, Origin=f"http://{host(plane, alice)}", **cookie, **XHR))
    _, _, headers = plane.editors[alice.id].last()
    assert headers["host"] == [f"127.0.0.1:{plane.port}"]
    assert headers["origin"] == [plane.url]
    assert headers["x-forwarded-host"] == [host(plane, alice)]
    assert headers["x-markco-user"] == [alice.id]
    assert "cookie" not in headers  # the editor origin's cookie is markco's own


async def test_a_code_works_once(plane: Plane) -> None:
    alice = await plane.user("alice")
    client = plane.client()
    code = code_of(await code_for(plane, client, await plane.session(alice), alice))
    assert (await redeem(plane, client, alice, code)).status_code == 303
    again = await redeem(plane, client, alice, code)
    assert again.status_code == 400 and "set-cookie" not in again.headers


async def test_an_expired_code_is_refused(start_plane: StartPlane) -> None:
    clock = ManualClock()
    plane = await start_plane(server=f'editor_domain = "{DOMAIN}"', clock=clock)
    alice = await plane.user("alice")
    client = plane.client()
    code = code_of(await code_for(plane, client, await plane.session(alice), alice))
    clock.advance(31)
    answer = await redeem(plane, client, alice, code)
    assert answer.status_code == 400 and "set-cookie" not in answer.headers


async def test_a_code_for_another_users_editor_origin_is_refused(plane: Plane) -> None:
    alice, bob = await plane.user("alice"), await plane.user("bob")
    client = plane.client()
    code = code_of(await code_for(plane, client, await plane.session(bob), bob))
    answer = await redeem(plane, client, alice, code, f"/u/{alice.id}/")
    assert answer.status_code == 400 and "set-cookie" not in answer.headers


@pytest.mark.parametrize("next_path", ["//evil.example/", "https://evil.example/",
                                       "/\\evil.example", "/u/x/\r\nSet-Cookie: a=b"])
async def test_an_external_next_is_refused_by_the_editor_origin(
        plane: Plane, next_path: str) -> None:
    alice = await plane.user("alice")
    client = plane.client()
    code = code_of(await code_for(plane, client, await plane.session(alice), alice))
    answer = await redeem(plane, client, alice, code, next_path)
    assert answer.status_code == 400 and "set-cookie" not in answer.headers


async def test_an_external_next_is_refused_by_the_main_origin(plane: Plane) -> None:
    alice = await plane.user("alice")
    answer = await code_for(plane, plane.client(), await plane.session(alice), alice,
                            "//evil.example/")
    assert answer.status_code == 400 and "location" not in answer.headers


async def test_another_users_session_gets_no_code_for_an_editor(plane: Plane) -> None:
    alice, bob = await plane.user("alice"), await plane.user("bob")
    answer = await code_for(plane, plane.client(), await plane.session(bob), alice)
    assert answer.status_code == 404 and "location" not in answer.headers


async def test_a_collaborator_gets_a_code_for_the_owners_editor(plane: Plane) -> None:
    alice, bob = await plane.user("alice"), await plane.user("bob")
    await plane.grant(alice, bob, "editor")
    cookie = await editor_cookie(plane, await plane.session(bob), alice)
    page = await plane.client().get(f"/u/{alice.id}/", headers=on(plane, alice, **cookie,
                                                                   **XHR))
    assert page.status_code == 200
    assert ["x-markco-user", bob.id] in page.json()["headers"]


async def test_an_editor_cookie_on_another_users_host_is_refused(plane: Plane) -> None:
    alice, bob = await plane.user("alice"), await plane.user("bob")
    bobs = await editor_cookie(plane, await plane.session(bob), bob)
    answer = await plane.client().get(f"/u/{alice.id}/", headers=on(plane, alice, **bobs,
                                                                     **XHR))
    assert answer.status_code == 401
    assert plane.editors[alice.id].requests == []


async def test_an_editor_origin_serves_no_other_users_editor(plane: Plane) -> None:
    alice, bob = await plane.user("alice"), await plane.user("bob")
    await plane.grant(bob, alice, "editor")
    cookie = await editor_cookie(plane, await plane.session(alice), alice)
    answer = await plane.client().get(f"/u/{bob.id}/", headers=on(plane, alice, **cookie,
                                                                   **XHR))
    assert answer.status_code == 404
    assert plane.editors[bob.id].requests == []


@pytest.mark.parametrize("path", ["/api/v1/me", "/dashboard", "/admin", "/login",
                                  "/editor-auth"])
async def test_the_api_and_pages_do_not_answer_on_an_editor_origin(
        plane: Plane, path: str) -> None:
    alice = await plane.user("alice")
    cookie = await editor_cookie(plane, await plane.session(alice), alice)
    answer = await plane.client().get(path, headers=on(plane, alice, **cookie, **NAVIGATE))
    assert answer.status_code == 404


@pytest.mark.parametrize("name", ["evil.example", "a.b.u.test", "u.test", "UPPER_.u.test"])
async def test_an_unknown_host_is_not_routed(plane: Plane, name: str) -> None:
    alice = await plane.user("alice")
    answer = await plane.client().get(f"/u/{alice.id}/", headers={
        "Host": f"{name}:{plane.port}", **NAVIGATE})
    assert answer.status_code == 404
    assert plane.editors[alice.id].requests == []


async def test_health_checks_answer_on_any_host(plane: Plane) -> None:
    answer = await plane.client().get("/healthz", headers={"Host": "lb.internal"})
    assert answer.status_code == 200


async def test_logging_out_ends_the_editor_cookie(plane: Plane) -> None:
    alice = await plane.user("alice")
    token = await plane.session(alice)
    cookie = await editor_cookie(plane, token, alice)
    assert await plane.authority.close_session(token)
    answer = await plane.client().get(f"/u/{alice.id}/", headers=on(plane, alice, **cookie,
                                                                     **XHR))
    assert answer.status_code == 401


async def test_logging_out_everywhere_ends_the_editor_cookie(plane: Plane) -> None:
    alice = await plane.user("alice")
    cookie = await editor_cookie(plane, await plane.session(alice), alice)
    await plane.authority.close_user_sessions(alice.id)
    answer = await plane.client().get(f"/u/{alice.id}/", headers=on(plane, alice, **cookie,
                                                                     **XHR))
    assert answer.status_code == 401


# WebSockets on an editor origin.

async def open_ws(plane: Plane, owner: User, cookie: dict[str, str], *,
                  origin: str | None = None) -> tuple[int, RawWebSocket | None]:
    """A WebSocket handshake to `owner`'s editor origin (Origin: that origin by default)."""
    origin = origin or f"http://{host(plane, owner)}"
    lines = [f"GET /u/{owner.id}/ws HTTP/1.1", f"Host: {host(plane, owner)}",
             "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
             f"Origin: {origin}", *(f"{k}: {v}" for k, v in cookie.items())]
    stream = await trio.open_tcp_stream("127.0.0.1", plane.port)
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, data
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 101:
        await stream.aclose()
        return status, None
    ws = RawWebSocket(stream, rest)
    plane.websockets.append(ws)  # closed when the plane stops
    assert (await ws.recv())[0] == 1  # the editor's hello
    return status, ws


async def test_a_websocket_opens_with_the_editor_cookie(plane: Plane) -> None:
    alice = await plane.user("alice")
    cookie = await editor_cookie(plane, await plane.session(alice), alice)
    status, ws = await open_ws(plane, alice, cookie)
    assert status == 101 and ws is not None
    await ws.send(1, b"hi")
    assert await ws.recv() == (1, b"hi")


async def test_a_websocket_from_the_main_origin_to_an_editor_origin_is_refused(
        plane: Plane) -> None:
    alice = await plane.user("alice")
    cookie = await editor_cookie(plane, await plane.session(alice), alice)
    status, _ = await open_ws(plane, alice, cookie, origin=plane.url)
    assert status == 403


async def test_logging_out_closes_the_editor_origins_websocket(plane: Plane) -> None:
    alice = await plane.user("alice")
    token = await plane.session(alice)
    _, ws = await open_ws(plane, alice, await editor_cookie(plane, token, alice))
    assert ws is not None
    assert await plane.authority.close_session(token)
    with trio.fail_after(1.0):
        assert await ws.recv() == REVOKED


async def test_logging_out_everywhere_closes_the_editor_origins_websocket(
        plane: Plane) -> None:
    alice = await plane.user("alice")
    _, ws = await open_ws(plane, alice, await editor_cookie(plane, await plane.session(alice),
                                                            alice))
    assert ws is not None
    await plane.authority.close_user_sessions(alice.id)
    with trio.fail_after(1.0):
        assert await ws.recv() == REVOKED


async def test_a_page_load_without_fetch_metadata_starts_the_handshake(plane: Plane) -> None:
    alice = await plane.user("alice")
    answer = await plane.client().get(f"/u/{alice.id}/", headers=on(
        plane, alice, Accept="text/html,application/xhtml+xml"))
    assert answer.status_code == 302
    assert answer.headers["location"].startswith(f"{plane.url}/editor-auth?user={alice.id}&")


async def test_revoking_the_session_closes_the_editor_origins_websocket(plane: Plane) -> None:
    alice = await plane.user("alice")
    token = await plane.session(alice)
    _, ws = await open_ws(plane, alice, await editor_cookie(plane, token, alice))
    assert ws is not None
    sessions = await plane.storage.list_sessions(alice.id, now=plane.daemon.ctx.clock.now())
    assert await plane.authority.close_session_record(sessions[0])
    with trio.fail_after(1.0):
        assert await ws.recv() == REVOKED


async def test_an_admin_entry_expiring_closes_the_admins_editor_origin_websocket(
        start_plane: StartPlane) -> None:
    clock = ManualClock()
    plane = await start_plane(server=f'editor_domain = "{DOMAIN}"', clock=clock)
    alice = await plane.user("alice")
    root = await plane.user("root", admin=True, editor=False)
    token = await plane.session(root)
    until = plane.authority.grant_admin_entry(token, alice.id)
    _, ws = await open_ws(plane, alice, await editor_cookie(plane, token, alice))
    assert ws is not None
    clock.advance(until - clock.now() + 1)
    with trio.fail_after(1.0):
        assert await ws.recv() == REVOKED
