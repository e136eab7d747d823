"""Changing a user's plan (issue 12 item 6) through the API, the admin page's form and the
CLI: only an administrator may, an unknown plan is a 400 naming the plans, and every change is
persisted and published as `user.plan_changed` with the old and new plan. (That the running
runtime gets the new limits: test_plans_runtime.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from markco_trio.builtin.auth.tokens import form_token
from markco_trio.records import User
from tests.auth.conftest import Markco, StartMarkco

from .test_events_api import QUIET, token

ROOT = Path(__file__).resolve().parents[2]
# What a browser sends with a form post from a markco page (the form token is checked then).
FORM_POST = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate",
             "Sec-Fetch-Dest": "document"}


async def put_plan(markco: Markco, user: User, body: Any, headers: dict[str, str]
                   ) -> httpx.Response:
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        return await http.put(f"/api/v1/users/{user.id}/plan", json=body, headers=headers)


async def plan_events(markco: Markco) -> list[dict[str, Any]]:
    return [e.data for e in await markco.storage.list_events(type="user.plan_changed")]


@pytest.fixture
async def markco(start_markco: StartMarkco) -> Markco:
    return await start_markco(auth=QUIET)


async def test_an_admin_changes_a_plan_and_it_is_published_with_old_and_new(
        markco: Markco) -> None:
    alice, admin = await markco.user("alice"), await markco.user("root", admin=True)
    response = await put_plan(markco, alice, {"plan": "pro"}, await token(markco, admin,
                                                                          "admin"))
    assert response.status_code == 200, response.text
    assert response.json() == {"user_id": alice.id, "old": "free", "new": "pro",
                               "changed": True, "applied": False}  # no runtime running
    stored = await markco.storage.get_user(alice.id)
    assert stored is not None and stored.plan == "pro"
    assert await plan_events(markco) == [{"old": "free", "new": "pro", "by": "root"}]


async def test_giving_the_same_plan_again_changes_and_publishes_nothing(
        markco: Markco) -> None:
    alice, admin = await markco.user("alice"), await markco.user("root", admin=True)
    response = await put_plan(markco, alice, {"plan": "free"}, await token(markco, admin,
                                                                           "admin"))
    assert response.status_code == 200 and response.json()["changed"] is False
    assert await plan_events(markco) == []


async def test_an_unknown_plan_is_a_400_naming_the_plans(markco: Markco) -> None:
    alice, admin = await markco.user("alice"), await markco.user("root", admin=True)
    headers = await token(markco, admin, "admin")
    for body in ({"plan": "platinum"}, {"plan": 3}, {"plan": None}):
        response = await put_plan(markco, alice, body, headers)
        assert response.status_code == 400, body
        error = response.json()["error"]
        assert error["code"] == "unknown_plan"
        assert "free, pro, team" in error["message"]
    stored = await markco.storage.get_user(alice.id)
    assert stored is not None and stored.plan == "free"


async def test_a_body_without_a_plan_is_a_400(markco: Markco) -> None:
    alice, admin = await markco.user("alice"), await markco.user("root", admin=True)
    response = await put_plan(markco, alice, ["pro"], await token(markco, admin, "admin"))
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_plan"


async def test_a_user_cannot_change_their_own_plan(markco: Markco) -> None:
    alice = await markco.user("alice")
    response = await put_plan(markco, alice, {"plan": "team"}, await token(markco, alice,
                                                                           "user"))
    assert response.status_code == 403
    browser = await markco.login_as("alice")
    through_session = await browser.put(f"/api/v1/users/{alice.id}/plan",
                                        json={"plan": "team"}, headers=markco.origin())
    assert through_session.status_code == 403
    stored = await markco.storage.get_user(alice.id)
    assert stored is not None and stored.plan == "free"


async def test_an_admins_token_without_the_admin_scope_cannot_change_a_plan(
        markco: Markco) -> None:
    alice, admin = await markco.user("alice"), await markco.user("root", admin=True)
    response = await put_plan(markco, alice, {"plan": "pro"}, await token(markco, admin,
                                                                          "user"))
    assert response.status_code == 403


async def test_changing_the_plan_of_an_unknown_user_is_a_404(markco: Markco) -> None:
    admin = await markco.user("root", admin=True)
    ghost = User(id="nobody", username="ghost", email=None, name=None, avatar_url=None,
                 plan="free", is_admin=False, created_at=0.0)
    response = await put_plan(markco, ghost, {"plan": "pro"}, await token(markco, admin,
                                                                          "admin"))
    assert response.status_code == 404


async def test_the_plans_are_listed_with_their_limits(markco: Markco) -> None:
    alice = await markco.user("alice")
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False) as http:
        response = await http.get("/api/v1/plans", headers=await token(markco, alice, "user"))
        anonymous = await http.get("/api/v1/plans")
    assert [(p["name"], p["memory_mib"], p["default"]) for p in response.json()["items"]] == [
        ("free", 256, True), ("pro", 512, False), ("team", 1024, False)]
    assert anonymous.status_code == 401


async def test_the_admin_pages_form_changes_a_plan(markco: Markco) -> None:
    alice = await markco.user("alice")
    root = await markco.login_as("root", admin=True)
    csrf = form_token(root.cookies[markco.authority.cookie_name])
    response = await root.post(f"/admin/users/{alice.id}/plan",
                               data={"plan": "team", "csrf": csrf},
                               headers={**markco.origin(), **FORM_POST})
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    stored = await markco.storage.get_user(alice.id)
    assert stored is not None and stored.plan == "team"
    assert await plan_events(markco) == [{"old": "free", "new": "team", "by": "root"}]


async def test_the_admin_form_refuses_an_unknown_plan_naming_the_plans(markco: Markco) -> None:
    alice = await markco.user("alice")
    root = await markco.login_as("root", admin=True)
    csrf = form_token(root.cookies[markco.authority.cookie_name])
    response = await root.post(f"/admin/users/{alice.id}/plan",
                               data={"plan": "<b>gold</b>", "csrf": csrf},
                               headers={**markco.origin(), **FORM_POST})
    assert response.status_code == 400
    assert "free, pro, team" in response.text and "<b>gold" not in response.text


async def test_the_admin_form_without_the_form_token_is_refused(markco: Markco) -> None:
    alice = await markco.user("alice")
    root = await markco.login_as("root", admin=True)
    response = await root.post(f"/admin/users/{alice.id}/plan", data={"plan": "team"},
                               headers={**markco.origin(), **FORM_POST})
    assert response.status_code == 403
    stored = await markco.storage.get_user(alice.id)
    assert stored is not None and stored.plan == "free"


async def test_a_non_admin_cannot_use_the_admin_form(markco: Markco) -> None:
    alice = await markco.user("alice")
    browser = await markco.login_as("alice")
    csrf = form_token(browser.cookies[markco.authority.cookie_name])
    response = await browser.post(f"/admin/users/{alice.id}/plan",
                                  data={"plan": "team", "csrf": csrf},
                                  headers={**markco.origin(), **FORM_POST})
    assert response.status_code == 403
    stored = await markco.storage.get_user(alice.id)
    assert stored is not None and stored.plan == "free"


# ------------------------------------------------------------------ CLI


async def markco_cli(markco: Markco, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await trio.run_process(
        [sys.executable, "-m", "markco_trio", *args, "--config", str(markco.config_path)],
        capture_stdout=True, capture_stderr=True, check=False, env=env, cwd=str(ROOT))


async def test_the_cli_changes_a_plan_and_logs_the_event(markco: Markco) -> None:
    await markco.user("alice")
    done = await markco_cli(markco, "plans", "set", "alice", "pro")
    assert done.returncode == 0, done.stderr.decode()
    assert b"free -> pro" in done.stdout
    stored = await markco.storage.get_user_by_username("alice")
    assert stored is not None and stored.plan == "pro"
    assert await plan_events(markco) == [{"old": "free", "new": "pro", "by": "cli"}]


async def test_the_cli_refuses_an_unknown_plan_naming_the_plans(markco: Markco) -> None:
    await markco.user("alice")
    done = await markco_cli(markco, "plans", "set", "alice", "gold")
    assert done.returncode == 2
    assert b"free, pro, team" in done.stderr
    assert await plan_events(markco) == []


async def test_the_admin_page_shows_each_users_plan_in_a_form(markco: Markco) -> None:
    alice = await markco.user("alice")
    await markco.storage.update_user(alice.id, plan="pro")
    root = await markco.login_as("root", admin=True)
    page = await root.get("/admin")
    assert page.status_code == 200
    section = page.text.split('<section id="plans">', 1)[1].split("</section>", 1)[0]
    form = section.split(f'action="/admin/users/{alice.id}/plan"', 1)[1].split("</form>")[0]
    assert '<option value="pro" selected>' in form
    assert '<option value="team">' in form
    assert f'name="csrf" value="{form_token(root.cookies[markco.authority.cookie_name])}"' \
        in form
