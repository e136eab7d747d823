"""A hostile web page in a local browser cannot run code in any runtime: a page served on
another loopback origin (http://127.0.0.2:<port>/) tries every address of a user's workloads it
could know — the runtime's and the editor's ports on 127.0.0.1 and localhost, HTTP (simple
`no-cors` requests and CORS ones) and WebSocket — with a payload that would create a marker
file. None appears. A control runtime exposed the old way (mrmd-python on a host loopback port)
is hit by the same page: its marker appears, so the page's attacks are real ones."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h11
import pytest
import trio

from markco_trio.dial import parse
from markco_trio.testing.chromium import chromium
from markco_trio.testing.system import missing_system

from .conftest import Tenants

MARKER = "pwned-by-a-web-page"

PAGE = """<!doctype html><meta charset="utf-8"><title>cute cats</title>
<script>
window.results = [];
const payload = 'open(' + JSON.stringify(MARKER) + ', "w").write("pwned")';
async function post(url, mode, type, body) {
  try {
    const r = await fetch(url, {method: "POST", mode, body, headers: {"Content-Type": type}});
    results.push([url, mode, r.status]);
  } catch (e) { results.push([url, mode, String(e)]); }
}
function socket(url) {
  return new Promise(resolve => {
    let ws;
    try { ws = new WebSocket(url); }
    catch (e) { results.push([url, "ws", String(e)]); return resolve(); }
    ws.onopen = () => {
      ws.send(JSON.stringify({type: "execute", code: payload, execId: "page"}));
      results.push([url, "ws", "open"]);
      setTimeout(resolve, 1000);
    };
    ws.onerror = () => { results.push([url, "ws", "error"]); resolve(); };
    setTimeout(resolve, 5000);
  });
}
(async () => {
  const body = JSON.stringify({code: payload});
  for (const port of PORTS) {
    for (const host of ["127.0.0.1", "localhost"]) {
      for (const path of ["/mrp/v1/execute", "/api/execute"]) {
        await post(`http://${host}:${port}${path}`, "no-cors", "text/plain", body);
        await post(`http://${host}:${port}${path}`, "cors", "application/json", body);
      }
      await socket(`ws://${host}:${port}/ws`);
    }
  }
  window.done = true;
})();
</script>"""


def free_port() -> int:
    """A port free right now on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def exposed_runtime(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The control: mrmd-python on a host loopback port, as the process backend ran it before
    (port, working directory)."""
    cwd = tmp_path / "exposed"
    cwd.mkdir()
    port = free_port()
    mrmd = str(Path(sys.executable).parent / "mrmd-python")
    proc = subprocess.Popen([mrmd, "--foreground", "--managed", "--host", "127.0.0.1",
                             "--port", str(port), "--cwd", str(cwd)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port, cwd
    finally:
        proc.kill()
        proc.wait()


async def serve_page(html: str, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                     ) -> None:
    """Serve `html` at every path of http://127.0.0.2:<port>/ (another loopback origin)."""
    body = html.encode()

    async def handle(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    await stream.send_all(conn.send(h11.Response(status_code=200, headers=[
                        ("Content-Type", "text/html; charset=utf-8"),
                        ("Content-Length", str(len(body))), ("Connection", "close")])))
                    await stream.send_all(conn.send(h11.Data(data=body)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                return

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.2")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


async def test_a_hostile_page_runs_no_code_in_any_runtime(
        tenant: Tenants, exposed_runtime: tuple[int, Path], tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        missing_system("chromium", "apt-get install -y chromium")
    state = tenant.harness.service.state_nowait(tenant.a.id)
    ports = [parse(w.address).port for w in (state.runtime, state.editor)
             if w.address is not None]
    assert len(ports) == 2
    control_port, control_cwd = exposed_runtime
    html = PAGE.replace("MARKER", json.dumps(MARKER)).replace(
        "PORTS", json.dumps([*ports, control_port]))
    user_dir = tenant.harness.service.user_dir(tenant.a.id)
    async with trio.open_nursery() as nursery:
        page_port = await nursery.start(serve_page, html)
        async with chromium(tmp_path / "profile") as browser:
            await browser.call("Page.enable")
            await browser.call("Page.navigate", {"url": f"http://127.0.0.2:{page_port}/"})
            await browser.wait_for("window.done === true", within=90)
            results = await browser.evaluate("JSON.stringify(window.results)")
        nursery.cancel_scope.cancel()
    assert (control_cwd / MARKER).exists(), f"the control was not hit: {results}"
    assert not (user_dir / MARKER).exists(), results
    assert not (Path("/tmp") / MARKER).exists()
    stats = tenant.harness.service.front_statistics_nowait(tenant.a.id)
    assert stats is not None and stats.executions == 0
