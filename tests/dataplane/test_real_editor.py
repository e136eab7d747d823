"""End to end with real compute: the process backend, `mrmd-python` runtimes behind their
runtime fronts, and the built-in editor (`markco-editor`) per user (see `real_compute.py`).

- A navigation to a stopped user's `/u/<id>/` shows the wait page, which follows the start and
  lands in the editor — with httpx reading the page's progress stream, and in headless Chromium
  running the page's own script; an XHR to it gets 503 and starts nothing.
- The runtime-front column of the authorisation matrix: code runs in a runtime only through the
  editor of its owner, by those the editor lets in; another user's paths and credentials never
  reach it; each front is a unix socket of its own, 0600.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from markco_trio.builtin.auth.tokens import hash_token, new_token
from markco_trio.builtin.compute.front import front_socket_path
from markco_trio.records import GrantRole
from markco_trio.testing.chromium import chromium

from .conftest import NAVIGATE, XHR
from .real_compute import RealMarkco, real_markco

pytestmark = pytest.mark.system


@pytest.fixture
async def markco(nursery: trio.Nursery) -> Any:
    async with real_markco(nursery) as running:
        yield running


async def progress_until_done(client: httpx.AsyncClient, user_id: str,
                              headers: dict[str, str]) -> list[str]:
    kinds = []
    with trio.fail_after(60):
        async with client.stream("GET", f"/_markco/progress/{user_id}",
                                 headers={**headers, **XHR}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kinds.append(line[7:])
    return kinds


async def test_a_navigation_waits_for_the_editor_and_lands_in_it(markco: RealMarkco) -> None:
    alice = await markco.user("alice")
    cookie = await markco.cookie(alice)
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=30) as client:
        xhr = await client.get(f"/u/{alice.id}/api/files", headers={**cookie, **XHR})
        assert xhr.status_code == 503 and xhr.headers["retry-after"] == "2"
        await trio.sleep(0.3)
        state = markco.compute.state_nowait(alice.id)
        assert state.operation is None and state.editor.state is None  # nothing started

        wait = await client.get(f"/u/{alice.id}/", headers={**cookie, **NAVIGATE})
        assert wait.status_code == 503 and "Starting your editor" in wait.text
        kinds = await progress_until_done(client, alice.id, cookie)
        assert kinds[0] == "progress" and kinds[-1] == "ready"

        page = await client.get(f"/u/{alice.id}/", headers={**cookie, **NAVIGATE})
        assert page.status_code == 200
        assert f'<base href="/u/{alice.id}/">' in page.text


async def test_headless_chromium_shows_the_wait_page_then_the_editor(
        markco: RealMarkco, tmp_path: Path) -> None:
    dave = await markco.user("dave")
    token = (await markco.cookie(dave))["Cookie"].partition("=")[2]
    async with chromium(tmp_path / "profile", popups=False, log=True) as browser:
        await browser.call("Network.enable")
        await browser.call("Network.setCookie", {
            "name": markco.authority.cookie_name, "value": token, "url": markco.url,
            "httpOnly": True, "sameSite": "Lax"})
        await browser.call("Page.navigate", {"url": f"{markco.url}/u/{dave.id}/"})
        titles: list[str] = []
        with trio.fail_after(60):
            while True:
                title = await browser.evaluate("document.title")
                if title and (not titles or titles[-1] != title):
                    titles.append(title)
                if await browser.evaluate("!!document.querySelector('base[href]')"):
                    break
                await trio.sleep(0.1)
        assert titles[0] == "Starting your editor\u2026"
        assert await browser.evaluate("location.pathname") == f"/u/{dave.id}/"
        assert await browser.evaluate(
            "document.querySelector('base').getAttribute('href')") == f"/u/{dave.id}/"
    violations = [e for e in browser.events
                  if "Content Security Policy" in json.dumps(e.get("params", {}))]
    assert violations == []  # the wait page and the editor keep to their own CSPs
    assert markco.compute.editor_address_nowait(dave.id) is not None


async def execute(client: httpx.AsyncClient, owner_id: str, headers: dict[str, str],
                  code: str) -> tuple[int, str]:
    """Run `code` through `owner_id`'s editor; (status, everything printed or the error)."""
    response = await client.post(f"/u/{owner_id}/api/execute", json={"code": code},
                                 headers={**headers, **XHR})
    if response.status_code != 200:
        return response.status_code, ""
    out = []
    kind = ""
    for line in response.text.splitlines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind in ("stdout", "error"):
            data = json.loads(line[6:])
            out.append(data.get("content") or data.get("message") or json.dumps(data))
    return 200, "".join(out)


async def grant(markco: RealMarkco, owner_id: str, holder_id: str, role: str) -> None:
    storage = markco.daemon.ctx.require_storage()
    now = markco.daemon.ctx.clock.now()
    token = new_token()
    await storage.create_invite(owner_id=owner_id, project="notes", role=GrantRole(role),
                                token_hash=hash_token(token), expires_at=None, max_uses=1,
                                now=now)
    assert await storage.accept_invite(hash_token(token), user_id=holder_id, now=now)
    markco.authority.evict_user(holder_id)


async def test_the_runtime_front_is_reached_only_through_its_owners_editor(
        markco: RealMarkco) -> None:
    alice, bob = await markco.user("alice"), await markco.user("bob")
    carol, eve = await markco.user("carol"), await markco.user("eve")
    root = await markco.user("root", admin=True)
    await grant(markco, alice.id, bob.id, "editor")
    await grant(markco, alice.id, carol.id, "viewer")
    async with trio.open_nursery() as nursery:
        for user in (alice, bob):
            nursery.start_soon(lambda u: markco.compute.ensure_started(u.id, reason="test"),
                               user)
    cookies = {u.username: await markco.cookie(u) for u in (alice, bob, carol, eve, root)}
    root_token = cookies["root"]["Cookie"].partition("=")[2]
    markco.authority.grant_admin_entry(root_token, alice.id)

    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=60) as client:
        status, out = await execute(client, alice.id, cookies["alice"],
                                    "secret = 'alice-' + 'only'\nprint(secret)")
        assert (status, out.strip()) == (200, "alice-only")
        status, out = await execute(client, bob.id, cookies["bob"], "secret = 'bob'")
        assert status == 200
        # Allowed cells: the collaborator and the admin who entered reach ALICE's runtime.
        for who in ("bob", "root"):
            status, out = await execute(client, alice.id, cookies[who], "print(secret)")
            assert (status, out.strip()) == (200, "alice-only"), who
        # bob's own editor reaches bob's runtime, never alice's.
        status, out = await execute(client, bob.id, cookies["bob"], "print(secret)")
        assert (status, out.strip()) == (200, "bob")
        executions_before = markco.compute.front_statistics_nowait(alice.id)
        assert executions_before is not None
        # Refused cells: nothing reaches alice's front.
        refused = [(cookies["carol"], 404), (cookies["eve"], 404), ({}, 401)]
        for headers, expected in refused:
            assert (await execute(client, alice.id, headers, "print(secret)"))[0] == expected
        assert (await execute(client, bob.id, cookies["root"], "print(secret)"))[0] == 404
        assert (await execute(client, bob.id, cookies["alice"], "print(secret)"))[0] == 404
        for path in (f"/u/{bob.id}/../{alice.id}/api/execute",
                     f"/u/{bob.id}/%2e%2e/{alice.id}/api/execute",
                     f"/u/{alice.id}%2f..%2f{bob.id}/api/execute"):
            response = await client.post(path, json={"code": "print(secret)"},
                                         headers={**cookies["eve"], **XHR})
            assert response.status_code in (400, 404), path
        after = markco.compute.front_statistics_nowait(alice.id)
        assert after is not None and after.executions == executions_before.executions

    # Each front is a socket of its own: 0600, in a 0711 directory, owned by the daemon.
    fronts = markco.compute.fronts_dir
    for user in (alice, bob):
        socket_path = front_socket_path(fronts, user.id)
        mode = socket_path.lstat()
        assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o600
        directory = socket_path.parent.lstat()
        assert stat.S_IMODE(directory.st_mode) == 0o711 and directory.st_uid == os.geteuid()
    assert front_socket_path(fronts, alice.id) != front_socket_path(fronts, bob.id)
