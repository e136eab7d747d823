"""On a single origin, pages under `/u/` (editors, and the notebook output they render) cannot
act with the visitor's session on the rest of markco (issue 9, finding 5; DESIGN §5.2).

The hostile editor here is a real HTTP server behind the real front door; an admin opens it in
headless Chromium, and its script tries what such a page would: mint an admin API token (with
and without a Referer, and after `history.pushState` to `/dashboard`), read `/api/v1/me` and
the dashboard, frame the dashboard, script a dashboard window it opened, and post the admin
page's "Enter editor" form. Every attempt fails; nothing is created.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from markco_trio.builtin.auth.login_links import issue_login_link
from markco_trio.builtin.auth.origin import editor_initiated
from markco_trio.records import User
from markco_trio.testing.chromium import Browser, chromium

from .conftest import Markco, StartMarkco

HOSTILE_SCRIPT = """
window.results = {};
const attempt = async (name, fn) => {
  try { window.results[name] = String(await fn()); }
  catch (e) { window.results[name] = 'error: ' + e; }
};
const mint = (extra) => fetch('/api/v1/tokens', Object.assign({
  method: 'POST', headers: {'content-type': 'application/json'},
  body: JSON.stringify({name: 'stolen', scopes: ['user', 'admin']})}, extra)
).then(async r => r.status + ' ' + await r.text());
const framed = (src) => new Promise(done => {
  const f = document.createElement('iframe');
  f.onload = () => {
    try { done('read: ' + f.contentDocument.title + f.contentDocument.body.innerText); }
    catch (e) { done('error: ' + e); }
  };
  f.src = src;
  document.body.appendChild(f);
  setTimeout(() => done('timeout'), 5000);
});
const popup = (src) => new Promise(done => {
  const w = window.open(src);
  if (!w) { done('blocked'); return; }
  setTimeout(() => {
    try { done('read: ' + w.document.title + w.document.body.innerText); }
    catch (e) { done('error: ' + e); }
    try { w.close(); } catch (e) {}
  }, 2000);
});
(async () => {
  const here = location.pathname;
  await attempt('mint', () => mint({}));
  await attempt('mint_without_referrer', () => mint({referrerPolicy: 'no-referrer'}));
  const read = (path) => fetch(path).then(async r => r.status + ' ' + await r.text());
  await attempt('read_me', () => read('/api/v1/me'));
  await attempt('read_dashboard', () => read('/dashboard'));
  history.pushState({}, '', '/dashboard');
  await attempt('mint_after_push_state', () => mint({}));
  history.pushState({}, '', here);
  await attempt('frame_dashboard', () => framed('/dashboard'));
  await attempt('frame_me', () => framed('/api/v1/me'));
  await attempt('popup_dashboard', () => popup('/dashboard'));
  await attempt('popup_me', () => popup('/api/v1/me'));
  window.done = true;
})();
"""

FORM_SCRIPT = """
history.pushState({}, '', '/admin');
const form = document.createElement('form');
form.method = 'post';
form.action = '/admin/enter/' + new URLSearchParams(location.search).get('victim');
const token = document.createElement('input');
token.name = 'csrf'; token.value = 'guessed';
form.appendChild(token);
document.body.appendChild(form);
form.submit();
"""


async def hostile_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Any path: a page whose script attacks markco (`?form`: the form-post attack)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    script = FORM_SCRIPT if b"form" in scope.get("query_string", b"") else HOSTILE_SCRIPT
    body = f"<!doctype html><title>notebook</title><body><script>{script}</script>".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class EditorAt:
    """Compute as far as the editor gate asks: every user's editor is ready at `address`."""

    address: tuple[str, int]
    activity: list[tuple[str, str]] = field(default_factory=list)

    def editor_address_nowait(self, user_id: str) -> tuple[str, int] | None:
        return self.address

    def state_nowait(self, user_id: str) -> Any:
        return None

    def request_start(self, user_id: str, *, reason: str) -> None:
        return None

    def record_activity(self, user_id: str, kind: str) -> None:
        self.activity.append((user_id, kind))

    @contextmanager
    def subscribe_progress(self, user_id: str) -> Iterator[Any]:
        send, receive = trio.open_memory_channel[Any](0)
        with send, receive:
            yield receive


@dataclass
class Scene:
    markco: Markco
    browser: Browser
    admin: User
    victim: User


@pytest.fixture
async def scene(start_markco: StartMarkco, nursery: trio.Nursery,
                tmp_path: Path) -> AsyncIterator[Scene]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    binds = await nursery.start(serve, hostile_app, config)
    port = int(binds[0].rpartition(":")[2])
    markco = await start_markco(compute=EditorAt(("127.0.0.1", port)))
    admin = await markco.user("root", admin=True)
    victim = await markco.user("bob")
    link = await issue_login_link(markco.storage, markco.clock, admin, public_url=markco.url,
                                  minutes=10)
    async with chromium(tmp_path / "profile") as browser:
        await browser.call("Page.navigate", {"url": link})
        await browser.wait_for("location.pathname === '/dashboard'")
        yield Scene(markco, browser, admin, victim)


@pytest.mark.system
async def test_a_hostile_editor_page_cannot_mint_a_token_or_read_markco(scene: Scene) -> None:
    browser, markco = scene.browser, scene.markco
    await browser.call("Page.navigate", {"url": f"{markco.url}/u/{scene.admin.id}/"})
    await browser.wait_for("window.done === true", within=30)
    results = await browser.evaluate("JSON.stringify(window.results)")
    outcome = json.loads(results)
    assert set(outcome) == {"mint", "mint_without_referrer", "read_me", "read_dashboard",
                            "mint_after_push_state", "frame_dashboard", "frame_me",
                            "popup_dashboard", "popup_me"}
    for name in ("mint", "mint_without_referrer", "mint_after_push_state", "read_me"):
        assert outcome[name].startswith("403") and "editor_initiated" in outcome[name], name
    assert outcome["read_dashboard"].startswith("403") and "root" not in outcome["read_dashboard"]
    for name in ("frame_dashboard", "frame_me", "popup_dashboard", "popup_me"):
        assert not outcome[name].startswith("read: "), (name, outcome[name])
        assert "root" not in outcome[name], (name, outcome[name])
    assert await markco.storage.list_api_tokens(scene.admin.id) == []
    assert await markco.events("token.created") == []


@pytest.mark.system
async def test_a_hostile_editor_page_cannot_post_markco_forms(scene: Scene) -> None:
    browser, markco = scene.browser, scene.markco
    await browser.call("Page.navigate", {
        "url": f"{markco.url}/u/{scene.admin.id}/?form&victim={scene.victim.id}"})
    await browser.wait_for("location.pathname.startsWith('/admin/enter/') && "
                           "document.readyState === 'complete'")
    assert await browser.evaluate("document.title") == "Refused · markco"
    assert await markco.events("admin.entry") == []


@pytest.mark.system
async def test_the_dashboard_still_opens_from_a_link_in_an_editor(scene: Scene) -> None:
    browser, markco = scene.browser, scene.markco
    await browser.call("Page.navigate", {"url": f"{markco.url}/u/{scene.admin.id}/?form=no"})
    await browser.wait_for("document.readyState === 'complete'")
    await browser.evaluate("location.href = '/dashboard'")  # a link's navigation
    await browser.wait_for("location.pathname === '/dashboard' && "
                           "document.title === 'Dashboard · markco'")


# The rule itself, on what a browser sends.

NAVIGATION = {"site": "same-origin", "mode": "navigate", "dest": "document"}


@pytest.mark.parametrize(("mode", "dest"), [("cors", "empty"), ("no-cors", "image"),
                                            ("navigate", "iframe"), ("websocket", "empty"),
                                            ("same-origin", "empty")])
def test_same_origin_requests_that_are_not_top_level_navigations_are_refused(
        mode: str, dest: str) -> None:
    assert editor_initiated("/api/v1/me", site="same-origin", mode=mode, dest=dest,
                            referer="http://m/dashboard")
    assert editor_initiated("/dashboard", site="same-site", mode=mode, dest=dest, referer=None)


def test_top_level_navigations_from_anywhere_pass() -> None:
    assert not editor_initiated("/dashboard", referer="http://m/u/x/", **NAVIGATION)
    assert not editor_initiated("/dashboard", site="cross-site", mode="navigate",
                                dest="document", referer=None)


def test_cross_site_and_address_bar_requests_are_left_to_the_other_checks() -> None:
    for site in ("cross-site", "none"):
        assert not editor_initiated("/api/v1/me", site=site, mode="cors", dest="empty",
                                    referer=None)


def test_published_pages_are_not_guarded() -> None:
    assert not editor_initiated("/@alice/notes/img.png", site="same-origin", mode="no-cors",
                                dest="image", referer=None)


def test_without_fetch_metadata_a_referer_under_u_is_refused() -> None:
    assert editor_initiated("/api/v1/me", site=None, mode=None, dest=None,
                            referer="http://m/u/abc/")
    assert not editor_initiated("/api/v1/me", site=None, mode=None, dest=None,
                                referer="http://m/dashboard")
    assert not editor_initiated("/api/v1/me", site=None, mode=None, dest=None, referer=None)


async def test_a_browser_form_post_without_the_form_token_is_refused(
        start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    answer = await browser.post("/logout", data={"csrf": "guessed"}, headers={
        **markco.origin(), "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "document"})
    assert answer.status_code == 403 and "out of date" in answer.text
    assert (await browser.get("/dashboard")).status_code == 200  # still logged in


async def test_markco_responses_refuse_framing_and_openers(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    browser = await markco.login_as("alice")
    for path in ("/api/v1/me", "/dashboard"):
        response = await browser.get(path)
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cross-origin-opener-policy"] == "same-origin"


# The built-in editor keeps working behind the same front door and the same rules.


@dataclass
class EditorScene:
    markco: Markco
    browser: Browser
    owner: User
    files: Path


@pytest.fixture
async def editor_scene(start_markco: StartMarkco, nursery: trio.Nursery,
                       tmp_path: Path) -> AsyncIterator[EditorScene]:
    from markco_editor import EditorSettings, serve_editor
    from markco_editor.settings import Owner

    files = tmp_path / "files"
    files.mkdir()
    (files / "notes.md").write_text("# Notes\n\nfirst line\n")
    editor_at = EditorAt(("127.0.0.1", 0))  # the editor's port, once it listens
    markco = await start_markco(compute=editor_at)
    owner = await markco.user("ada")
    settings = EditorSettings(
        host="127.0.0.1", port=0, base_path=f"/u/{owner.id}/", user_dir=files,
        runtime_socket=None, runtime_port=None, cloud_mode=True, public_url=markco.url,
        owner=Owner(id=owner.id, name="Ada", username="ada", email="", avatar="", plan="free"))
    editor_at.address = ("127.0.0.1", await nursery.start(serve_editor, settings))
    link = await issue_login_link(markco.storage, markco.clock, owner, public_url=markco.url,
                                  minutes=10)
    async with chromium(tmp_path / "profile") as browser:
        await browser.call("Page.navigate", {"url": link})
        await browser.wait_for("location.pathname === '/dashboard'")
        yield EditorScene(markco, browser, owner, files)


@pytest.mark.system
async def test_the_built_in_editor_lists_opens_and_saves_files_in_chromium(
        editor_scene: EditorScene) -> None:
    browser, markco, owner = editor_scene.browser, editor_scene.markco, editor_scene.owner
    await browser.call("Page.navigate", {"url": f"{markco.url}/u/{owner.id}/#notes.md"})
    # Its WebSocket is up, its fetches listed and opened the file.
    await browser.wait_for("document.getElementById('status').dataset.state === 'live'")
    await browser.wait_for("document.getElementById('source').value.includes('first line')")
    await browser.evaluate(
        "const s = document.getElementById('source');"
        "s.value += 'saved from chromium\\n'; s.dispatchEvent(new Event('input'));"
        "document.getElementById('save').click(); true")
    await browser.wait_for("document.getElementById('doc-state').textContent === 'saved'")
    assert "saved from chromium" in (editor_scene.files / "notes.md").read_text()
    # ...and still, from this page, markco's API is out of reach.
    status = await browser.evaluate("fetch('/api/v1/me').then(r => r.status)",
                                    await_promise=True)
    assert status == 403
