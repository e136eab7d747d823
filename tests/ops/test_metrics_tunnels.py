"""`/metrics` sees WebSockets: an open tunnel is a gauge while it lasts, and the bytes it moves
in each direction are counted (a real editor stand-in behind the real front door)."""

from __future__ import annotations

import httpx

from tests.dataplane.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    RawWebSocket,
    StartPlane,
    eventually,
    start_plane,
)
from tests.ops.test_metrics_endpoint import value


async def scrape(port: int) -> str:
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert answer.status_code == 200
    return answer.text


async def test_a_websocket_is_an_open_tunnel_and_its_bytes_are_counted(
        start_plane: StartPlane) -> None:  # noqa: F811 - the fixture imported above
    plane = await start_plane(auth='\n[metrics]\nlisten = "127.0.0.1:0"\n')
    listener = plane.daemon.metrics_listener
    assert listener is not None
    bob = await plane.user("bob")
    status, ws = await RawWebSocket.open(plane, f"/u/{bob.id}/ws",
                                         plane.cookie(await plane.session(bob)))
    assert status == 101 and ws is not None
    await ws.recv()  # the editor's hello
    payload = b"x" * 5000
    await ws.send(2, payload)  # binary, echoed back
    opcode, echoed = await ws.recv()
    assert (opcode, echoed) == (2, payload)
    during = await scrape(listener.port)
    assert value(during, "markco_proxy_open_tunnels") == 1
    assert value(during, 'markco_proxy_tunnel_bytes_total{direction="to_upstream"}') >= 5000
    assert value(during, 'markco_proxy_tunnel_bytes_total{direction="to_client"}') >= 5000
    await ws.aclose()
    await eventually(lambda: plane.front_door.statistics().tunnels == 0)
    after = await scrape(listener.port)
    assert value(after, "markco_proxy_open_tunnels") == 0
    assert value(after, 'markco_proxy_responses_total{code="1xx"}') == 1
