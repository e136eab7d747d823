"""An in-process compute plugin on real parts: SQLite storage, the event bus, the process
backend (real processes, cgroups, namespaces), real mrmd-python and the built-in editor. No
front door, no API: tests drive `ComputeService` directly, as the proxy will."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from markco_trio.builtin.compute import ComputeService, service_for
from markco_trio.builtin.process_backend import ProcessBackend
from markco_trio.config import load_config
from markco_trio.context import PluginContext
from markco_trio.events import EventBus
from markco_trio.plugins import BUILTIN_PLUGINS
from markco_trio.records import Event, User
from markco_trio.storage.sqlite import SqliteStorage
from markco_trio.testing.workload_python import WorkloadPython

from .polling import eventually

COMPUTE_MODULES = ("markco_trio.builtin.process_backend", "markco_trio.builtin.compute")


def plugin_modules(*extra: str) -> list[str]:
    """Modules to name in `[plugins] modules`: ours, unless already built in."""
    builtin = {module for _, module in BUILTIN_PLUGINS}
    return [m for m in (*COMPUTE_MODULES, *extra) if m not in builtin]


def config_text(data_dir: Path, deployment: str, wpython: WorkloadPython, *,
                modules: list[str] | None = None, listen: str = "127.0.0.1:0",
                extra: str = "", **workloads: Any) -> str:
    public_url = f"http://{listen}"
    """A config for the process backend and compute, with the workload Python's commands."""
    options: dict[str, Any] = {
        "runtime_command": [wpython.script("mrmd-python"), "--foreground", "--managed",
                            "--host", "{host}", "--port", "{port}", "--cwd", "{user_dir}"],
        "editor_command": [wpython.script("markco-editor")],
        "watch_interval": 0.2,
        "restart_backoff_initial": 0.2,
        "restart_backoff_max": 1.0,
        "ready_timeout": 20.0,
        "stop_timeout": 2.0,
    }
    options.update(workloads)
    lines = [f"{key} = {json.dumps(value)}" for key, value in options.items()
             if not isinstance(value, dict)]
    plans = options.get("plans", {})
    plan_tables = "".join(f"\n[workloads.plans.{name}]\nmemory_mib = {p['memory_mib']}\n"
                          f"cpus = {p['cpus']}\n" for name, p in plans.items())
    return textwrap.dedent(f"""\
        [server]
        listen = "{listen}"
        public_url = "{public_url}"
        data_dir = "{data_dir}"
        deployment_id = "{deployment}"
        drain_seconds = 1

        [plugins]
        modules = {json.dumps(modules if modules is not None else plugin_modules())}

        [compute]
        backend = "process"

        [workloads]
        """) + "\n".join(lines) + "\n" + plan_tables + extra


@dataclass
class Harness:
    """A running compute service and what it stands on."""

    ctx: PluginContext
    service: ComputeService
    events: list[Event] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)

    def add(self, event: Event) -> None:
        self.events.append(event)
        self.arrived.set()
        self.arrived = trio.Event()

    @property
    def backend(self) -> ProcessBackend:
        assert isinstance(self.ctx.backend, ProcessBackend)
        return self.ctx.backend

    @property
    def storage(self) -> SqliteStorage:
        storage = self.ctx.storage
        assert isinstance(storage, SqliteStorage)
        return storage

    async def user(self, username: str, *, plan: str = "free") -> User:
        return await self.storage.create_user(
            username=username, email=f"{username}@example.org", name=username.title(),
            avatar_url=None, plan=plan, now=self.ctx.clock.now())

    async def settled(self) -> None:
        """Wait until every event published so far has reached `events`."""
        assert self.ctx.events is not None
        bus = self.ctx.events
        await eventually(lambda: len(self.events) >= bus.statistics().published,
                         what="event delivery")

    def kinds(self, user_id: str | None = None) -> list[str]:
        """Event types seen so far (of one user)."""
        return [e.type for e in self.events if user_id is None or e.user_id == user_id]

    async def wait_event(self, kind: str, user_id: str | None = None, *, count: int = 1,
                         within: float = 20.0) -> None:
        """Wait (without polling: tests on a MockClock use it) for `count` events `kind`."""
        with trio.move_on_after(within):
            while self.kinds(user_id).count(kind) < count:
                await self.arrived.wait()
            return
        raise AssertionError(f"{count} × {kind} not seen within {within:g} s; saw "
                             f"{self.kinds(user_id)}")


@asynccontextmanager
async def run_harness(config_path: Path, *,
                      checkpointer: Any = None) -> AsyncIterator[Harness]:
    """Open storage, the bus, the backend, `checkpointer` (if any: the lifecycle tests') and
    the compute service of `config_path`; the compute service is cancelled at the end (its
    `on_shutdown` applies)."""
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
            if checkpointer is not None:
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
