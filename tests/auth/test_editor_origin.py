"""The main origin's half of the editor-origin handshake (`GET /editor-auth`), through the
real login: the session cookie stays host-only on the main origin, and a code is minted only for
a live session that may enter the editor (owner, editor grant, an admin's audited entry)."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

import httpx

from markco_trio.builtin.auth.login_links import issue_login_link
from markco_trio.records import User

from .conftest import Markco, StartMarkco, set_cookies

DOMAIN = "u.test"
NAVIGATE = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "document"}


async def ask(client: httpx.AsyncClient, owner: User, **headers: str) -> httpx.Response:
    return await client.get(f"/editor-auth?user={owner.id}&next=/u/{owner.id}/",
                            headers={**NAVIGATE, **headers})


async def test_the_session_cookie_is_host_only_on_the_main_origin(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(editor_domain=DOMAIN)
    user = await markco.user("alice")
    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=10)
    answer = await markco.client().get(link)
    cookie = set_cookies(answer)[markco.authority.cookie_name]
    assert "domain" not in cookie.lower()


async def test_the_owner_gets_a_one_time_code_for_their_editor_origin(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(editor_domain=DOMAIN)
    client = await markco.login_as("alice")
    alice = await markco.user("alice")
    answer = await ask(client, alice)
    assert answer.status_code == 303
    location = urlsplit(answer.headers["location"])
    assert location.netloc == f"{alice.id}.{DOMAIN}:{markco.url.rpartition(':')[2]}"
    assert location.path == "/_markco/editor-auth"
    assert set(parse_qs(location.query)) == {"code", "next"}
    assert answer.headers["referrer-policy"] == "no-referrer"
    session = client.cookies[markco.authority.cookie_name]
    assert session not in answer.headers["location"]


async def test_without_a_session_the_handshake_goes_to_the_login_page(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(editor_domain=DOMAIN)
    alice = await markco.user("alice")
    answer = await ask(markco.client(), alice)
    assert answer.status_code == 303
    # ...and back through the handshake once logged in.
    assert answer.headers["location"] == f"{markco.url}/login?next=" + quote(
        f"/editor-auth?user={alice.id}&next=/u/{alice.id}/", safe="")


async def test_another_user_gets_no_code(start_markco: StartMarkco) -> None:
    markco = await start_markco(editor_domain=DOMAIN)
    alice = await markco.user("alice")
    bob = await markco.login_as("bob")
    answer = await ask(bob, alice)
    assert answer.status_code == 404 and "location" not in answer.headers


async def test_an_admin_gets_a_code_only_after_an_audited_entry(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(editor_domain=DOMAIN)
    alice = await markco.user("alice")
    root = await markco.login_as("root", admin=True)
    assert (await ask(root, alice)).status_code == 404
    page = await root.get("/admin", headers=NAVIGATE)
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    entered = await root.post(f"/admin/enter/{alice.id}", data={"csrf": csrf}, headers={
        **markco.origin(), **NAVIGATE, "Sec-Fetch-Site": "same-origin"})
    assert entered.status_code == 303
    assert (await ask(root, alice)).status_code == 303
    assert len(await markco.events("admin.entry")) == 1


async def test_a_framed_handshake_is_refused(start_markco: StartMarkco) -> None:
    markco = await start_markco(editor_domain=DOMAIN)
    client = await markco.login_as("alice")
    alice = await markco.user("alice")
    answer = await ask(client, alice, **{"Sec-Fetch-Dest": "iframe"})
    assert answer.status_code == 403


async def test_on_a_single_origin_there_is_no_handshake(start_markco: StartMarkco) -> None:
    markco: Markco = await start_markco()
    client = await markco.login_as("alice")
    alice = await markco.user("alice")
    assert (await ask(client, alice)).status_code == 404
