"""An admin enters another user's editor only explicitly, for a while, and it is recorded."""

from __future__ import annotations

import httpx

from markco_trio.authz import Action, Principal, Resource

from .conftest import Markco, StartMarkco


async def principal(markco: Markco, client: httpx.AsyncClient,
                    entering: str) -> Principal | None:
    header = f"markco_session={client.cookies['markco_session']}"
    answer = markco.authority.principal_for_cookie_nowait(header, entering=entering)
    if isinstance(answer, Principal) or answer is None:
        return answer
    return await markco.authority.principal_for_cookie(header, entering=entering)


def may_enter(markco: Markco, who: Principal | None, owner_id: str) -> bool:
    return markco.daemon.ctx.authorize(who, Action.EDITOR_ENTER, Resource("editor", owner_id))


async def test_an_admin_does_not_enter_an_editor_without_asking(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    admin = await markco.login_as("root", admin=True)
    bob = await markco.user("bob")
    who = await principal(markco, admin, bob.id)
    assert who is not None and who.is_admin and not who.admin_entry
    assert not may_enter(markco, who, bob.id)


async def test_an_explicit_entry_lets_the_admin_in_and_is_recorded(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    admin = await markco.login_as("root", admin=True)
    bob, carol = await markco.user("bob"), await markco.user("carol")
    response = await admin.post(f"/admin/enter/{bob.id}", headers=markco.origin())
    assert response.status_code == 303
    assert response.headers["location"] == f"{markco.url}/u/{bob.id}/"
    assert may_enter(markco, await principal(markco, admin, bob.id), bob.id)
    # The entry is for bob's editor only.
    assert not may_enter(markco, await principal(markco, admin, carol.id), carol.id)
    [event] = await markco.events("admin.entry")
    assert event.user_id == bob.id and event.data["admin"] == "root"


async def test_an_entry_expires(start_markco: StartMarkco) -> None:
    markco = await start_markco(auth="admin_entry_minutes = 5\n")
    admin = await markco.login_as("root", admin=True)
    bob = await markco.user("bob")
    await admin.post(f"/admin/enter/{bob.id}", headers=markco.origin())
    markco.clock.advance(5 * 60 + 1)
    assert not may_enter(markco, await principal(markco, admin, bob.id), bob.id)


async def test_an_entry_belongs_to_the_session_that_asked(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    first, second = (await markco.login_as("root", admin=True),
                     await markco.login_as("root", admin=True))
    bob = await markco.user("bob")
    await first.post(f"/admin/enter/{bob.id}", headers=markco.origin())
    assert not may_enter(markco, await principal(markco, second, bob.id), bob.id)


async def test_only_admins_may_ask_for_entry(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    alice = await markco.login_as("alice")
    bob = await markco.user("bob")
    response = await alice.post(f"/admin/enter/{bob.id}", headers=markco.origin())
    assert response.status_code == 403
    assert await markco.events("admin.entry") == []
    assert (await alice.get("/admin")).status_code == 403


async def test_the_admin_page_lists_users_with_an_entry_button(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    admin = await markco.login_as("root", admin=True)
    bob = await markco.user("bob")
    page = await admin.get("/admin")
    assert page.status_code == 200
    assert f'action="/admin/enter/{bob.id}"' in page.text and "@bob" in page.text


async def test_the_owner_sees_an_admin_entry_on_the_dashboard(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    admin = await markco.login_as("root", admin=True)
    bob = await markco.login_as("bob")
    bob_user = await markco.user("bob")
    await admin.post(f"/admin/enter/{bob_user.id}", headers=markco.origin())
    page = await bob.get("/dashboard")
    assert "Administrator access" in page.text and "@root entered your editor" in page.text


async def test_the_owner_sees_an_admin_entry_through_the_api(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(auth="admin_entry_minutes = 5\n")
    admin = await markco.login_as("root", admin=True)
    root = await markco.user("root", admin=True)
    bob = await markco.login_as("bob")
    bob_user = await markco.user("bob")
    await admin.post(f"/admin/enter/{bob_user.id}", headers=markco.origin())
    [entry] = (await bob.get("/api/v1/admin-entries")).json()["items"]
    assert entry["admin"] == "root" and entry["admin_id"] == root.id
    assert entry["entered_at"].endswith("Z") and entry["expires_at"].endswith("Z")


async def test_a_user_sees_no_entries_into_editors_of_others(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    admin = await markco.login_as("root", admin=True)
    carol = await markco.login_as("carol")
    bob = await markco.user("bob")
    await admin.post(f"/admin/enter/{bob.id}", headers=markco.origin())
    assert (await carol.get("/api/v1/admin-entries")).json()["items"] == []
    assert "Administrator access" not in (await carol.get("/dashboard")).text
