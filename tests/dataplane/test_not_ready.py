"""An editor that is not ready: a navigation starts it and gets the wait page, which follows the
start over server-sent events; anything else gets 503 and starts nothing (DESIGN §3.2).

Compute is the stand-in (`fake_compute.FakeCompute`) so that starts can be made to finish or
fail on cue; the same flow with real compute, the process backend and headless Chromium is in
`test_runtime_front.py`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket

import httpx
import trio

from .conftest import NAVIGATE, XHR, Plane, eventually, ws_status


async def stopped_user(plane: Plane, name: str = "alice") -> tuple[str, dict[str, str]]:
    user = await plane.user(name, ready=False)
    return user.id, plane.cookie(await plane.session(user))


async def test_a_navigation_starts_the_editor_and_gets_the_wait_page(plane: Plane) -> None:
    user_id, cookie = await stopped_user(plane)
    response = await plane.client().get(f"/u/{user_id}/notes/a.md",
                                        headers={**cookie, **NAVIGATE})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert response.headers["content-type"].startswith("text/html")
    assert plane.compute.starts == [(user_id, "navigation")]
    page = response.text
    assert '<script src="/_markco/wait.js"' in page
    assert f'data-progress="/_markco/progress/{user_id}"' in page
    # No inline script; the one inline stylesheet is allowed by its hash, nothing else is.
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None
    csp = response.headers["content-security-policy"]
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in csp
    assert "script-src 'self'" in csp and "default-src 'none'" in csp


async def test_background_requests_get_503_and_start_nothing(plane: Plane) -> None:
    user_id, cookie = await stopped_user(plane)
    client = plane.client()
    for headers in (XHR, {}, {"Accept": "text/html"}, {"Sec-Fetch-Dest": "image"}):
        response = await client.get(f"/u/{user_id}/api/files", headers={**cookie, **headers})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "editor_not_ready"
    post = await client.post(f"/u/{user_id}/api/files", json={}, headers={**cookie, **XHR})
    assert post.status_code == 503
    status, _ = await ws_status(plane, f"/u/{user_id}/ws", cookie)
    assert status == 503  # a WebSocket reconnecting never wakes anyone either
    assert plane.compute.starts == []


async def test_the_wait_page_script_is_served_by_the_front_door(plane: Plane) -> None:
    response = await plane.client().get("/_markco/wait.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "EventSource" in response.text and "location.reload()" in response.text


async def read_events(response: httpx.Response) -> list[tuple[str, dict[str, object]]]:
    events = []
    kind = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[6:])))
    return events


async def test_the_progress_stream_follows_the_start_until_ready(plane: Plane) -> None:
    plane.compute.start_delay = 0.3
    user_id, cookie = await stopped_user(plane)
    client = plane.client()
    await client.get(f"/u/{user_id}/", headers={**cookie, **NAVIGATE})
    with trio.fail_after(10):
        async with client.stream("GET", f"/_markco/progress/{user_id}",
                                 headers={**cookie, **XHR}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            events = await read_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "progress" and kinds[-1] == "ready"
    assert any(data.get("message") == "Starting your runtime" for _, data in events)
    # Ready: the same navigation now reaches the editor.
    response = await client.get(f"/u/{user_id}/whoami", headers={**cookie, **NAVIGATE})
    assert response.status_code == 200 and response.json()["editor"] == "alice"


async def test_a_failed_start_is_reported_and_can_be_retried(plane: Plane) -> None:
    plane.compute.fail_with = "out of disk space"
    user_id, cookie = await stopped_user(plane)
    client = plane.client()
    await client.get(f"/u/{user_id}/", headers={**cookie, **NAVIGATE})
    with trio.fail_after(10):
        async with client.stream("GET", f"/_markco/progress/{user_id}",
                                 headers={**cookie, **XHR}) as response:
            events = await read_events(response)
    assert events[-1] == ("failed", {"message": "out of disk space"})
    # "Try again" reloads: another navigation, another start.
    await client.get(f"/u/{user_id}/", headers={**cookie, **NAVIGATE})
    assert [reason for _, reason in plane.compute.starts] == ["navigation", "navigation"]


async def test_the_progress_stream_ends_when_the_page_goes_away(plane: Plane) -> None:
    user_id, cookie = await stopped_user(plane)
    stream = await trio.open_tcp_stream("127.0.0.1", plane.port)
    async with stream:
        await stream.send_all(f"GET /_markco/progress/{user_id} HTTP/1.1\r\nHost: t\r\n"
                              f"Cookie: {cookie['Cookie']}\r\n\r\n".encode())
        first = b""
        with trio.fail_after(5):
            while b"event: progress" not in first:
                first += await stream.receive_some(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        assert plane.compute.hub.followers(user_id) == 1
    await eventually(lambda: plane.front_door.statistics().open_connections == 0)
    assert plane.compute.hub.followers(user_id) == 0
    assert plane.compute.starts == []  # following progress starts nothing


async def test_only_those_who_may_enter_may_follow_the_progress(plane: Plane) -> None:
    user_id, _ = await stopped_user(plane)
    eve = await plane.user("eve", editor=False)
    client = plane.client()
    anonymous = await client.get(f"/_markco/progress/{user_id}", headers=XHR)
    assert anonymous.status_code == 401
    refused = await client.get(f"/_markco/progress/{user_id}",
                               headers={**plane.cookie(await plane.session(eve)), **XHR})
    assert refused.status_code == 404
    cross = await client.get(f"/_markco/progress/{user_id}",
                             headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"})
    assert cross.status_code == 403


async def test_a_collaborators_navigation_starts_the_owners_editor(plane: Plane) -> None:
    owner_id, _ = await stopped_user(plane)
    owner = await plane.storage.get_user(owner_id)
    bob = await plane.user("bob", editor=False)
    assert owner is not None
    await plane.grant(owner, bob, "editor")
    response = await plane.client().get(
        f"/u/{owner_id}/", headers={**plane.cookie(await plane.session(bob)), **NAVIGATE})
    assert response.status_code == 503 and "Starting your editor" in response.text
    assert plane.compute.starts == [(owner_id, "navigation")]


# ------------------------------------------------------------------------------ crashed editors


async def crashed_editor(plane: Plane) -> tuple[str, dict[str, str], int]:
    """alice, whose editor compute still calls ready at a port where nothing listens (it
    crashed, and compute has not noticed yet): (id, cookie, that port)."""
    user = await plane.user("alice")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    plane.compute.addresses[user.id] = ("127.0.0.1", port)
    return user.id, plane.cookie(await plane.session(user)), port


async def test_a_navigation_to_a_crashed_editor_gets_the_wait_page(plane: Plane) -> None:
    user_id, cookie, _ = await crashed_editor(plane)
    response = await plane.client().get(f"/u/{user_id}/", headers={**cookie, **NAVIGATE})
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["retry-after"] == "2"
    assert f'data-progress="/_markco/progress/{user_id}"' in response.text


async def test_the_wait_page_announces_a_crashed_editor_only_once_it_answers(
        plane: Plane) -> None:
    user_id, cookie, port = await crashed_editor(plane)
    await plane.client().get(f"/u/{user_id}/", headers={**cookie, **NAVIGATE})
    stream = await trio.open_tcp_stream("127.0.0.1", plane.port)
    async with stream:
        request = (f"GET /_markco/progress/{user_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Cookie: {cookie['Cookie']}\r\n\r\n")
        await stream.send_all(request.encode())
        received = b""
        with trio.move_on_after(1.2):  # compute says ready all along; the editor does not answer
            while chunk := await stream.receive_some(65536):
                received += chunk
        assert b"event: progress" in received and b"event: ready" not in received
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")  # it is back
        try:
            with trio.fail_after(3):
                while b"event: ready" not in received:
                    chunk = await stream.receive_some(65536)
                    assert chunk, "the stream ended without saying ready"
                    received += chunk
        finally:
            for listener in listeners:
                await listener.aclose()
