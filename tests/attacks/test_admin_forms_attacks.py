"""CSRF and privilege attacks on the admin page's new forms — change a plan
(`POST /admin/users/<id>/plan`), stop/sleep/wake a runtime (`POST /admin/runtimes/<id>/<action>`),
enter an editor (`POST /admin/enter/<id>`) — and on `PUT /api/v1/users/<id>/plan`: a foreign,
`null` or missing Origin, a missing or wrong form token, a request made by a page's script, or
a non-administrator are each refused, and nothing happens (no plan change, no event)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from markco_trio.builtin.auth.tokens import form_token
from markco_trio.records import User
from tests.auth.conftest import Markco, StartMarkco
from tests.dataplane.fake_compute import FakeCompute
from tests.events.test_events_api import QUIET

# What a browser sends with a top-level form post from a page of the same origin.
FORM_POST = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate",
             "Sec-Fetch-Dest": "document", "Sec-Fetch-User": "?1"}
# Kinds of events any of the forms would publish.
EFFECTS = ("user.plan_changed", "admin.action", "admin.entry")


@pytest.fixture
async def markco(start_markco: StartMarkco) -> Markco:
    return await start_markco(auth=QUIET)


def forms(victim: User) -> list[tuple[str, dict[str, str]]]:
    """Every admin form: its path and fields (without the form token)."""
    return [(f"/admin/users/{victim.id}/plan", {"plan": "team"}),
            *((f"/admin/runtimes/{victim.id}/{a}", {}) for a in ("stop", "sleep", "wake")),
            (f"/admin/enter/{victim.id}", {})]


async def effects(markco: Markco, victim: User) -> list[Any]:
    found = [e for kind in EFFECTS for e in await markco.events(kind)]
    stored = await markco.storage.get_user(victim.id)
    assert stored is not None
    return [*found, *([stored.plan] if stored.plan != "free" else [])]


async def post_each(markco: Markco, browser: httpx.AsyncClient, victim: User,
                    headers: dict[str, str], *, with_token: bool = True) -> None:
    """Post every admin form with `headers`; each must be refused with a 403."""
    csrf = form_token(browser.cookies[markco.authority.cookie_name])
    for path, fields in forms(victim):
        data = {**fields, **({"csrf": csrf} if with_token else {})}
        response = await browser.post(path, data=data, headers=headers)
        assert response.status_code == 403, (path, headers, response.status_code)
    assert await effects(markco, victim) == []


@pytest.mark.parametrize("origin", [None, "null", "http://evil.test",
                                    "http://127.0.0.1.evil.test", "http://127.0.0.1:1"])
async def test_an_admin_form_from_a_foreign_or_missing_origin_is_refused(
        markco: Markco, origin: str | None) -> None:
    alice = await markco.user("alice")
    root = await markco.login_as("root", admin=True)
    site = {"Sec-Fetch-Site": "cross-site"} if origin else {}
    headers = {**FORM_POST, **site, **({"Origin": origin} if origin else {})}
    await post_each(markco, root, alice, headers)


async def test_an_admin_form_without_its_form_token_is_refused(markco: Markco) -> None:
    alice = await markco.user("alice")
    root = await markco.login_as("root", admin=True)
    await post_each(markco, root, alice, {**markco.origin(), **FORM_POST}, with_token=False)
    for path, fields in forms(alice):  # another session's token is no better
        response = await root.post(path, data={**fields, "csrf": form_token("x" * 43)},
                                   headers={**markco.origin(), **FORM_POST})
        assert response.status_code == 403, path
    assert await effects(markco, alice) == []


async def test_an_admin_form_posted_by_a_pages_script_is_refused(markco: Markco) -> None:
    """An editor page on the same origin cannot read the form token; even with it, a fetch()
    (mode cors / same-origin, not a navigation) is refused as editor-initiated."""
    alice = await markco.user("alice")
    root = await markco.login_as("root", admin=True)
    for mode in ("cors", "same-origin", "no-cors"):
        await post_each(markco, root, alice, {
            **markco.origin(), "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": mode,
            "Sec-Fetch-Dest": "empty", "Referer": f"{markco.url}/u/{alice.id}/"})


async def test_a_non_admin_cannot_use_any_admin_form(markco: Markco) -> None:
    victim = await markco.user("victim")
    mallory = await markco.login_as("mallory")
    await post_each(markco, mallory, victim, {**markco.origin(), **FORM_POST})


async def test_a_plan_put_from_a_foreign_origin_is_refused_even_for_an_admin(
        markco: Markco) -> None:
    alice = await markco.user("alice")
    root = await markco.login_as("root", admin=True)
    for origin in (None, "null", "http://evil.test"):
        headers = {"Origin": origin} if origin else {}
        response = await root.put(f"/api/v1/users/{alice.id}/plan", json={"plan": "pro"},
                                  headers=headers)
        assert response.status_code == 403, origin
    # A cross-site form cannot send JSON; a text/plain body shaped like JSON is no plan.
    response = await root.put(f"/api/v1/users/{alice.id}/plan", content=b'{"plan":"pro"}',
                              headers={**markco.origin(), "Content-Type": "text/plain"})
    assert response.status_code == 400
    assert await effects(markco, alice) == []


@dataclass
class RecordingCompute(FakeCompute):
    """The data-plane tests' compute stand-in, recording the admin page's requests."""

    requested: list[tuple[str, str]] = field(default_factory=list)

    def request(self, user_id: str, kind: str, *, reason: str) -> None:
        self.requested.append((user_id, kind))


async def test_the_admin_page_does_not_wake_a_disabled_users_runtime(
        start_markco: StartMarkco) -> None:
    compute = RecordingCompute()
    markco = await start_markco(compute=compute)
    gone = await markco.user("gone")
    await markco.storage.update_user(gone.id, disabled=True)
    root = await markco.login_as("root", admin=True)
    csrf = form_token(root.cookies[markco.authority.cookie_name])
    response = await root.post(f"/admin/runtimes/{gone.id}/wake", data={"csrf": csrf},
                               headers={**markco.origin(), **FORM_POST})
    assert response.status_code == 409
    assert compute.requested == []
