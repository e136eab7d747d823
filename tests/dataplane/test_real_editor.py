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

import base64
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

from .conftest import NAVIGATE, XHR, eventually
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
        assert f'<base href="/u/{alice.id}/ui/">' in page.text  # the mrmd editor


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
            "document.querySelector('base').getAttribute('href')") == f"/u/{dave.id}/ui/"
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


# -- the mrmd editor in a browser (issue 13) ---------------------------------------------------

WELCOME = "Projects/Scratch/01-welcome.md"
# A 1x1 PNG: displayed by the runtime, it becomes an asset the runtime serves (/mrp/v1/assets).
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAA"
         "AABJRU5ErkJggg==")
DESKTOP = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True}


def artifacts_dir() -> Path:
    """Where screenshots are kept (gitignored): MARKCO_TEST_ARTIFACTS or ./test-artifacts."""
    path = Path(os.environ.get("MARKCO_TEST_ARTIFACTS")
                or Path(__file__).resolve().parents[2] / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def page_problems(browser: Any, origin: str) -> tuple[list[str], list[str]]:
    """(console errors and uncaught exceptions, requests to anywhere but `origin`) seen so
    far by the page."""
    errors, offsite = [], []
    ws_origin = "ws" + origin.removeprefix("http")
    for event in browser.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(json.dumps(params.get("args"))[:400])
        elif method == "Runtime.exceptionThrown":
            errors.append(json.dumps(params.get("exceptionDetails"))[:400])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            if "status of 503" in entry["text"] and "/api/" not in entry.get("url", "") and (
                    "/#file=" in entry.get("url", "")):
                continue  # the wait page is a 503 document by design (it replaces itself)
            errors.append(entry["text"] + " " + entry.get("url", ""))
        elif method in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            url = params.get("request", {}).get("url") or params.get("url", "")
            if not (url.startswith((origin + "/", ws_origin + "/", "data:", "blob:"))):
                offsite.append(url)
    return errors, offsite


class MrmdPage:
    """One headless-Chromium page on a user's mrmd editor through the markco proxy."""

    def __init__(self, browser: Any, markco: RealMarkco, owner_id: str) -> None:
        self.browser = browser
        self.markco = markco
        self.owner_id = owner_id

    async def open(self, rel: str = WELCOME) -> None:
        url = f"{self.markco.url}/u/{self.owner_id}/#file={rel}"
        await self.load("Page.navigate", {"url": url}, rel)

    async def load(self, method: str, params: dict[str, Any], rel: str = WELCOME) -> None:
        """Navigate or reload, then `wait_open`. A load Chromium broke off because it saw the
        host's network change (other tests make and remove network namespaces and veths:
        net::ERR_NETWORK_CHANGED) is tried again, its events dropped."""
        for attempt in range(3):
            mark = len(self.browser.events)
            await self.browser.call(method, params)
            try:
                await self.wait_open(rel)
                return
            except AssertionError as exc:
                if "ERR_NETWORK_CHANGED" not in str(exc) or attempt == 2:
                    raise
                del self.browser.events[mark:]

    async def wait_open(self, rel: str = WELCOME) -> None:
        """Wait for the notebook, and for the UI to attach its Python runtime to it (a block
        run before that finds no runtime: the UI says so on its console only)."""
        seen = len(self.browser.events)
        # Through the wait page if the editor is not up yet; then the UI opens the notebook.
        try:
            await self.browser.wait_for(
                "typeof state !== 'undefined' && !!state.editor && !!state.editor.view && "
                f"state.currentFile === '/home/user/{rel}'", within=60)
        except trio.TooSlowError:
            where = await self.browser.evaluate(
                "location.href + ' ' + document.title + ' ' + (typeof state !== 'undefined' "
                "? String(state.currentFile) : 'no state')")
            calls = [e["params"]["request"].get("postData", "")[:80] for e in self.browser.events
                     if e.get("method") == "Network.requestWillBeSent"
                     and e["params"]["request"]["url"].endswith("/api/bridge")]
            raise AssertionError(f"the notebook did not open ({where}): "
                                 f"{page_problems(self.browser, self.markco.url)}; "
                                 f"bridge calls: {calls}") from None
        with trio.move_on_after(60):
            while not any(e.get("method") == "Runtime.consoleAPICalled" and
                          "Registered Python runtime" in json.dumps(e["params"].get("args"))
                          for e in self.browser.events[seen:]):
                await self.browser.evaluate("1")  # collects the events that arrived
                await trio.sleep(0.1)
            return
        raise AssertionError("the UI never attached a Python runtime to the notebook: "
                             f"{page_problems(self.browser, self.markco.url)}")

    async def content(self) -> str:
        value = await self.browser.evaluate("state.editor.getContent()")
        return str(value)

    async def type_at_end(self, text: str) -> None:
        """Put the cursor at the end and type `text` as keyboard input."""
        await self.browser.evaluate(
            "state.editor.view.focus(); state.editor.view.dispatch("
            "{selection: {anchor: state.editor.view.state.doc.length}})")
        await self.browser.call("Input.insertText", {"text": text})

    async def key(self, key: str, code: int, modifiers: int = 0) -> None:
        for kind in ("keyDown", "keyUp"):
            await self.browser.call("Input.dispatchKeyEvent", {
                "type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code,
                "modifiers": modifiers})

    async def run_block_above(self) -> None:
        """From the line after a block's closing fence: into the block, Shift+Enter (run)."""
        await self.key("ArrowUp", 38)
        await self.key("ArrowUp", 38)
        await self.key("Enter", 13, modifiers=8)

    async def screenshot(self, name: str, metrics: dict[str, Any]) -> Path:
        await self.browser.call("Emulation.setDeviceMetricsOverride", metrics)
        await trio.sleep(0.5)
        shot = await self.browser.call("Page.captureScreenshot", {"format": "png"})
        path = artifacts_dir() / name
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


async def mrmd_browser(markco: RealMarkco, user: Any, profile: Path) -> Any:
    browser_cm = chromium(profile, popups=False, log=True)
    browser = await browser_cm.__aenter__()
    await browser.call("Network.enable")
    token = (await markco.cookie(user))["Cookie"].partition("=")[2]
    await browser.call("Network.setCookie", {
        "name": markco.authority.cookie_name, "value": token, "url": markco.url,
        "httpOnly": True, "sameSite": "Lax"})
    return browser_cm, browser


async def close_browser(browser_cm: Any, browser: Any) -> None:
    """Leave the page first, so its WebSockets close as a page's do, then close Chromium."""
    with trio.move_on_after(5):
        await browser.call("Page.navigate", {"url": "about:blank"})
        await trio.sleep(0.3)
    await browser_cm.__aexit__(None, None, None)


def user_file(markco: RealMarkco, user_id: str, rel: str = WELCOME) -> Path:
    return markco.root / "data" / "users" / user_id / rel


async def test_the_mrmd_editor_runs_a_block_saves_it_and_keeps_it_after_a_reload(
        markco: RealMarkco, tmp_path: Path) -> None:
    """The done-when walk: log in, open /u/<id>/ (the wait page, then the mrmd editor, with no
    console error and no request leaving the origin), open the welcome notebook, type a python
    block, run it, see 42; the file on disk has it; a reload shows it again. Screenshots at
    desktop and phone sizes are kept in test-artifacts/."""
    erin = await markco.user("erin")
    browser_cm, browser = await mrmd_browser(markco, erin, tmp_path / "profile")
    try:
        page = MrmdPage(browser, markco, erin.id)
        await page.open()
        assert "Welcome" in await page.content()
        await page.type_at_end("\n```python\nx = 6 * 7; x\n```\n")
        await page.run_block_above()
        await browser.wait_for(
            "document.querySelector('#editor').innerText.includes('Out[1]: 42')", within=60)
        on_disk = user_file(markco, erin.id)

        def saved() -> bool:
            text = on_disk.read_text()
            return "x = 6 * 7; x" in text and "Out[1]: 42" in text
        await eventually(saved, within=20)

        # Typing travels over the sync WebSocket; the page reports it as a non-GET request,
        # which markco's proxy records as the owner's activity.
        reported = [e for e in browser.events if e.get("method") == "Network.requestWillBeSent"
                    and e["params"]["request"]["url"].endswith(f"/u/{erin.id}/api/activity")]
        assert reported and reported[0]["params"]["request"]["method"] == "POST"
        record = markco.daemon.ctx.activity.last_nowait(erin.id)
        assert record is not None and record.request is not None

        await page.screenshot("mrmd-desktop.png", DESKTOP)
        await page.screenshot("mrmd-phone.png", PHONE)
        await browser.call("Emulation.clearDeviceMetricsOverride")

        await page.load("Page.reload", {})
        await browser.wait_for(
            "document.querySelector('#editor').innerText.includes('Out[1]: 42')", within=30)
        assert "x = 6 * 7; x" in await page.content()
        errors, offsite = page_problems(browser, markco.url)
    finally:
        await close_browser(browser_cm, browser)
    assert errors == []
    assert offsite == []


async def test_a_second_tab_sees_the_first_tabs_typing_live(
        markco: RealMarkco, tmp_path: Path) -> None:
    frank = await markco.user("frank")
    await markco.compute.ensure_started(frank.id, reason="test")
    first_cm, first = await mrmd_browser(markco, frank, tmp_path / "one")
    second_cm, second = await mrmd_browser(markco, frank, tmp_path / "two")
    try:
        one, two = MrmdPage(first, markco, frank.id), MrmdPage(second, markco, frank.id)
        await one.open()
        await two.open()
        await one.type_at_end("\nTyped in the first tab.\n")
        await second.wait_for(
            "state.editor.getContent().includes('Typed in the first tab.')", within=10)
    finally:
        await close_browser(second_cm, second)
        await close_browser(first_cm, first)


async def test_a_change_made_on_disk_reaches_the_open_editor(
        markco: RealMarkco, tmp_path: Path) -> None:
    """The user's code (or any program) rewrites the notebook: the open page shows it."""
    hana = await markco.user("hana")
    await markco.compute.ensure_started(hana.id, reason="test")
    browser_cm, browser = await mrmd_browser(markco, hana, tmp_path / "profile")
    try:
        page = MrmdPage(browser, markco, hana.id)
        await page.open()
        path = user_file(markco, hana.id)
        stat_before = path.stat()
        path.write_text(path.read_text() + "\nWritten by a program.\n")
        os.chown(path, stat_before.st_uid, stat_before.st_gid)
        await browser.wait_for(
            "state.editor.getContent().includes('Written by a program.')", within=15)
    finally:
        await close_browser(browser_cm, browser)


async def test_an_image_the_runtime_serves_is_displayed(
        markco: RealMarkco, tmp_path: Path) -> None:
    """A cell displays a PNG: the runtime serves it at /mrp/v1/assets/..., the UI fetches it
    (through the shim, the editor and the runtime front), saves it in the project's _assets/
    and shows it from the user's files."""
    gina = await markco.user("gina")
    await markco.compute.ensure_started(gina.id, reason="test")
    browser_cm, browser = await mrmd_browser(markco, gina, tmp_path / "profile")
    try:
        page = MrmdPage(browser, markco, gina.id)
        await page.open()
        await page.type_at_end(
            "\n```python\nimport base64\nfrom IPython.display import Image, display\n"
            f"display(Image(data=base64.b64decode('{PIXEL}')))\n```\n")
        # Into the block: three lines up from below its fence (the display line).
        await page.key("ArrowUp", 38)
        await page.run_block_above()
        await browser.wait_for(
            "[...document.querySelectorAll('#editor img')].some(i => "
            "i.src.includes('/files/Projects/Scratch/_assets/') && i.complete && "
            "i.naturalWidth === 1)", within=60)
        errors, offsite = page_problems(browser, markco.url)
    finally:
        await close_browser(browser_cm, browser)
    assets = user_file(markco, gina.id, "Projects/Scratch/_assets/generated")
    assert [p.suffix for p in assets.iterdir()] == [".png"]
    assert errors == [] and offsite == []


# -- the shim's routes in the authorisation matrix ---------------------------------------------


async def bridge_call(client: httpx.AsyncClient, markco: RealMarkco, owner_id: str,
                      headers: dict[str, str], call: str, *args: Any) -> httpx.Response:
    return await client.post(f"/u/{owner_id}/api/bridge", json={"call": call, "args": list(args)},
                             headers={**headers, **XHR, "Origin": markco.url})


async def mrp_execute(client: httpx.AsyncClient, markco: RealMarkco, owner_id: str,
                      headers: dict[str, str], code: str) -> httpx.Response:
    return await client.post(f"/u/{owner_id}/mrp/v1/execute", json={"code": code},
                             headers={**headers, **XHR, "Origin": markco.url})


async def test_another_users_shim_routes_are_refused_and_reach_nothing(
        markco: RealMarkco) -> None:
    """Alice's session on every shim route of bob's editor: 404 from markco, and bob's runtime
    front sees no execution."""
    alice, bob = await markco.user("alice"), await markco.user("bob")
    for user in (alice, bob):
        await markco.compute.ensure_started(user.id, reason="test")
    cookies = {u.username: await markco.cookie(u) for u in (alice, bob)}
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=60) as client:
        response = await mrp_execute(client, markco, bob.id, cookies["bob"], "secret = 'bob'")
        assert response.status_code == 200, response.text
        before = markco.compute.front_statistics_nowait(bob.id)
        assert before is not None
        refused = [
            await bridge_call(client, markco, bob.id, cookies["alice"], "file.read",
                              f"/home/user/{WELCOME}"),
            await mrp_execute(client, markco, bob.id, cookies["alice"], "print(secret)"),
            await client.get(f"/u/{bob.id}/mrp/v1/capabilities",
                             headers={**cookies["alice"], **XHR}),
            await client.get(f"/u/{bob.id}/files/{WELCOME}", headers={**cookies["alice"], **XHR}),
            await client.get(f"/u/{bob.id}/ui/editor/mrmd.iife.js",
                             headers={**cookies["alice"], **XHR}),
            await client.post(f"/u/{bob.id}/api/activity",
                              headers={**cookies["alice"], **XHR, "Origin": markco.url}),
        ]
        assert [r.status_code for r in refused] == [404] * len(refused)
        # Alice's own runtime route reaches alice's runtime: bob's variable is not there.
        mine = await mrp_execute(client, markco, alice.id, cookies["alice"], "print(secret)")
        assert mine.status_code == 200 and "bob" not in mine.text and "NameError" in mine.text
        after = markco.compute.front_statistics_nowait(bob.id)
        assert after is not None and after.executions == before.executions


async def test_the_bridge_confines_paths_to_the_owners_files(markco: RealMarkco) -> None:
    """Alice's own editor, asked for bob's files by every spelling of a path (his real
    directory, `..`, `~/..`, a symbolic link planted in alice's files as her code could):
    refused, never read."""
    alice, bob = await markco.user("alice"), await markco.user("bob")
    for user in (alice, bob):
        await markco.compute.ensure_started(user.id, reason="test")
    cookie = await markco.cookie(alice)
    bob_dir = markco.root / "data" / "users" / bob.id
    alice_dir = markco.root / "data" / "users" / alice.id
    (bob_dir / "Projects" / "Scratch" / "secret.md").write_text("bob's secret\n")
    (alice_dir / "Projects" / "link.md").symlink_to(bob_dir / "Projects/Scratch/secret.md")
    (alice_dir / "Projects" / "bobs").symlink_to(bob_dir / "Projects")
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=60) as client:
        for path in (str(bob_dir / "Projects/Scratch/secret.md"),
                     f"/home/user/../{bob.id}/Projects/Scratch/secret.md",
                     "~/../../etc/passwd", "/etc/passwd",
                     "/home/user/Projects/link.md",
                     "/home/user/Projects/bobs/Scratch/secret.md"):
            for call in ("file.read", "readPreview", "openFile"):
                response = await bridge_call(client, markco, alice.id, cookie, call, path)
                assert "bob's secret" not in response.text, (call, path)
                assert response.status_code == 200 and "value" not in response.json()
                assert response.json()["error"]["status"] in (400, 403), (call, path)
        listing = await bridge_call(client, markco, alice.id, cookie, "scanFiles", "/home/user")
        assert listing.status_code == 200 and "secret.md" not in listing.text
        for rel in ("Projects/link.md", "Projects/bobs/Scratch/secret.md"):
            raw = await client.get(f"/u/{alice.id}/files/{rel}", headers={**cookie, **XHR})
            assert raw.status_code == 403 and "bob's secret" not in raw.text
        written = await bridge_call(client, markco, alice.id, cookie, "file.write",
                                    "/home/user/Projects/bobs/Scratch/secret.md", "overwritten")
        assert written.json()["error"] == {
            "code": "outside_workspace", "status": 403,
            "message": written.json()["error"]["message"]}
    assert (bob_dir / "Projects/Scratch/secret.md").read_text() == "bob's secret\n"


async def handshake_status(markco: RealMarkco, path: str, headers: dict[str, str]) -> int:
    """The status of a WebSocket handshake for `path` (101: accepted)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{markco.port}", "Upgrade: websocket",
             "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13", f"Origin: {markco.url}",
             *(f"{k}: {v}" for k, v in headers.items())]
    stream = await trio.open_tcp_stream("127.0.0.1", markco.port)
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        with trio.fail_after(10):
            while b"\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                data += chunk
    return int(data.split(b" ", 2)[1])


async def test_the_sync_endpoint_refuses_files_outside_the_owners(
        markco: RealMarkco, tmp_path: Path) -> None:
    """A Yjs document is opened only for a markdown file inside the owner's files: a link to
    another user's file, a `..` and a missing file are refused before the handshake."""
    from trio_websocket import open_websocket_url

    alice, bob = await markco.user("alice"), await markco.user("bob")
    await markco.compute.ensure_started(alice.id, reason="test")
    bob_dir = markco.root / "data" / "users" / bob.id
    (bob_dir / "Projects").mkdir(parents=True, exist_ok=True)
    (bob_dir / "Projects" / "secret.md").write_text("bob's secret\n")
    alice_dir = markco.root / "data" / "users" / alice.id
    (alice_dir / "Projects" / "link.md").symlink_to(bob_dir / "Projects" / "secret.md")
    cookie = await markco.cookie(alice)
    ws_base = "ws" + markco.url.removeprefix("http") + f"/u/{alice.id}/sync/"
    headers = [(k, v) for k, v in {**cookie, "Origin": markco.url}.items()]
    for doc in ("Projects/link", "Projects/%2E%2E/%2E%2E/x", "Projects/missing"):
        status = await handshake_status(markco, f"/u/{alice.id}/sync/{doc}", cookie)
        assert status != 101, doc
    # The same handshake for her own notebook is accepted: the refusals are about the path.
    assert await handshake_status(
        markco, f"/u/{alice.id}/sync/Projects/Scratch/01-welcome", cookie) == 101
    async with open_websocket_url(ws_base + "Projects/Scratch/01-welcome",
                                  extra_headers=headers) as ws:
        await ws.send_message(b"\x00\x00\x01\x00")  # sync step 1 with an empty state vector
        with trio.fail_after(10):
            while True:  # the server's own step 1 first, then its answer: the document
                reply = await ws.get_message()
                if isinstance(reply, bytes) and b"Welcome" in reply:
                    break
