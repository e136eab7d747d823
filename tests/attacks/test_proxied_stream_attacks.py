"""A long-lived proxied HTTP response (an editor's server-sent events, a slow download)
outliving the right that opened it. WebSockets are closed when a grant, session or token is
revoked (tests/dataplane/test_tunnel_revocation.py); an HTTP response streaming from
`/u/<owner>/` must not keep carrying the owner's data to a collaborator whose grant was
revoked either: it is broken off (the connection closed) before another byte of it passes.

Real daemon and front door over loopback; the editor is the data-plane tests' echo editor
(its `/sse` sends an event each time the test releases one)."""

from __future__ import annotations

import httpx
import pytest
import trio

from tests.dataplane.conftest import XHR, Plane


async def test_revoking_a_grant_ends_the_collaborators_event_stream(plane: Plane) -> None:
    alice, bob = await plane.user("alice"), await plane.user("bob", editor=False)
    await plane.grant(alice, bob, "editor")
    editor = plane.editors[alice.id]
    client = plane.client()
    headers = {**plane.cookie(await plane.session(bob)), **XHR}
    received: list[str] = []
    with trio.fail_after(10):
        async with client.stream("GET", f"/u/{alice.id}/sse", headers=headers) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert await anext(lines) == "data: first"
            [grant] = await plane.storage.list_grants(user_id=bob.id)
            assert await plane.storage.revoke_grant(grant.id, owner_id=alice.id,
                                                    now=plane.daemon.ctx.clock.now())
            plane.authority.evict_user(bob.id)
            await trio.sleep(0.5)
            with trio.move_on_after(2):
                await editor.release(b"data: after revocation\n\n")
                await editor.release(b"end")
                # The front door breaks the response off (it closes the connection): the
                # client sees an incomplete chunked body, never the events that followed.
                with pytest.raises(httpx.RemoteProtocolError):
                    async for line in lines:
                        received.append(line)
    assert "data: after revocation" not in received
