"""Invites: made by a project's owner, looked up without revealing the token, accepted once
per use into exactly the invite's role; expired, exhausted and revoked invites refused."""

from __future__ import annotations

from typing import Any

import httpx

from markco_trio.authz import Action, Resource
from markco_trio.testing.fake_github import FakeGitHub

from .conftest import Markco, StartMarkco, set_cookies


async def invite(markco: Markco, owner: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"project": "thesis", "role": "editor", **fields}
    response = await owner.post("/api/v1/invites", headers=markco.origin(), json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def accept(markco: Markco, client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/invites/accept", headers=markco.origin(),
                             json={"token": token})


async def test_the_owner_creates_an_invite_and_anyone_can_look_it_up(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner = await markco.login_as("alice")
    created = await invite(markco, owner, role="viewer", max_uses=3, expires_days=2)
    assert created["url"] == f"{markco.url}/invites/{created['token']}"
    assert "token_hash" not in created and created["state"] == "live"
    looked_up = await markco.client().post("/api/v1/invites/lookup",
                                           headers=markco.origin(),
                                           json={"token": created["token"]})
    assert looked_up.status_code == 200
    view = looked_up.json()
    assert view["project"] == "thesis" and view["role"] == "viewer"
    assert view["owner"]["username"] == "alice" and view["uses_left"] == 3
    assert created["token"] not in looked_up.text
    [event] = await markco.events("invite.created")
    assert event.data["project"] == "thesis"


async def test_accepting_an_editor_invite_grants_exactly_editor(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner = await markco.login_as("alice")
    bob = await markco.login_as("bob")
    token = (await invite(markco, owner, role="editor"))["token"]
    response = await accept(markco, bob, token)
    assert response.status_code == 200
    alice = await markco.user("alice")
    assert response.json()["role"] == "editor" and response.json()["owner_id"] == alice.id
    me = (await bob.get("/api/v1/me")).json()
    assert me["grants"] == [{"owner_id": alice.id, "project": "thesis", "role": "editor"}]
    principal = await markco.authority.principal_for_cookie(
        f"markco_session={bob.cookies['markco_session']}")
    ctx = markco.daemon.ctx
    assert ctx.authorize(principal, Action.EDITOR_ENTER, Resource("editor", alice.id))
    assert ctx.authorize(principal, Action.PROJECT_READ,
                         Resource("project", alice.id, "thesis"))
    assert not ctx.authorize(principal, Action.PROJECT_SHARE,
                             Resource("project", alice.id, "thesis"))
    [event] = await markco.events("invite.accepted")
    assert event.data["role"] == "editor"


async def test_accepting_a_viewer_invite_never_opens_the_editor(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner = await markco.login_as("alice")
    bob = await markco.login_as("bob")
    token = (await invite(markco, owner, role="viewer"))["token"]
    assert (await accept(markco, bob, token)).json()["role"] == "viewer"
    alice = await markco.user("alice")
    principal = await markco.authority.principal_for_cookie(
        f"markco_session={bob.cookies['markco_session']}")
    ctx = markco.daemon.ctx
    assert ctx.authorize(principal, Action.PROJECT_READ, Resource("project", alice.id, "thesis"))
    assert not ctx.authorize(principal, Action.PROJECT_READ,
                             Resource("project", alice.id, "other"))
    assert not ctx.authorize(principal, Action.EDITOR_ENTER, Resource("editor", alice.id))


async def test_an_expired_invite_is_refused(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner, bob = await markco.login_as("alice"), await markco.login_as("bob")
    token = (await invite(markco, owner, expires_days=1))["token"]
    markco.clock.advance(86400 + 1)
    response = await accept(markco, bob, token)
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "invite_expired"
    assert (await bob.get("/api/v1/me")).json()["grants"] == []


async def test_an_exhausted_invite_is_refused(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner = await markco.login_as("alice")
    bob, carol = await markco.login_as("bob"), await markco.login_as("carol")
    token = (await invite(markco, owner, max_uses=1))["token"]
    assert (await accept(markco, bob, token)).status_code == 200
    response = await accept(markco, carol, token)
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "invite_used_up"
    assert (await carol.get("/api/v1/me")).json()["grants"] == []


async def test_a_revoked_invite_is_refused(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner, bob = await markco.login_as("alice"), await markco.login_as("bob")
    created = await invite(markco, owner)
    revoked = await owner.delete(f"/api/v1/invites/{created['id']}", headers=markco.origin())
    assert revoked.json() == {"revoked": True}
    response = await accept(markco, bob, created["token"])
    assert response.status_code == 410
    assert response.json()["error"]["code"] == "invite_revoked"


async def test_only_the_owner_revokes_an_invite(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner, bob = await markco.login_as("alice"), await markco.login_as("bob")
    created = await invite(markco, owner)
    response = await bob.delete(f"/api/v1/invites/{created['id']}", headers=markco.origin())
    assert response.status_code == 404


async def test_accepting_your_own_invite_is_refused(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner = await markco.login_as("alice")
    token = (await invite(markco, owner))["token"]
    response = await accept(markco, owner, token)
    assert response.status_code == 409


async def test_invites_are_checked_on_creation(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner = await markco.login_as("alice")
    for body, code in (({"project": "../etc", "role": "editor"}, "bad_project"),
                       ({"project": "p", "role": "admin"}, "bad_role"),
                       ({"project": "p", "role": "viewer", "expires_days": 0}, "bad_expiry"),
                       ({"project": "p", "role": "viewer", "expires_days": 1000}, "bad_expiry"),
                       ({"project": "p", "role": "viewer", "max_uses": 0}, "bad_max_uses")):
        response = await owner.post("/api/v1/invites", headers=markco.origin(), json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == code
    anonymous = await markco.client().post("/api/v1/invites", headers=markco.origin(),
                                           json={"project": "p", "role": "viewer"})
    assert anonymous.status_code == 401


async def test_a_grant_revoked_by_the_owner_ends_access(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner, bob = await markco.login_as("alice"), await markco.login_as("bob")
    token = (await invite(markco, owner))["token"]
    grant = (await accept(markco, bob, token)).json()
    given = (await owner.get("/api/v1/grants")).json()["given"]
    assert [g["id"] for g in given] == [grant["id"]]
    response = await owner.delete(f"/api/v1/grants/{grant['id']}", headers=markco.origin())
    assert response.json() == {"revoked": True}
    assert (await bob.get("/api/v1/me")).json()["grants"] == []


async def test_the_invite_page_says_an_editor_runs_code_as_the_owner(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner = await markco.login_as("alice")
    token = (await invite(markco, owner, role="editor"))["token"]
    bob = await markco.login_as("bob")
    page = await bob.get(f"/invites/{token}")
    assert page.status_code == 200
    assert "can run code" in page.text and "as alice" in page.text
    assert page.headers["referrer-policy"] == "same-origin"  # never sent to other sites
    assert "default-src 'none'" in page.headers["content-security-policy"]
    accepted = await bob.post(f"/invites/{token}/accept", headers=markco.origin())
    assert accepted.status_code == 200 and "Invitation accepted" in accepted.text
    used_up = await bob.get(f"/invites/{token}")
    assert used_up.status_code == 410 and "used up" in used_up.text


async def test_the_invite_page_escapes_what_people_typed(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    owner = await markco.login_as("alice")
    user = await markco.user("alice")
    await markco.storage.update_user(user.id, name="<script>alert(1)</script>")
    markco.authority.clear()
    token = (await invite(markco, owner, role="viewer"))["token"]
    page = await markco.client().get(f"/invites/{token}")
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text


async def test_an_unknown_invite_page_is_a_404(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    page = await markco.client().get("/invites/" + "A" * 43)
    assert page.status_code == 404 and "not valid" in page.text


async def test_invite_only_refuses_a_new_github_user_without_an_invite(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github, auth="invite_only = true\n")
    page = await markco.github_login()
    assert page.status_code == 403 and "invite-only" in page.text
    assert await markco.storage.get_user_by_username("octocat") is None


async def test_invite_only_admits_a_new_github_user_through_an_invite_link(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github, auth="invite_only = true\n")
    owner = await markco.login_as("alice")
    token = (await invite(markco, owner, role="viewer"))["token"]
    browser = markco.client()
    page = await browser.get(f"/invites/{token}")
    assert f'href="/invites/{token}/login/github"' in page.text
    callback = await markco.github_login(browser, start=f"/invites/{token}/login/github")
    assert callback.status_code == 303
    assert callback.headers["location"] == f"{markco.url}/invites/{token}"
    assert "markco_session" in set_cookies(callback)
    accepted = await browser.post(f"/invites/{token}/accept", headers=markco.origin())
    assert accepted.status_code == 200
    me = (await browser.get("/api/v1/me")).json()
    assert me["user"]["username"] == "octocat" and me["grants"][0]["role"] == "viewer"


async def test_invite_only_still_admits_configured_admins(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(github=fake_github,
                                auth='invite_only = true\nadmins = ["github:id:583231"]\n')
    assert (await markco.github_login()).status_code == 303
    user = await markco.storage.get_user_by_username("octocat")
    assert user is not None and user.is_admin
