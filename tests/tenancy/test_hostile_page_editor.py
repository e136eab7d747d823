"""A hostile web page cannot drive an editor it can reach: on the docker backend in egress mode
an editor's port is published on the host's loopback, and an editor run by hand listens there
too. The built-in editor (a real `markco-editor`, wired to a real runtime through the real
runtime front) is attacked by a page on another loopback origin — fetch and WebSocket, and
through a name that resolves to 127.0.0.1 (what DNS rebinding yields) — and runs nothing; the
same execute sent by a non-browser client runs, so the chain the page attacks is live."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from markco_trio.builtin.compute.front import RuntimeFront
from markco_trio.testing.chromium import chromium
from markco_trio.testing.system import missing_system

from .test_hostile_page import MARKER, exposed_runtime, free_port, serve_page  # noqa: F401

PAGE = """<!doctype html><meta charset="utf-8"><title>cute dogs</title>
<script>
window.results = [];
async function post(url, mode, type, body) {
  try {
    const r = await fetch(url, {method: "POST", mode, body, headers: {"Content-Type": type}});
    results.push([url, mode, r.status]);
  } catch (e) { results.push([url, mode, String(e)]); }
}
function socket(url, code) {
  return new Promise(resolve => {
    let ws;
    try { ws = new WebSocket(url); }
    catch (e) { results.push([url, "ws", String(e)]); return resolve(); }
    ws.onopen = () => {
      ws.send(JSON.stringify({type: "execute", code, execId: "page"}));
      results.push([url, "ws", "open"]);
      setTimeout(resolve, 1000);
    };
    ws.onerror = () => { results.push([url, "ws", "error"]); resolve(); };
    setTimeout(resolve, 5000);
  });
}
(async () => {
  const code = 'open(' + JSON.stringify(MARKER) + ', "w").write("pwned")';
  const body = JSON.stringify({code});
  for (const host of ["127.0.0.1", "localhost", "rebound.test"]) {
    const base = `http://${host}:${PORT}`;
    await post(base + "/api/execute", "no-cors", "text/plain", body);
    await post(base + "/api/execute", "cors", "application/json", body);
    await post(base + "/api/files", "no-cors", "text/plain",
               JSON.stringify({path: "planted.md", content: "pwned"}));
    await socket(`ws://${host}:${PORT}/ws`, code);
  }
  window.done = true;
})();
</script>"""


@pytest.fixture
async def editor(tmp_path: Path, exposed_runtime: tuple[int, Path],  # noqa: F811
                 nursery: trio.Nursery) -> AsyncIterator[tuple[int, Path]]:
    """markco-editor on 127.0.0.1:<port> (as a published container port would be), its
    runtime front (the real one) forwarding to the exposed runtime: (port, user dir)."""
    runtime_port, _ = exposed_runtime
    user_dir = tmp_path / "files"
    user_dir.mkdir()
    socket_path = tmp_path / "front" / "runtime.sock"

    async def locate(*, wake: bool) -> tuple[str, int]:
        return "127.0.0.1", runtime_port

    front = RuntimeFront("alice", socket_path, locate)
    await nursery.start(front.serve)
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CLOUD_MODE": "1",
           "HOST": "127.0.0.1", "PORT": str(port), "BASE_PATH": "/",
           "MARKCO_USER_DIR": str(user_dir), "MARKCO_RUNTIME_SOCKET": str(socket_path),
           "MARKCO_PUBLIC_URL": "https://markco.example.org", "CLOUD_USER_ID": "alice"}
    editor_command = str(Path(sys.executable).parent / "markco-editor")
    process = await nursery.start(partial(trio.run_process, [editor_command], env=env,
                                          check=False))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
        with trio.fail_after(20):
            while True:
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await trio.sleep(0.05)
    yield port, user_dir
    process.terminate()


async def test_a_hostile_page_cannot_drive_a_reachable_editor(
        editor: tuple[int, Path], exposed_runtime: tuple[int, Path],  # noqa: F811
        tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        missing_system("chromium", "apt-get install -y chromium")
    port, user_dir = editor
    _, runtime_cwd = exposed_runtime
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False,
                                 timeout=30) as http:
        direct = await http.post("/api/execute", json={"code": "open('direct', 'w')"})
    assert direct.status_code == 200 and (runtime_cwd / "direct").exists()
    html = PAGE.replace("MARKER", json.dumps(MARKER)).replace("PORT", str(port))
    async with trio.open_nursery() as nursery:
        page_port = await nursery.start(serve_page, html)
        async with chromium(tmp_path / "profile", extra_flags=(
                "--host-resolver-rules=MAP rebound.test 127.0.0.1",)) as browser:
            await browser.call("Page.enable")
            await browser.call("Page.navigate", {"url": f"http://127.0.0.2:{page_port}/"})
            await browser.wait_for("window.done === true", within=90)
            results = await browser.evaluate("JSON.stringify(window.results)")
        nursery.cancel_scope.cancel()
    assert not (runtime_cwd / MARKER).exists(), results
    assert not (user_dir / "planted.md").exists(), results
