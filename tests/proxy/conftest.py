"""Fixtures of the front door's tests: a real hypercorn on a unix socket, a FrontDoor on port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from markco_trio.proxy import FrontDoor
from markco_trio.readiness import Readiness

from .harness import Door, RawClient, StartDoor, Upstream, UpstreamApp


@pytest.fixture
async def upstream(tmp_path: Path, nursery: trio.Nursery) -> Upstream:
    app = UpstreamApp()
    path = tmp_path / "api.sock"
    config = Config()
    config.bind = [f"unix:{path}"]
    config.accesslog = None
    config.errorlog = None
    await nursery.start(serve, app, config)
    return Upstream(app, path)


@pytest.fixture
def start_door(tmp_path: Path, nursery: trio.Nursery) -> StartDoor:
    """Start a FrontDoor on 127.0.0.1:0 forwarding to `api_socket` (default: tmp_path/api.sock)."""

    async def start(api_socket: Path | None = None, **options: Any) -> Door:
        readiness = options.pop("readiness", None) or Readiness()
        door = FrontDoor("127.0.0.1", 0, api_socket or tmp_path / "api.sock", readiness, **options)
        port = await nursery.start(door.serve)
        return Door(door, port, readiness)

    return start


@pytest.fixture
async def door(upstream: Upstream, start_door: StartDoor) -> Door:
    return await start_door(upstream.socket_path)


@pytest.fixture
async def raw_client_factory() -> AsyncIterator[Callable[[int], Awaitable[RawClient]]]:
    clients: list[RawClient] = []

    async def connect(port: int) -> RawClient:
        client = await RawClient.connect(port)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.aclose()
