"""The repository's Caddyfile, run by a real Caddy (`markco_trio.testing.edge`) in front of a
real daemon with real compute (the process backend, the built-in editor, `mrmd-python`), all on
loopback, with TLS from Caddy's local CA:

- a person logs in through a login link, sees the dashboard, opens `/u/<id>/`, waits for the
  editor and talks to it over a WebSocket upgraded through Caddy;
- with `[server] editor_domain`, the editor is reached on its own origin
  (`https://<id>.u.localhost:<port>`, the Caddyfile's wildcard site) after the handshake;
- responses stream: a slow upstream's chunks arrive one by one (even compressed), never
  buffered until the end;
- the edge's security headers are on the daemon's answers.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from dataplane.conftest import NAVIGATE, XHR, eventually
from dataplane.real_compute import (
    RealMarkco,
    compute_root,
    config_text,
    kill_leftovers,
    remove_cgroups,
)

from markco_trio.builtin.auth.login_links import issue_login_link
from markco_trio.config import load_config
from markco_trio.daemon import Daemon
from markco_trio.records import User
from markco_trio.testing.edge import Edge, running_edge
from markco_trio.testing.network import free_port
from markco_trio.testing.workload_python import workload_python

pytestmark = [pytest.mark.system, pytest.mark.slow]


@asynccontextmanager
async def markco_behind_edge(nursery: trio.Nursery, tmp_path: Path, *,
                             editor_origins: bool = False
                             ) -> AsyncIterator[tuple[RealMarkco, Edge]]:
    """The daemon (real compute) behind Caddy; its public URL is the edge's."""
    root = compute_root()
    deployment = f"edge-{uuid.uuid4().hex[:10]}"
    try:
        wpython = workload_python(root)
        port = free_port()
        data_dir = root / "data"
        data_dir.mkdir(mode=0o711)
        with running_edge(f"127.0.0.1:{port}", tmp_path / "caddy") as edge:
            text = config_text(port, data_dir, deployment, wpython).replace(
                f'public_url = "http://127.0.0.1:{port}"',
                f'public_url = "{edge.url}"\ntrusted_proxies = ["127.0.0.1"]\n'
                f'editor_domain = "{edge.editor_domain if editor_origins else ""}"')
            config = root / "markco.toml"
            config.write_text(text)
            loaded, pm = load_config(config, entry_points=False)
            daemon = Daemon(loaded, pm)
            with trio.fail_after(30):
                await nursery.start(partial(daemon.run, handle_signals=False))
                await eventually(lambda: daemon.readiness.snapshot().ready, within=30)
            markco = RealMarkco(daemon, port, root)
            try:
                yield markco, edge
            finally:
                await markco.stop()
    finally:
        kill_leftovers(root)
        remove_cgroups(deployment)


async def log_in(markco: RealMarkco, edge: Edge, client: httpx.AsyncClient,
                 name: str) -> User:
    """Log `client` in as `name` through a login link on the edge's URL."""
    user = await markco.user(name)
    link = await issue_login_link(markco.daemon.ctx.require_storage(), markco.daemon.ctx.clock,
                                  user, public_url=edge.url, minutes=5)
    assert link.startswith(edge.url + "/")
    answer = await client.get(link)
    assert answer.status_code == 303, answer.text
    return user


async def wait_for_the_editor(client: httpx.AsyncClient, origin: str, user: User) -> None:
    """Follow the wait page's progress stream (server-sent events, through Caddy) to `ready`."""
    kinds = []
    with trio.fail_after(60):
        async with client.stream("GET", f"{origin}/_markco/progress/{user.id}",
                                 headers=XHR) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kinds.append(line[7:])
    assert kinds[-1] == "ready", kinds


async def test_login_dashboard_and_the_editor_over_a_websocket_through_caddy(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    async with markco_behind_edge(nursery, tmp_path) as (markco, edge), edge.client() as client:
        alice = await log_in(markco, edge, client, "alice")
        home = await client.get(f"{edge.url}/", headers=NAVIGATE)
        assert home.status_code == 303
        assert home.headers["location"] == f"{edge.url}/dashboard"
        dashboard = await client.get(home.headers["location"], headers=NAVIGATE)
        assert dashboard.status_code == 200 and "alice" in dashboard.text

        wait = await client.get(f"{edge.url}/u/{alice.id}/", headers=NAVIGATE)
        assert wait.status_code == 503 and "Starting your editor" in wait.text
        await wait_for_the_editor(client, edge.url, alice)
        page = await client.get(f"{edge.url}/u/{alice.id}/", headers=NAVIGATE)
        assert page.status_code == 200 and f'<base href="/u/{alice.id}/' in page.text

        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        ws_url = edge.url.replace("https://", "wss://") + f"/u/{alice.id}/ws"
        async with edge.websocket(ws_url, [("Cookie", cookie), ("Origin", edge.url)]) as ws:
            with trio.fail_after(10):
                hello = json.loads(await ws.get_message())
        assert hello["type"] == "hello" and hello["owner"] == alice.id


async def test_a_websocket_from_another_site_is_refused_at_the_daemon_through_caddy(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    from trio_websocket import ConnectionRejected

    async with markco_behind_edge(nursery, tmp_path) as (markco, edge), edge.client() as client:
        alice = await log_in(markco, edge, client, "alice")
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        ws_url = edge.url.replace("https://", "wss://") + f"/u/{alice.id}/ws"
        with pytest.raises(ConnectionRejected) as refused:
            async with edge.websocket(ws_url, [("Cookie", cookie),
                                               ("Origin", "https://evil.example")]):
                pass
        assert refused.value.status_code == 403


async def test_the_editor_on_its_own_origin_through_the_wildcard_site(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    async with markco_behind_edge(nursery, tmp_path, editor_origins=True) as (markco, edge), \
            edge.client() as client:
        bob = await log_in(markco, edge, client, "bob")
        origin = edge.editor_origin(bob.id)
        moved = await client.get(f"{edge.url}/u/{bob.id}/", headers=NAVIGATE)
        assert moved.status_code == 302
        assert moved.headers["location"] == f"{origin}/u/{bob.id}/"

        # The handshake: editor origin -> main origin's /editor-auth -> a one-time code back.
        answer = await client.get(moved.headers["location"], headers=NAVIGATE)
        hops = 0
        while answer.status_code in (302, 303) and hops < 6:
            answer = await client.get(answer.url.join(answer.headers["location"]),
                                      headers=NAVIGATE)
            hops += 1
        assert answer.status_code == 503 and "Starting your editor" in answer.text
        assert str(answer.url).startswith(origin)
        await wait_for_the_editor(client, origin, bob)
        page = await client.get(f"{origin}/u/{bob.id}/", headers=NAVIGATE)
        assert page.status_code == 200
        assert page.headers["strict-transport-security"].startswith("max-age=")

        editor_cookies = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar
                                   if c.domain.endswith(f"{bob.id}.u.localhost"))
        assert editor_cookies
        async with edge.websocket(origin.replace("https://", "wss://") + f"/u/{bob.id}/ws",
                                  [("Cookie", editor_cookies), ("Origin", origin)]) as ws:
            with trio.fail_after(10):
                hello = json.loads(await ws.get_message())
        assert hello["type"] == "hello" and hello["owner"] == bob.id

        # The platform's API and pages are not served on an editor origin.
        assert (await client.get(f"{origin}/api/v1/me")).status_code == 404


async def test_the_edge_adds_its_security_headers_to_the_daemons_answers(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    async with markco_behind_edge(nursery, tmp_path) as (markco, edge), edge.client() as client:
        await log_in(markco, edge, client, "carol")
        answer = await client.get(f"{edge.url}/dashboard", headers=NAVIGATE)
    assert answer.status_code == 200
    assert answer.headers["strict-transport-security"] == "max-age=31536000"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "referrer-policy" in answer.headers
    assert "server" not in answer.headers


# -- streaming, with an upstream that waits for the client before each next chunk -------------


Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def slow_upstream(nursery: trio.Nursery, handler: Handler) -> int:
    """A one-route HTTP/1.1 server on 127.0.0.1 running `handler` per connection."""
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    sockname = listeners[0].socket.getsockname()
    return int(sockname[1])


async def read_head(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize(("content_type", "encoding", "sized"), [
    ("text/event-stream", "identity", False), ("text/event-stream", "gzip", False),
    ("application/octet-stream", "identity", False), ("text/plain", "gzip", False),
    ("application/octet-stream", "identity", True), ("text/plain", "gzip", True)])
async def test_a_slow_response_arrives_piece_by_piece(
        nursery: trio.Nursery, tmp_path: Path, content_type: str, encoding: str,
        sized: bool) -> None:
    """The upstream sends its second piece only once the client has the first: a buffering
    edge would deadlock (and fail the test at its time limit) instead of passing it on. For
    chunked and for sized bodies (a download of known length: without the Caddyfile's
    `flush_interval -1` Caddy holds its pieces back), and for a client that accepts gzip (the
    Caddyfile's `encode` must not hold pieces back either)."""
    client_has_first = trio.Event()
    pieces = [b"data: first " + b"x" * 600 + b"\n\n", b"data: second\n\n"]

    async def handler(stream: trio.SocketStream) -> None:
        await read_head(stream)
        framing = (b"Content-Length: %d" % sum(map(len, pieces)) if sized
                   else b"Transfer-Encoding: chunked")
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\n"
                              b"Cache-Control: no-cache\r\n%s\r\n\r\n"
                              % (content_type.encode(), framing))
        for i, piece in enumerate(pieces):
            if i:
                await client_has_first.wait()
            await stream.send_all(piece if sized else b"%x\r\n%s\r\n" % (len(piece), piece))
        if not sized:
            await stream.send_all(b"0\r\n\r\n")

    port = await slow_upstream(nursery, handler)
    with running_edge(f"127.0.0.1:{port}", tmp_path / "caddy") as edge:
        async with edge.client() as client:
            received = b""
            with trio.fail_after(10):
                async with client.stream("GET", f"{edge.url}/events",
                                         headers={"Accept-Encoding": encoding}) as response:
                    # Caddy's `encode` may or may not compress it; either way it must stream.
                    assert response.headers.get("content-encoding", "identity") in (
                        "identity", encoding)
                    async for chunk in response.aiter_bytes():
                        received += chunk
                        if received == pieces[0]:
                            client_has_first.set()
    assert received == b"".join(pieces)


@pytest.mark.parametrize("content_type", ["text/javascript", "text/html; charset=utf-8",
                                          "application/json"])
async def test_pages_scripts_and_json_are_compressed_for_clients_that_accept_it(
        nursery: trio.Nursery, tmp_path: Path, content_type: str) -> None:
    body = b"let x = 1;\n" * 500

    async def handler(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d"
                              b"\r\n\r\n%s" % (content_type.encode(), len(body), body))

    port = await slow_upstream(nursery, handler)
    with running_edge(f"127.0.0.1:{port}", tmp_path / "caddy") as edge:
        async with edge.client() as client:
            answer = await client.get(f"{edge.url}/ui/mrmd.iife.js",
                                      headers={"Accept-Encoding": "gzip"})
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.content == body  # httpx decoded it


async def test_a_request_body_streams_to_the_upstream(nursery: trio.Nursery,
                                                      tmp_path: Path) -> None:
    """An upload's first part reaches the daemon before the client sends the rest."""
    upstream_has_first = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        data = await read_head(stream)
        while b"first" not in data:
            data += await stream.receive_some()
        upstream_has_first.set()
        while not data.endswith(b"0\r\n\r\n"):
            data += await stream.receive_some()
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await upstream_has_first.wait()
        yield b"second"

    port = await slow_upstream(nursery, handler)
    with running_edge(f"127.0.0.1:{port}", tmp_path / "caddy") as edge:
        async with edge.client() as client:
            with trio.fail_after(10):
                answer = await client.post(f"{edge.url}/upload", content=body())
    assert answer.status_code == 200 and answer.text == "ok"


async def test_a_request_during_a_daemon_restart_waits_for_it_instead_of_failing(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    """An upgrade restarts the daemon (`systemctl restart markco`): for a moment nothing
    listens. A request arriving then must be answered once the new daemon listens, not 502."""
    port = free_port()

    async def handler(stream: trio.SocketStream) -> None:
        await read_head(stream)
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nanswers")

    async def restarted_daemon() -> None:
        await client_waiting.wait()
        await trio.sleep(1.0)  # the restart's gap: the request is at Caddy by now
        await nursery.start(partial(trio.serve_tcp, handler, port, host="127.0.0.1"))

    client_waiting = trio.Event()
    with running_edge(f"127.0.0.1:{port}", tmp_path / "caddy") as edge:
        async with edge.client() as client:
            nursery.start_soon(restarted_daemon)
            client_waiting.set()
            with trio.fail_after(20):
                answer = await client.get(f"{edge.url}/dashboard")
    assert answer.status_code == 200 and answer.text == "answers"


def test_the_edge_listens_only_where_it_is_told(tmp_path: Path) -> None:
    """Bound to 127.0.0.1 (MARKCO_CADDY_BIND), with its admin API where MARKCO_CADDY_ADMIN
    says: nothing answers on the machine's other loopback address for the site port."""
    with running_edge("127.0.0.1:9", tmp_path / "caddy") as edge:
        admin_port = int(edge.admin.rpartition(":")[2])
        with socket.create_connection(("127.0.0.1", admin_port), timeout=2):
            pass
        with pytest.raises(OSError), socket.create_connection(("127.0.0.2", edge.port),
                                                              timeout=2):
            pass
