"""`/login?next=`: a login returns the browser where it was going — only to a path on this site.

Real daemon, real HTTP, the fake GitHub for the OAuth flow (tests/auth's harness); the hostile
`next` values are the open-redirect tricks browsers fall for (`//host`, `/\\host`, schemes,
their percent-encoded forms, CR/LF) and must all end on the dashboard.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from markco_trio.builtin.auth.login_links import issue_login_link
from markco_trio.builtin.auth.web.next_path import login_next, login_url
from markco_trio.testing.fake_github import FakeGitHub
from tests.auth.conftest import Markco, StartMarkco

NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "none"}

HOSTILE = [
    "//evil.example/",
    "/\\evil.example/",
    "\\\\evil.example",
    "https://evil.example/",
    "http:evil.example",
    "javascript:alert(1)",
    "evil.example",
    "/%0d%0aSet-Cookie:x=1".replace("%0d%0a", "\r\n"),
    "/dashboard\r\nLocation: https://evil.example/",
    "/\tevil",
    "/ evil",
    "/\x00",
    "/caf\u00e9",
    "/login?next=//evil.example",
    "/LOGIN",
    "/auth/callback/github",
    "/logout",
    "/" + "a" * 3000,
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_next_is_refused(value: str) -> None:
    assert login_next(value) is None


@pytest.mark.parametrize("value", ["/dashboard", "/u/abc123/", "/u/abc/#Projects/x.md",
                                   "/@alice/notes?x=1", "/admin", "/%2F%2Fevil.example",
                                   "/invites/t0k3n"])
def test_a_path_on_this_site_is_kept_as_it_is(value: str) -> None:
    assert login_next(value) == value


def test_the_login_url_encodes_its_next_and_drops_an_unsafe_one() -> None:
    assert login_url("/u/abc/?x=1&y=2") == "/login?next=%2Fu%2Fabc%2F%3Fx%3D1%26y%3D2"
    assert login_url("//evil.example") == "/login"


async def github_login_to(markco: Markco, start: str) -> httpx.Response:
    """The whole fake-GitHub login begun at `start`; the callback's answer (not followed)."""
    client = markco.client()
    login_page = await client.get(start)
    assert login_page.status_code == 200, login_page.text
    return await markco.github_login(client, start="/login/github" + start[len("/login"):])


async def test_the_github_login_returns_to_next(start_markco: StartMarkco,
                                                fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    done = await github_login_to(markco, "/login?next=" + quote("/u/someone/?a=1", safe=""))
    assert done.status_code == 303
    assert done.headers["location"] == f"{markco.url}/u/someone/?a=1"


async def test_the_login_page_carries_next_into_its_provider_buttons(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github)
    page = await markco.client().get("/login?next=%2Fadmin")
    assert 'href="/login/github?next=%2Fadmin"' in page.text


@pytest.mark.parametrize("value", ["//evil.example/", "/\\evil.example", "https://evil.example",
                                   "%2F%2Fevil.example", "/%0D%0ALocation:%20https://evil",
                                   "%2f%5cevil.example", "/login%3Fnext%3D//evil",
                                   "%252F%252Fevil.example", "%2F%09%2Fevil.example"])
async def test_an_unsafe_next_ends_the_github_login_on_the_dashboard(
        start_markco: StartMarkco, fake_github: FakeGitHub, value: str) -> None:
    markco = await start_markco(github=fake_github)
    done = await github_login_to(markco, "/login?next=" + quote(value, safe="%"))
    assert done.status_code == 303
    assert done.headers["location"] == f"{markco.url}/dashboard"


async def test_a_login_link_returns_to_next(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    user = await markco.user("ada")
    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=10)
    done = await markco.client().get(link + "?next=%2Fadmin")
    assert done.status_code == 303 and done.headers["location"] == f"{markco.url}/admin"


async def test_a_login_link_with_an_unsafe_next_ends_on_the_dashboard(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    user = await markco.user("ada")
    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=10)
    done = await markco.client().get(link + "?next=%2F%2Fevil.example")
    assert done.headers["location"] == f"{markco.url}/dashboard"


async def test_a_logged_in_visit_to_login_goes_straight_to_next(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    client = await markco.login_as("ada")
    assert (await client.get("/login?next=%2Fadmin")).headers["location"] == \
        f"{markco.url}/admin"
    assert (await client.get("/login?next=%2F%2Fevil")).headers["location"] == \
        f"{markco.url}/dashboard"


async def test_an_anonymous_visit_to_an_editor_logs_in_with_next_set(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    user = await markco.user("ada")
    response = await markco.client().get(f"/u/{user.id}/notes?x=1", headers=NAVIGATE)
    assert response.status_code == 302
    assert response.headers["location"] == (
        f"{markco.url}/login?next=" + quote(f"/u/{user.id}/notes?x=1", safe=""))


async def test_an_anonymous_visit_to_the_admin_page_logs_in_with_next_set(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    response = await markco.client().get("/admin")
    assert response.headers["location"] == f"{markco.url}/login?next=%2Fadmin"


async def test_an_encoded_editor_path_comes_back_exactly_as_it_was_asked_for(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    user = await markco.user("ada")
    target = f"/u/{user.id}/a%20b?x=%2F%2Fevil&y=1"
    to_login = await markco.client().get(target, headers=NAVIGATE)
    client = await markco.login_as("ada")
    back = await client.get(to_login.headers["location"].removeprefix(markco.url))
    assert back.headers["location"] == markco.url + target
