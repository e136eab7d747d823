"""Every form of every markco page, clicked in headless Chromium (issue 11, defect 11).

Tests that set `Origin` by hand cannot see what a browser really sends: under
`Referrer-Policy: no-referrer` Chromium posts forms with `Origin: null`, which the CSRF check
refuses. Here a real browser logs in through a console login link and clicks each button; each
test checks the click did what the button says. `test_no_form_is_left_unclicked` fails when a
page grows a form that no test here clicks.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from markco_trio.builtin.auth.login_links import issue_login_link
from markco_trio.records import User
from markco_trio.testing.chromium import Browser, chromium

from .conftest import Markco, StartMarkco

pytestmark = pytest.mark.system

# The forms this module clicks, by action (`{user}` / `{token}`: any id / invite token).
CLICKED = frozenset({"/logout", "/logout-all", "/dashboard/workspace/start",
                     "/dashboard/workspace/stop", "/dashboard/workspace/restart",
                     "/dashboard/workspace/sleep", "/dashboard/workspace/wake",
                     "/dashboard/workspace/snapshots",
                     "/dashboard/workspace/snapshots/{snapshot}/restore",
                     "/dashboard/workspace/snapshots/{snapshot}/delete",
                     "/admin/enter/{user}", "/invites/{token}/accept"})


@dataclass
class StubCompute:
    """Just what the dashboard's workspace section reads and calls of compute."""

    ready: bool = False
    asleep: bool = False
    requests: list[tuple[str, str]] = field(default_factory=list)
    snapshots: list[Any] = field(default_factory=lambda: [SimpleNamespace(
        id="snap1", name="before", kind="named", created_at=1.7e9, size_bytes=1 << 20)])

    def state_nowait(self, user_id: str) -> Any:
        workload = SimpleNamespace(state=None, reason=None, role=SimpleNamespace(value="x"),
                                   oom_kills=0)
        summary = "sleeping" if self.asleep else "running" if self.ready else "stopped"
        return SimpleNamespace(ready=self.ready, operation=None, message="",
                               runtime=workload, editor=workload, summary=summary,
                               notice=None)

    def request(self, user_id: str, action: str, *, reason: str) -> None:
        self.requests.append((user_id, action))

    def record_activity(self, user_id: str, kind: str) -> None:
        pass  # the front door's gate reports activity here (no editor is visited)

    async def list_snapshots(self, user_id: str) -> list[Any]:
        return self.snapshots

    async def create_snapshot(self, user_id: str, name: str, *, reason: str) -> None:
        self.requests.append((user_id, f"snapshot {name}"))

    async def restore_snapshot(self, user_id: str, snapshot: str, *, reason: str) -> None:
        self.requests.append((user_id, f"restore {snapshot}"))

    async def delete_snapshot(self, user_id: str, snapshot: str, *, reason: str) -> None:
        self.requests.append((user_id, f"delete {snapshot}"))


@dataclass
class Visit:
    """A browser logged in to a running markco."""

    markco: Markco
    browser: Browser
    user: User
    compute: StubCompute

    async def open(self, path: str) -> None:
        await self.browser.call("Page.navigate", {"url": self.markco.url + path})
        await self.settled()

    async def settled(self) -> None:
        await self.browser.wait_for("document.readyState === 'complete'")

    async def click(self, action: str) -> str:
        """Submit the form posting to `action` with its button, as a person would; return
        the title of the page it leads to."""
        await self.browser.evaluate("window.__before_click = true")
        clicked = await self.browser.evaluate(
            f"(() => {{ const b = document.querySelector('form[action=\"{action}\"] button');"
            f" if (!b) return false; b.click(); return true; }})()")
        assert clicked, f"no form posting to {action} on this page"
        await self.browser.wait_for("window.__before_click === undefined && "
                                    "document.readyState === 'complete'")
        title = await self.browser.evaluate("document.title")
        assert isinstance(title, str)
        return title

    async def path(self) -> str:
        path = await self.browser.evaluate("location.pathname")
        assert isinstance(path, str)
        return path

    async def form_actions(self) -> list[str]:
        actions = await self.browser.evaluate(
            "Array.from(document.forms).map(f => f.getAttribute('action'))")
        assert isinstance(actions, list)
        return [str(a) for a in actions]


@pytest.fixture
async def visit(start_markco: StartMarkco, tmp_path: Path) -> AsyncIterator[Visit]:
    compute = StubCompute()
    markco = await start_markco(compute=compute)  # the compute control, chosen by name
    user = await markco.user("ada", admin=True)
    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=10)
    async with chromium(tmp_path / "profile") as browser:
        visit = Visit(markco, browser, user, compute)
        await browser.call("Page.navigate", {"url": link})
        await browser.wait_for("location.pathname === '/dashboard' && "
                               "document.readyState === 'complete'")
        yield visit


def refused(title: str) -> bool:
    return title.startswith("Refused")


async def test_log_out_logs_out_in_chromium(visit: Visit) -> None:
    await visit.open("/dashboard")
    title = await visit.click("/logout")
    assert not refused(title) and await visit.path() == "/login"
    assert await visit.markco.storage.list_sessions(visit.user.id,
                                                    now=visit.markco.clock.now()) == []


async def test_log_out_everywhere_ends_every_session_in_chromium(visit: Visit) -> None:
    await visit.markco.authority.open_session(visit.user)  # another browser's session
    await visit.open("/dashboard")
    title = await visit.click("/logout-all")
    assert not refused(title) and await visit.path() == "/login"
    assert await visit.markco.storage.list_sessions(visit.user.id,
                                                    now=visit.markco.clock.now()) == []


@pytest.mark.parametrize(("ready", "action"), [(False, "start"), (True, "stop"),
                                               (True, "restart"), (True, "sleep")])
async def test_workspace_buttons_reach_compute_in_chromium(visit: Visit, ready: bool,
                                                           action: str) -> None:
    visit.compute.ready = ready
    await visit.open("/dashboard")
    title = await visit.click(f"/dashboard/workspace/{action}")
    assert not refused(title) and await visit.path() == "/dashboard"
    assert visit.compute.requests == [(visit.user.id, action)]


async def test_wake_button_reaches_compute_in_chromium(visit: Visit) -> None:
    visit.compute.asleep = True
    await visit.open("/dashboard")
    title = await visit.click("/dashboard/workspace/wake")
    assert not refused(title) and visit.compute.requests == [(visit.user.id, "wake")]


@pytest.mark.parametrize("action", ["restore", "delete"])
async def test_snapshot_buttons_reach_compute_in_chromium(visit: Visit, action: str) -> None:
    visit.compute.ready = True
    await visit.open("/dashboard")
    title = await visit.click(f"/dashboard/workspace/snapshots/snap1/{action}")
    assert not refused(title) and await visit.path() == "/dashboard"
    assert visit.compute.requests == [(visit.user.id, f"{action} snap1")]


async def test_take_a_snapshot_form_reaches_compute_in_chromium(visit: Visit) -> None:
    visit.compute.ready = True
    await visit.open("/dashboard")
    await visit.browser.evaluate(
        "document.querySelector('form[action=\"/dashboard/workspace/snapshots\"] "
        "input[name=name]').value = 'mine'")
    title = await visit.click("/dashboard/workspace/snapshots")
    assert not refused(title) and visit.compute.requests == [(visit.user.id, "snapshot mine")]


async def test_enter_editor_enters_in_chromium(visit: Visit) -> None:
    bob = await visit.markco.user("bob")
    await visit.open("/admin")
    title = await visit.click(f"/admin/enter/{bob.id}")
    assert not refused(title) and await visit.path() == f"/u/{bob.id}/"
    assert len(await visit.markco.events("admin.entry")) == 1


async def test_accept_invite_accepts_in_chromium(visit: Visit) -> None:
    owner = await visit.markco.login_as("carol")
    created = await owner.post("/api/v1/invites", headers=visit.markco.origin(),
                               json={"project": "thesis", "role": "viewer"})
    token = created.json()["token"]
    await visit.open(f"/invites/{token}")
    title = await visit.click(f"/invites/{token}/accept")
    assert not refused(title) and title.startswith("Invitation accepted")
    assert [g.project for g in await visit.markco.storage.list_grants(
        user_id=visit.user.id)] == ["thesis"]


async def test_no_form_is_left_unclicked(visit: Visit) -> None:
    bob = await visit.markco.user("bob")
    owner = await visit.markco.login_as("carol")
    created = await owner.post("/api/v1/invites", headers=visit.markco.origin(),
                               json={"project": "thesis", "role": "viewer"})
    token = created.json()["token"]
    seen: set[str] = set()
    for ready, asleep in ((False, False), (True, False), (False, True)):
        visit.compute.ready, visit.compute.asleep = ready, asleep
        await visit.open("/dashboard")
        seen.update(await visit.form_actions())
    for path in ("/admin", f"/invites/{token}", "/login"):
        await visit.open(path)
        seen.update(await visit.form_actions())
    generic = {re.sub(r"^/dashboard/workspace/snapshots/[^/]+/", "/dashboard/workspace/"
                      "snapshots/{snapshot}/", re.sub(r"^/admin/enter/[^/]+$",
                                                      "/admin/enter/{user}", a))
               .replace(token, "{token}") for a in seen}
    assert "/admin/enter/{user}" in generic and bob.id
    assert generic - CLICKED == set()
