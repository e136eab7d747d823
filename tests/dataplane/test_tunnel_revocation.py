"""The authorisation matrix over time: a WebSocket is authorised for as long as it is open.

Revoking what let a WebSocket in — a grant, a session, every session of a user (logout
everywhere), the user themself, an API token, an admin's entry by its expiry — closes it within a
second, with a close frame 1008 (policy violation) to the client; the WebSockets the revocation
does not concern stay open and working. Revocations made in this daemon reach the tunnels at once
(the authority's revision); those made elsewhere through the storage's revocation epoch, which
the test daemon polls every 0.2 s.
"""

from __future__ import annotations

import trio

from markco_trio.clock import ManualClock
from markco_trio.records import User

from .conftest import Plane, RawWebSocket, StartPlane

REVOKED = (8, b"\x03\xf0access was revoked")  # a close frame: 1008, policy violation
WITHIN = 1.0  # seconds: what DESIGN §5.2 promises


async def open_ws(plane: Plane, owner: User, headers: dict[str, str]) -> RawWebSocket:
    status, ws = await RawWebSocket.open(plane, f"/u/{owner.id}/ws", headers)
    assert status == 101 and ws is not None
    assert (await ws.recv())[0] == 1  # the editor's hello
    return ws


async def assert_closed(ws: RawWebSocket) -> None:
    """`ws` gets the revocation's close frame and then the end of the connection, in time."""
    try:
        with trio.fail_after(WITHIN):
            assert await ws.recv() == REVOKED
            assert await ws.stream.receive_some(10) == b""
    finally:
        await ws.aclose()


async def assert_open(ws: RawWebSocket) -> None:
    """`ws` still carries messages both ways."""
    await ws.send(1, b"still here?")
    assert await ws.recv() == (1, b"still here?")


async def session_headers(plane: Plane, user: User) -> dict[str, str]:
    return plane.cookie(await plane.session(user))


async def test_deleting_a_grant_closes_the_collaborators_websocket(plane: Plane) -> None:
    alice, bob = await plane.user("alice"), await plane.user("bob")
    await plane.grant(alice, bob, "editor")
    bobs = await open_ws(plane, alice, await session_headers(plane, bob))
    alices = await open_ws(plane, alice, await session_headers(plane, alice))
    bobs_own = await open_ws(plane, bob, await session_headers(plane, bob))
    [grant] = await plane.storage.list_grants(user_id=bob.id)
    assert await plane.storage.revoke_grant(grant.id, owner_id=alice.id,
                                            now=plane.daemon.ctx.clock.now())
    plane.authority.evict_user(bob.id)  # (what the invites API does after a revocation)
    await assert_closed(bobs)
    await assert_open(alices)
    await assert_open(bobs_own)  # bob keeps his own editor


async def test_a_grant_deleted_elsewhere_closes_the_websocket_through_the_epoch(
        plane: Plane) -> None:
    alice, bob = await plane.user("alice"), await plane.user("bob")
    await plane.grant(alice, bob, "editor")
    bobs = await open_ws(plane, alice, await session_headers(plane, bob))
    [grant] = await plane.storage.list_grants(user_id=bob.id)
    # Another process (`markco` on the command line) revokes: only the epoch moves.
    assert await plane.storage.revoke_grant(grant.id, owner_id=alice.id,
                                            now=plane.daemon.ctx.clock.now())
    await assert_closed(bobs)


async def test_logging_out_everywhere_closes_every_websocket_of_the_user(plane: Plane) -> None:
    alice, bob = await plane.user("alice"), await plane.user("bob")
    laptop = await open_ws(plane, alice, await session_headers(plane, alice))
    phone = await open_ws(plane, alice, await session_headers(plane, alice))
    bobs = await open_ws(plane, bob, await session_headers(plane, bob))
    assert await plane.authority.close_user_sessions(alice.id) == 2
    await assert_closed(laptop)
    await assert_closed(phone)
    await assert_open(bobs)
    assert plane.front_door.statistics().tunnels == 1
    assert plane.front_door.statistics().errors["tunnel_revoked"] == 2


async def test_revoking_a_session_closes_its_websockets_and_no_other(plane: Plane) -> None:
    alice = await plane.user("alice")
    token = await plane.session(alice)
    revoked = await open_ws(plane, alice, plane.cookie(token))
    other_tab = await open_ws(plane, alice, await session_headers(plane, alice))
    assert await plane.authority.close_session(token)
    await assert_closed(revoked)
    await assert_open(other_tab)


async def test_disabling_a_user_closes_their_websockets(plane: Plane) -> None:
    alice, bob = await plane.user("alice"), await plane.user("bob")
    alices = await open_ws(plane, alice, await session_headers(plane, alice))
    bobs = await open_ws(plane, bob, await session_headers(plane, bob))
    await plane.storage.update_user(alice.id, disabled=True)  # the epoch moves
    await assert_closed(alices)
    await assert_open(bobs)


async def test_revoking_an_api_token_closes_its_websocket(plane: Plane) -> None:
    alice = await plane.user("alice")
    token = await plane.api_token(alice)
    ws = await open_ws(plane, alice, {"Authorization": f"Bearer {token}"})
    [record] = await plane.storage.list_api_tokens(alice.id)
    assert await plane.storage.revoke_api_token(record.id, now=plane.daemon.ctx.clock.now())
    plane.authority.evict_token_hash(record.token_hash)  # (what the tokens API does)
    await assert_closed(ws)


async def test_an_admin_entry_expiring_closes_the_admins_websocket(
        start_plane: StartPlane) -> None:
    clock = ManualClock()
    plane = await start_plane(clock=clock)
    alice = await plane.user("alice")
    root = await plane.user("root", admin=True, editor=False)
    token = await plane.session(root)
    until = plane.authority.grant_admin_entry(token, alice.id)
    admins = await open_ws(plane, alice, plane.cookie(token))
    alices = await open_ws(plane, alice, await session_headers(plane, alice))
    clock.advance(until - clock.now() - 1)
    await trio.sleep(0.5)
    await assert_open(admins)  # (a second before the end it still works)
    clock.advance(2)
    await assert_closed(admins)
    await assert_open(alices)
