"""Per-user editor origins in headless Chromium (issue 9 item 5b).

`--host-resolver-rules=MAP *.u.test 127.0.0.1` makes `http://<id>.u.test:<port>/` reach the
daemon on loopback (no DNS, nothing leaves the machine); the main origin is
`http://127.0.0.1:<port>`. A person logs in on the main origin, opens their editor origin, is
sent through the handshake and lands in the built-in editor, which lists and opens their files.
A hostile editor page on `<id>.u.test` cannot act on the main origin: it is another site now.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from markco_trio.builtin.auth.login_links import issue_login_link
from markco_trio.records import User
from markco_trio.testing.chromium import Browser, chromium

from .conftest import Markco, StartMarkco
from .test_single_origin import EditorAt

DOMAIN = "u.test"
RESOLVE_TO_LOOPBACK = (f"--host-resolver-rules=MAP *.{DOMAIN} 127.0.0.1",)

HOSTILE_SCRIPT = """
window.results = {};
const main = new URLSearchParams(location.search).get('main');
const attempt = async (name, fn) => {
  try { window.results[name] = String(await fn()); }
  catch (e) { window.results[name] = 'error: ' + e; }
};
const mint = (extra) => fetch(main + '/api/v1/tokens', Object.assign({
  method: 'POST', credentials: 'include', headers: {'content-type': 'application/json'},
  body: JSON.stringify({name: 'stolen', scopes: ['user', 'admin']})}, extra)
).then(async r => r.status + ' ' + await r.text());
(async () => {
  await attempt('mint', () => mint({}));
  await attempt('mint_no_cors', () => mint({mode: 'no-cors'}).then(() => 'sent'));
  await attempt('read_me', () => fetch(main + '/api/v1/me', {credentials: 'include'})
    .then(async r => r.status + ' ' + await r.text()));
  window.done = true;
})();
"""


async def hostile_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Any path: a page whose script tries to use the main origin's session."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = (f"<!doctype html><title>notebook</title><body><script>{HOSTILE_SCRIPT}"
            f"</script>").encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})


async def log_in(markco: Markco, browser: Browser, user: User) -> None:
    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=10)
    await browser.call("Page.navigate", {"url": link})
    await browser.wait_for("location.pathname === '/dashboard'")


def editor_origin(markco: Markco, user: User) -> str:
    port = markco.url.rpartition(":")[2]
    return f"http://{user.id}.{DOMAIN}:{port}"


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
    editor_at = EditorAt(("127.0.0.1", 0))
    markco = await start_markco(compute=editor_at, editor_domain=DOMAIN)
    owner = await markco.user("ada")
    # The editor is configured exactly as on a single origin (the front door presents
    # editor-origin requests to it with the public URL's Host and Origin).
    settings = EditorSettings(
        host="127.0.0.1", port=0, base_path=f"/u/{owner.id}/", user_dir=files,
        runtime_socket=None, runtime_port=None, cloud_mode=True, public_url=markco.url,
        owner=Owner(id=owner.id, name="Ada", username="ada", email="", avatar="", plan="free"))
    editor_at.address = ("127.0.0.1", await nursery.start(serve_editor, settings))
    async with chromium(tmp_path / "profile", extra_flags=RESOLVE_TO_LOOPBACK) as browser:
        await log_in(markco, browser, owner)
        yield EditorScene(markco, browser, owner, files)


@pytest.mark.system
async def test_opening_the_editor_origin_logs_in_there_and_the_editor_loads_files(
        editor_scene: EditorScene) -> None:
    browser, markco, owner = editor_scene.browser, editor_scene.markco, editor_scene.owner
    origin = editor_origin(markco, owner)
    await browser.call("Page.navigate", {"url": f"{origin}/#notes.md"})
    await browser.wait_for(f"location.origin === {json.dumps(origin)} && "
                           f"location.pathname === '/u/{owner.id}/'", within=20)
    assert "code=" not in await browser.evaluate("location.href")
    await browser.wait_for("document.getElementById('status').dataset.state === 'live'")
    await browser.wait_for("document.getElementById('source') !== null && "
                           "document.getElementById('source').value.includes('first line')")
    # The main session cookie stays on the main origin; the editor origin has its own.
    cookies = (await browser.call("Network.getAllCookies"))["cookies"]
    by_domain = {(c["domain"], c["name"]) for c in cookies}
    assert (f"{owner.id}.{DOMAIN}", "markco_editor") in by_domain
    assert ("127.0.0.1", "markco_session") in by_domain
    assert not any(c["name"] == "markco_session" and DOMAIN in c["domain"] for c in cookies)


@pytest.mark.system
async def test_the_main_origins_editor_link_leads_to_the_editor_origin(
        editor_scene: EditorScene) -> None:
    browser, markco, owner = editor_scene.browser, editor_scene.markco, editor_scene.owner
    await browser.call("Page.navigate", {"url": f"{markco.url}/u/{owner.id}/"})
    origin = editor_origin(markco, owner)
    await browser.wait_for(f"location.origin === {json.dumps(origin)} && "
                           "document.getElementById('status') !== null", within=20)


@dataclass
class HostileScene:
    markco: Markco
    browser: Browser
    admin: User


@pytest.fixture
async def hostile_scene(start_markco: StartMarkco, nursery: trio.Nursery,
                        tmp_path: Path) -> AsyncIterator[HostileScene]:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    binds = await nursery.start(serve, hostile_app, config)
    port = int(binds[0].rpartition(":")[2])
    markco = await start_markco(compute=EditorAt(("127.0.0.1", port)), editor_domain=DOMAIN)
    admin = await markco.user("root", admin=True)
    async with chromium(tmp_path / "profile", extra_flags=RESOLVE_TO_LOOPBACK) as browser:
        await log_in(markco, browser, admin)
        yield HostileScene(markco, browser, admin)


@pytest.mark.system
async def test_a_hostile_editor_page_on_its_origin_cannot_mint_a_token_on_the_main_origin(
        hostile_scene: HostileScene) -> None:
    browser, markco, admin = hostile_scene.browser, hostile_scene.markco, hostile_scene.admin
    origin = editor_origin(markco, admin)
    await browser.call("Page.navigate", {
        "url": f"{origin}/u/{admin.id}/?main={markco.url}"})
    await browser.wait_for(f"location.origin === {json.dumps(origin)} && "
                           "window.done === true", within=30)
    outcome = json.loads(await browser.evaluate("JSON.stringify(window.results)"))
    assert set(outcome) == {"mint", "mint_no_cors", "read_me"}
    for name in ("mint", "read_me"):  # no CORS for another site: nothing is readable
        assert outcome[name].startswith("error: "), (name, outcome[name])
        assert "root" not in outcome[name]
    assert await markco.storage.list_api_tokens(admin.id) == []
    assert await markco.events("token.created") == []
