"""Keeping someone else's runtime awake: the editor's activity report (`POST
/u/<owner>/api/activity`, which the editor turns into the runtime front's
`POST /markco/v1/activity`) and any other request to `/u/<owner>/` count as the owner's
activity only when the caller may enter the owner's editor. A stranger, a viewer, a stranger's
API token, another site's page and a forged `X-Markco-User` reach neither compute's activity
record nor the owner's editor.

Real daemon and front door over loopback; compute and the editor are the data-plane tests'
stand-ins (tests/dataplane/fake_compute.py, echo_editor.py): nothing here needs a workload."""

from __future__ import annotations

from tests.dataplane.conftest import NAVIGATE, XHR, Plane


async def test_no_one_but_those_let_in_can_report_activity_for_an_owner(plane: Plane) -> None:
    alice = await plane.user("alice")
    eve = await plane.user("eve", editor=False)
    viewer = await plane.user("vera", editor=False)
    await plane.grant(alice, viewer, "viewer")
    client = plane.client()
    path = f"/u/{alice.id}/api/activity"
    origin = {"Origin": plane.url}
    attempts = [
        {**plane.cookie(await plane.session(eve)), **XHR, **origin},
        {**plane.cookie(await plane.session(viewer)), **XHR, **origin},
        {**plane.cookie(await plane.session(eve)), **NAVIGATE, **origin},
        {"Authorization": f"Bearer {await plane.api_token(eve)}", **origin},
        {"X-Markco-User": alice.id, "X-Markco-Role": "owner", **origin},
        # Another site's page in alice's own browser (her cookie is Lax: a cross-site POST
        # does not carry it; even if it did, a cross-site subrequest is refused).
        {**plane.cookie(await plane.session(alice)), "Sec-Fetch-Site": "cross-site",
         "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "empty",
         "Origin": "http://evil.test"},
        {**plane.cookie(await plane.session(alice)), **XHR, "Origin": "null"},
    ]
    for headers in attempts:
        response = await client.post(path, content=b"{}", headers=headers)
        assert response.status_code in (401, 403, 404), (headers, response.status_code)
    assert plane.compute.activity == []
    record = plane.front_door.activity_nowait(alice.id)
    assert record is None or (record.navigation, record.request, record.websocket) == (
        None, None, None)
    assert plane.editors[alice.id].requests == []


async def test_the_owners_own_report_is_her_activity(plane: Plane) -> None:
    """The same request from alice's own editor page counts (so the refusals above are
    refusals, not a route that never counts)."""
    alice = await plane.user("alice")
    response = await plane.client().post(
        f"/u/{alice.id}/api/activity", content=b"{}",
        headers={**plane.cookie(await plane.session(alice)), **XHR, "Origin": plane.url})
    assert response.status_code < 400
    assert plane.compute.activity == [(alice.id, "request")]
