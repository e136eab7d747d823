"""Webhooks as SSRF: webhook URLs come only from the config file (no route sets one:
test_events_attacks.py), so the remaining way to point the daemon elsewhere is a receiver
that answers with a redirect — to cloud metadata, the engine's API, an internal service. The
dispatcher must not follow it: the attempt is recorded as not delivered and the redirect's
target never sees a request. Two raw loopback servers stand in for the receiver and the
internal target."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio

from tests.auth.conftest import StartMarkco
from tests.compute.polling import eventually_async
from tests.events.conftest import WEBHOOK_SECRET, WEBHOOK_SECRET_ENV
from tests.events.test_events_api import QUIET, publish


async def serve(nursery: trio.Nursery, answer: Callable[[int], bytes],
                hits: list[bytes]) -> int:
    """A one-request-per-connection HTTP server on loopback; its port."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
            hits.append(data)
            await stream.send_all(answer(len(hits)))

    listeners: list[trio.SocketListener] = await nursery.start(
        partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_a_receivers_redirect_is_never_followed(
        start_markco: StartMarkco, nursery: trio.Nursery,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEBHOOK_SECRET_ENV, WEBHOOK_SECRET)
    internal: list[bytes] = []
    internal_port = await serve(nursery, lambda n: b"HTTP/1.1 204 No Content\r\n"
                                b"Connection: close\r\n\r\n", internal)
    receivers: dict[str, list[bytes]] = {}
    config = QUIET + "\n[webhooks]\nbackoff_initial = 0.05\nbackoff_max = 0.1\n"
    for status in (b"301 Moved Permanently", b"302 Found", b"303 See Other",
                   b"307 Temporary Redirect", b"308 Permanent Redirect"):
        name = "hook" + status[:3].decode()
        answer: Callable[[int], bytes] = partial(
            lambda status, n: b"HTTP/1.1 " + status + b"\r\nLocation: http://127.0.0.1:"
            + str(internal_port).encode() + b"/latest/meta-data/\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n", status)
        receivers[name] = []
        port = await serve(nursery, answer, receivers[name])
        config += (f'\n[webhooks.endpoints.{name}]\nurl = "http://127.0.0.1:{port}/hook"\n'
                   f'secret_env = "{WEBHOOK_SECRET_ENV}"\n')
    markco = await start_markco(auth=config)
    await publish(markco, "critical", None, n=1)

    async def attempted() -> bool:
        logged = {d.webhook for d in await markco.storage.list_webhook_deliveries()}
        return logged == set(receivers)

    check: Callable[[], Awaitable[bool]] = attempted
    await eventually_async(check, what="an attempt of each webhook logged")
    deliveries = await markco.storage.list_webhook_deliveries()
    assert [d for d in deliveries if d.outcome == "delivered"] == []
    assert {d.status_code for d in deliveries} == {301, 302, 303, 307, 308}
    assert all(len(hits) >= 1 for hits in receivers.values())
    assert internal == []
