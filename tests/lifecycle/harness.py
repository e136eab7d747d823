"""The compute harness of `tests/compute` with a checkpointer in the context."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from markco_trio.builtin.compute import service_for
from markco_trio.config import load_config
from markco_trio.context import PluginContext
from markco_trio.events import EventBus
from markco_trio.storage.sqlite import SqliteStorage
from tests.compute.harness import Harness


@asynccontextmanager
async def run_lifecycle(config_path: Path, checkpointer: Any) -> AsyncIterator[Harness]:
    """Storage, the bus, the backend, `checkpointer` and the compute service of
    `config_path`; the compute service is cancelled at the end (its `on_shutdown` applies)."""
    config, pm = load_config(config_path, entry_points=False)
    ctx = PluginContext(config=config, plugins=pm)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    async with SqliteStorage(config.data_dir / "markco.db") as storage:
        await storage.upgrade()
        ctx.storage = storage
        ctx.events = EventBus(storage, ctx.clock)
        choice = config.roles["compute"]
        async with choice.make(choice.names[0], ctx) as backend:
            ctx.backend = backend
            ctx.checkpointer = checkpointer
            service = service_for(ctx)
            harness = Harness(ctx, service)
            receive = ctx.events.subscribe("harness", buffer=10_000)
            async with trio.open_nursery() as nursery:

                async def collect() -> None:
                    async for event in receive:
                        harness.add(event)

                nursery.start_soon(collect)
                await nursery.start(service.run)
                try:
                    yield harness
                finally:
                    nursery.cancel_scope.cancel()
