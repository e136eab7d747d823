"""The activity record (DESIGN §3.3): per editor owner, the last navigation, the last
non-GET request and the last WebSocket traffic; the intent kinds reach compute as they happen,
raw WebSocket traffic does not."""

from __future__ import annotations

import time

from markco_trio.proxy.activity import ActivityRecord

from .conftest import NAVIGATE, XHR, Plane, RawWebSocket


async def test_navigations_and_changes_are_reported_and_reads_are_not(plane: Plane) -> None:
    alice = await plane.user("alice")
    cookie = plane.cookie(await plane.session(alice))
    client = plane.client()
    before = time.time()
    await client.get(f"/u/{alice.id}/", headers={**cookie, **NAVIGATE})
    await client.get(f"/u/{alice.id}/api/files", headers={**cookie, **XHR})
    await client.get(f"/u/{alice.id}/api/files", headers={**cookie, **XHR})
    await client.put(f"/u/{alice.id}/api/files/a.md", content=b"x",
                     headers={**cookie, **XHR, "Origin": plane.url})
    assert plane.compute.activity == [(alice.id, "navigation"), (alice.id, "request")]
    record = plane.front_door.activity_nowait(alice.id)
    assert record is not None
    assert record.navigation is not None and record.navigation >= before
    assert record.request is not None and record.request >= record.navigation
    assert record.websocket is None


async def test_websocket_traffic_is_recorded_but_not_reported(plane: Plane) -> None:
    alice = await plane.user("alice")
    cookie = plane.cookie(await plane.session(alice))
    status, ws = await RawWebSocket.open(plane, f"/u/{alice.id}/ws", cookie)
    assert status == 101 and ws is not None
    try:
        await ws.recv()
        first = plane.daemon.ctx.activity.last_nowait(alice.id).websocket
        assert first is not None
        await ws.send(1, b"keep-alive ping of a forgotten tab")
        await ws.recv()
        later = plane.daemon.ctx.activity.last_nowait(alice.id).websocket
        assert later >= first
    finally:
        await ws.aclose()
    assert plane.compute.activity == []


async def test_a_collaborators_activity_is_the_owners(plane: Plane) -> None:
    alice = await plane.user("alice")
    bob = await plane.user("bob", editor=False)
    await plane.grant(alice, bob, "editor")
    await plane.client().get(f"/u/{alice.id}/",
                             headers={**plane.cookie(await plane.session(bob)), **NAVIGATE})
    assert plane.compute.activity == [(alice.id, "navigation")]


async def test_a_refused_request_is_no_ones_activity(plane: Plane) -> None:
    alice = await plane.user("alice")
    eve = await plane.user("eve", editor=False)
    await plane.client().get(f"/u/{alice.id}/",
                             headers={**plane.cookie(await plane.session(eve)), **NAVIGATE})
    assert plane.compute.activity == []


def test_a_failing_reporter_never_fails_the_request() -> None:
    def broken(user_id: str, kind: str) -> None:
        raise RuntimeError("compute is having a bad day")

    record = ActivityRecord(broken, clock=lambda: 42.0)
    record.navigation("u")
    assert record.report_errors == 1
    assert record.last_nowait("u").navigation == 42.0
