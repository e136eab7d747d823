"""The dashboard: the user's published pages (with links) and the invites they sent (with a
revoke button that is a protected POST). A real daemon with the publish and auth plugins,
real files under the data dir, real HTTP."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from markco_trio.builtin.auth.tokens import form_token
from tests.auth.conftest import Markco, StartMarkco

FROM_PAGE = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate",
             "Sec-Fetch-Dest": "document"}


def project(markco: Markco, user_id: str, name: str, settings: str) -> Path:
    folder = markco.daemon.config.data_dir / "users" / user_id / "Projects" / name
    folder.mkdir(parents=True)
    (folder / "mrmd.md").write_text(f"---\n{settings}\n---\n")
    (folder / "index.md").write_text(f"# {name}\n")
    return folder


async def invite(markco: Markco, client: httpx.AsyncClient, project: str) -> str:
    made = await client.post("/api/v1/invites", json={"project": project, "role": "viewer"},
                             headers=markco.origin())
    assert made.status_code == 201, made.text
    invite_id: str = made.json()["id"]
    return invite_id


def token_of(markco: Markco, client: httpx.AsyncClient) -> str:
    return form_token(client.cookies[markco.authority.cookie_name])


async def test_the_dashboard_links_to_each_published_project(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    client = await markco.login_as("ada")
    ada = await markco.user("ada")
    project(markco, ada.id, "Field Notes", "title: Field notes\nvisibility: public")
    project(markco, ada.id, "diary", "visibility: private")
    page = (await client.get("/dashboard")).text
    assert re.search(r'<a href="/@ada/Field%20Notes">Field notes</a>.*public', page)
    assert re.search(r'<a href="/@ada/diary">diary</a>.*private', page)
    assert '<a href="/@ada">/@ada</a>' in page
    for link in ("/@ada/Field%20Notes", "/@ada/diary"):  # each one opens for its owner
        assert (await client.get(link)).status_code == 200, link


async def test_without_user_pages_the_dashboard_links_no_user_page(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(auth="\n[publish]\nuser_pages = false\n")
    client = await markco.login_as("ada")
    ada = await markco.user("ada")
    project(markco, ada.id, "notes", "visibility: public")
    page = (await client.get("/dashboard")).text
    assert '<a href="/@ada/notes">notes</a>' in page and 'href="/@ada"' not in page
    assert (await client.get("/@ada")).status_code == 404


async def test_the_dashboard_says_how_to_publish_when_there_is_no_project(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    page = (await (await markco.login_as("ada")).get("/dashboard")).text
    assert "No project yet" in page and "visibility: public" in page


async def test_another_users_projects_are_not_listed(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    bob = await markco.user("bob")
    project(markco, bob.id, "secret-garden", "visibility: private")
    page = (await (await markco.login_as("ada")).get("/dashboard")).text
    assert "secret-garden" not in page


async def test_the_dashboard_lists_the_invites_sent_and_revokes_one(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    client = await markco.login_as("ada")
    first = await invite(markco, client, "diary")
    await invite(markco, client, "notes")
    page = (await client.get("/dashboard")).text
    assert page.count("/revoke") == 2 and "<td>diary</td><td>viewer</td><td>live</td>" in page
    done = await client.post(f"/dashboard/invites/{first}/revoke",
                             data={"csrf": token_of(markco, client)},
                             headers={**markco.origin(), **FROM_PAGE})
    assert done.status_code == 303
    page = (await client.get("/dashboard")).text
    assert "<td>diary</td><td>viewer</td><td>revoked</td>" in page and page.count("/revoke") == 1


async def test_an_invite_cannot_be_revoked_by_someone_else(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    ada = await markco.login_as("ada")
    sent = await invite(markco, ada, "diary")
    eve = await markco.login_as("eve")
    refused = await eve.post(f"/dashboard/invites/{sent}/revoke",
                             data={"csrf": token_of(markco, eve)},
                             headers={**markco.origin(), **FROM_PAGE})
    assert refused.status_code == 404
    assert "<td>live</td>" in (await ada.get("/dashboard")).text


async def test_a_revoke_without_the_form_token_or_from_another_site_is_refused(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    ada = await markco.login_as("ada")
    sent = await invite(markco, ada, "diary")
    no_token = await ada.post(f"/dashboard/invites/{sent}/revoke",
                              headers={**markco.origin(), **FROM_PAGE})
    cross_site = await ada.post(f"/dashboard/invites/{sent}/revoke",
                                data={"csrf": token_of(markco, ada)},
                                headers={"Origin": "https://evil.example",
                                         "Sec-Fetch-Site": "cross-site"})
    assert no_token.status_code == 403 and cross_site.status_code == 403
    assert "<td>live</td>" in (await ada.get("/dashboard")).text


async def test_only_an_admin_sees_the_link_to_the_admin_page(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    assert 'href="/admin"' not in (await (await markco.login_as("ada")).get("/dashboard")).text
    root = await markco.login_as("root", admin=True)
    assert 'href="/admin"' in (await root.get("/dashboard")).text
