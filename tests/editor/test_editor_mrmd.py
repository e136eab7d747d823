"""The mrmd editor's server side (issue 13): the page and its files, the electronAPI bridge,
the Yjs sync endpoint with the .md file as its persistence, the MRP forward."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from editor_testing import RawRequest
from markco_editor.mrmd_ui import find_ui_dir
from trio_websocket import open_websocket_url


def test_the_ui_cache_is_installed() -> None:
    """scripts/bootstrap fetches the UI: without it the default editor cannot be served (this
    test fails rather than the others skipping silently)."""
    assert find_ui_dir() is not None, "run scripts/bootstrap (scripts/fetch-editor-ui)"


@pytest.fixture
def scratch(user_dir: Path) -> Path:
    project = user_dir / "Projects" / "Scratch"
    project.mkdir(parents=True)
    (project / "mrmd.md").write_text("---\ntitle: Scratch\n---\n# Scratch\n")
    (project / "01-welcome.md").write_text("# Welcome\n\nHello.\n")
    return project


@pytest.fixture
async def mrmd(serve_in_process: Callable[..., Awaitable[str]],
               scratch: Path) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    base_url = await serve_in_process()
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        yield base_url, client


async def bridge(client: httpx.AsyncClient, call: str, *args: Any) -> httpx.Response:
    return await client.post("/api/bridge", json={"call": call, "args": list(args)})


# -- the page -------------------------------------------------------------------------------


async def test_the_page_is_the_mrmd_ui_under_a_csp_that_keeps_to_the_origin(
        mrmd: tuple[str, httpx.AsyncClient]) -> None:
    _, client = mrmd
    page = await client.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    for name in ("default-src", "connect-src", "img-src", "font-src", "style-src",
                 "script-src"):
        sources = directives[name].split()
        assert all(s in ("'self'", "'unsafe-inline'", "'unsafe-eval'", "data:", "blob:")
                   for s in sources), (name, sources)
    text = page.text
    assert '<base href="/u/alice/ui/">' in text
    assert text.index('static/mrmd-shim.js') < text.index('editor/mrmd.iife.js')
    assert "fonts.googleapis.com" not in text and "http-equiv=\"Content-Security" not in text
    bundle = await client.get("/ui/editor/mrmd.iife.js")
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith(
        "text/javascript")
    again = await client.get("/ui/editor/mrmd.iife.js",
                             headers={"If-None-Match": bundle.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("path", [
    "/ui/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/ui/..%2Findex.html", "/ui/.markco-ui-stamp",
    "/ui/index.html", "/ui/package.json/..", "/ui/editor",
])
async def test_ui_files_stay_inside_the_ui(mrmd: tuple[str, httpx.AsyncClient],
                                           raw_request: RawRequest, path: str) -> None:
    base_url, _ = mrmd
    port = int(base_url.rpartition(":")[2])
    status, body = await raw_request(port, f"GET {path} HTTP/1.1\r\nHost: localhost\r\n"
                                       "Connection: close\r\n\r\n")
    assert status in (400, 404), (path, status)
    assert b"root:" not in body


async def test_the_basic_editor_is_still_at_basic(mrmd: tuple[str, httpx.AsyncClient]) -> None:
    _, client = mrmd
    page = await client.get("/basic")
    assert page.status_code == 200 and 'id="notice"' in page.text


# -- the bridge -----------------------------------------------------------------------------


async def test_the_bridge_opens_a_notebook_of_a_project(
        mrmd: tuple[str, httpx.AsyncClient]) -> None:
    _, client = mrmd
    opened = (await bridge(client, "openFile",
                           "/home/user/Projects/Scratch/01-welcome.md")).json()["value"]
    assert opened == {"success": True, "docName": "01-welcome",
                      "projectDir": "/home/user/Projects/Scratch", "pythonPort": None}
    project = (await bridge(client, "project.get",
                            "/home/user/Projects/Scratch/01-welcome.md")).json()["value"]
    assert project["root"] == "/home/user/Projects/Scratch"
    assert project["config"]["name"] == "Scratch"
    assert project["navTree"] == [{"path": "01-welcome.md", "title": "Welcome",
                                   "isFolder": False, "children": []}]


async def test_the_bridge_saves_assets_and_reuses_identical_ones(
        mrmd: tuple[str, httpx.AsyncClient], scratch: Path) -> None:
    _, client = mrmd
    root = "/home/user/Projects/Scratch"
    first = (await bridge(client, "asset.save", root, [1, 2, 3], "generated/a.png")).json()
    same = (await bridge(client, "asset.save", root, [1, 2, 3], "generated/a.png")).json()
    other = (await bridge(client, "asset.save", root, [4], "generated/a.png")).json()
    assert first["value"] == {"path": "generated/a.png", "deduplicated": False}
    assert same["value"] == {"path": "generated/a.png", "deduplicated": True}
    assert other["value"]["path"] == "generated/a-1.png"
    assert (scratch / "_assets/generated/a.png").read_bytes() == b"\x01\x02\x03"
    raw = await client.get("/files/Projects/Scratch/_assets/generated/a.png")
    assert raw.content == b"\x01\x02\x03" and raw.headers["content-type"] == "image/png"
    assert "sandbox" in raw.headers["content-security-policy"]
    relative = await bridge(client, "asset.relativePath", "generated/a.png", "01-welcome.md")
    assert relative.json()["value"] == "_assets/generated/a.png"


@pytest.mark.parametrize("filename", ["../../x.png", "/etc/x.png", ".hidden.png"])
async def test_the_bridge_refuses_asset_names_that_leave_the_assets(
        mrmd: tuple[str, httpx.AsyncClient], filename: str, user_dir: Path) -> None:
    _, client = mrmd
    response = await bridge(client, "asset.save", "/home/user/Projects/Scratch", [1], filename)
    assert response.json()["error"]["status"] == 400
    assert sorted(p.name for p in await trio.Path(user_dir).iterdir()) == ["Projects"]


async def test_settings_are_kept_in_the_users_directory(
        mrmd: tuple[str, httpx.AsyncClient], user_dir: Path) -> None:
    _, client = mrmd
    assert (await bridge(client, "settings.set", "editor.theme", "dark")).status_code == 200
    assert (await bridge(client, "settings.get", "editor.theme")).json()["value"] == "dark"
    stored = json.loads((user_dir / ".markco" / "mrmd-settings.json").read_text())
    assert stored == {"editor": {"theme": "dark"}}


async def test_desktop_only_calls_say_so(mrmd: tuple[str, httpx.AsyncClient]) -> None:
    _, client = mrmd
    response = await bridge(client, "createVenv", "/home/user/.venv")
    assert response.status_code == 200 and response.json()["error"]["status"] == 400
    assert "not available in the browser" in response.json()["error"]["message"]
    other = await bridge(client, "runtime.ensureEffective", "/home/user/a.md", "julia")
    assert other.json()["value"]["available"] is False


# -- the runtime forward ----------------------------------------------------------------------


async def test_mrp_calls_go_to_the_editors_runtime_front(
        serve_in_process: Callable[..., Awaitable[str]], scratch: Path,
        runtime_front: Any) -> None:
    base_url = await serve_in_process(MARKCO_RUNTIME_SOCKET=str(runtime_front.socket_path))
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        before = runtime_front.connections
        response = await client.post("/mrp/v1/execute", json={"code": "6 * 7"},
                                     headers={"Origin": base_url})
        assert response.status_code == 200, response.text
        assert "42" in response.text
        assert runtime_front.connections > before
        bad = await client.post("/mrp/v1/%2e%2e/%2e%2e/health", json={})
        assert bad.status_code in (400, 404)


async def test_mrp_calls_without_a_runtime_are_503(mrmd: tuple[str, httpx.AsyncClient]) -> None:
    _, client = mrmd
    response = await client.get("/mrp/v1/capabilities")
    assert response.status_code == 503


# -- the Yjs sync endpoint ------------------------------------------------------------------


async def read_document(ws: Any) -> bytes:
    """Ask for the whole document (sync step 1, empty state vector); its update bytes."""
    await ws.send_message(b"\x00\x00\x01\x00")
    with trio.fail_after(10):
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes) and message[:2] == b"\x00\x01":
                return message


async def test_a_document_opens_with_the_file_and_outside_changes_reach_it(
        mrmd: tuple[str, httpx.AsyncClient], scratch: Path) -> None:
    base_url, _ = mrmd
    ws_url = "ws" + base_url.removeprefix("http") + "/sync/Projects/Scratch/01-welcome"
    async with open_websocket_url(ws_url) as ws:
        assert b"Hello." in await read_document(ws)
        (scratch / "01-welcome.md").write_text("# Welcome\n\nChanged outside.\n")
        with trio.fail_after(10):
            while True:  # the change arrives as an update broadcast to the room
                message = await ws.get_message()
                if isinstance(message, bytes) and b"Changed outside" in message:
                    break


async def test_edits_from_a_client_are_saved_to_the_file(
        mrmd: tuple[str, httpx.AsyncClient], scratch: Path) -> None:
    """A pycrdt client (what a browser's Y.Doc is) edits `content`; the file follows."""
    from pycrdt import Doc, Text

    base_url, _ = mrmd
    ws_url = "ws" + base_url.removeprefix("http") + "/sync/Projects/Scratch/01-welcome"
    async with open_websocket_url(ws_url) as ws:
        update = await read_document(ws)
        doc: Doc[Any] = Doc()
        # The answer is a y-protocols sync step 2: [0 messageSync][1 step2][varint len][update]
        payload, _ = _read_var_bytes(update, 2)
        doc.apply_update(payload)
        text = doc.get("content", type=Text)
        assert str(text).startswith("# Welcome")
        before = doc.get_state()
        text += "Typed in the browser.\n"
        edit = doc.get_update(before)
        await ws.send_message(b"\x00\x02" + _var_uint(len(edit)) + edit)
        path = scratch / "01-welcome.md"
        await saved_to(path, "Typed in the browser.")
    assert path.read_text() == "# Welcome\n\nHello.\nTyped in the browser.\n"
    assert not [p for p in await trio.Path(scratch).iterdir() if p.name.startswith(".markco-")]


async def saved_to(path: Path, text: str) -> None:
    """Wait until the file holds `text` (the editor saves debounced, from its own task)."""
    with trio.fail_after(10):
        while text not in await trio.Path(path).read_text():  # noqa: ASYNC110 (polling a file)
            await trio.sleep(0.05)


@pytest.mark.parametrize("doc", ["Projects/Scratch/missing", "Projects/%2e%2e/%2e%2e/x",
                                 "Projects/Scratch/.hidden"])
async def test_sync_refuses_what_is_not_a_notebook_of_the_user(
        mrmd: tuple[str, httpx.AsyncClient], doc: str) -> None:
    base_url, _ = mrmd
    port = int(base_url.rpartition(":")[2])
    assert await handshake_status(port, "/sync/" + doc) != 101
    assert await handshake_status(port, "/sync/Projects/Scratch/01-welcome") == 101


async def handshake_status(port: int, path: str) -> int:
    """The status of a raw WebSocket handshake (trio-websocket leaks a refused socket)."""
    head = (f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n")
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head.encode())
        data = b""
        with trio.fail_after(5):
            while b"\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                data += chunk
    return int(data.split(b" ", 2)[1])


def _var_uint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_var_bytes(data: bytes, offset: int) -> tuple[bytes, int]:
    length = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return data[offset:offset + length], offset + length


async def test_scanning_above_the_home_scans_the_home(
        mrmd: tuple[str, httpx.AsyncClient]) -> None:
    """The UI scans `/` before it knows the home: the virtual file system holds only it."""
    _, client = mrmd
    for root in ("/", "/home", "/home/"):
        found = (await bridge(client, "scanFiles", root)).json()["value"]
        assert "/home/user/Projects/Scratch/01-welcome.md" in found["files"], root
    elsewhere = (await bridge(client, "scanFiles", "/etc")).json()
    assert elsewhere["error"]["status"] == 403


async def test_the_cloud_status_says_the_user_is_on_markco(
        mrmd: tuple[str, httpx.AsyncClient]) -> None:
    _, client = mrmd
    status = (await bridge(client, "cloud.status")).json()["value"]
    assert status["signedIn"] is True and status["user"]["name"] == "Alice Liddell"
    assert status["syncStatus"]["totals"]["documents"] == 2


async def test_the_shim_sends_local_urls_to_the_editor_or_nowhere(
        serve_in_process: Callable[..., Awaitable[str]], scratch: Path, tmp_path: Path) -> None:
    """In the page: runtime URLs (any port) land on the editor's own mrp/ route, sync URLs on
    sync/<folder>/, and any other loopback URL is refused before a request is made — so the
    UI cannot be steered to another port (another user's runtime) or off the origin."""
    from markco_trio.testing.chromium import chromium

    base_url = await serve_in_process(BASE_PATH="/")
    async with chromium(tmp_path / "chromium", popups=False) as browser:
        await browser.call("Network.enable")
        await browser.call("Page.navigate", {"url": f"{base_url}/"})
        await browser.wait_for("!!window.markcoShim && typeof state !== 'undefined'")
        rewrite = "(u) => { try { return markcoShim.rewrite(u); } catch (e) { return 'refused'; } }"
        cases = {
            "http://127.0.0.1:41765/mrp/v1/execute": f"{base_url}/mrp/v1/execute",
            "http://localhost:1234/mrp/v1/assets/a.png?x=1": f"{base_url}/mrp/v1/assets/a.png?x=1",
            "http://127.0.0.1:5432/": "refused",
            "http://127.0.0.1:41765/admin": "refused",
            "ws://127.0.0.1:40001/doc": "refused",  # no sync port handed out yet
            "https://example.org/x": "https://example.org/x",  # not local: left to the CSP
        }
        for url, expected in cases.items():
            got = await browser.evaluate(f"({rewrite})({json.dumps(url)})")
            assert got == expected, url
        opened = await browser.evaluate(
            "electronAPI.openFile('/home/user/Projects/Scratch/01-welcome.md')"
            ".then(r => markcoShim.rewrite(`ws://127.0.0.1:${r.syncPort}/01-welcome`))",
            await_promise=True)
        assert opened == "ws" + base_url.removeprefix("http") + \
            "/sync/Projects/Scratch/01-welcome"
        refused = await browser.evaluate(
            "fetch('http://127.0.0.1:9/mrp-not').then(() => 'sent', e => e.message)",
            await_promise=True)
        assert "not available in the browser" in refused
        sent = [e["params"]["request"]["url"] for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"]
        assert not [u for u in sent if ":9/" in u]


async def test_stopping_the_editor_saves_what_is_still_in_the_save_delay(
        scratch: Path, user_dir: Path) -> None:
    """An edit made just before the editor stops (markco stops idle editors with SIGTERM)
    reaches the file although its debounced save had not run yet."""
    from markco_editor.sync import DocumentSync
    from markco_editor.workspace import Workspace
    from pycrdt import Text

    sync = DocumentSync(Workspace(user_dir))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sync.run)
        sync._needed.set()
        await sync._ready.wait()
        room = await sync._server.get_room("Projects/Scratch/01-welcome.md")
        text = room.ydoc.get("content", type=Text)
        text += "Last words.\n"
        nursery.cancel_scope.cancel()  # at once: well inside SAVE_DELAY
    saved = await trio.Path(scratch / "01-welcome.md").read_text()
    assert saved.endswith("Last words.\n")


async def test_reported_input_goes_to_the_runtime_front(
        serve_in_process: Callable[..., Awaitable[str]], scratch: Path, tmp_path: Path) -> None:
    """`POST api/activity` becomes `POST /markco/v1/activity` on the front (docs/
    editor-contract.md), with none of the page's headers."""
    import socket

    seen: list[bytes] = []
    path = tmp_path / "front.sock"

    async def front(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(4096)
            seen.append(data)
            await stream.send_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, front, [trio.SocketListener(sock)])
        base_url = await serve_in_process(MARKCO_RUNTIME_SOCKET=str(path))
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            answer = await client.post("/api/activity", headers={
                "Origin": base_url, "Sec-Fetch-Site": "same-origin"})
        nursery.cancel_scope.cancel()
    assert answer.status_code == 204
    assert len(seen) == 1 and seen[0].startswith(b"POST /markco/v1/activity HTTP/1.1")
    assert b"origin" not in seen[0].lower() and b"sec-fetch" not in seen[0].lower()
