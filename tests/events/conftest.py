"""Fixtures of the events tests: the auth tests' daemon harness (real HTTP, SQLite, a manual
clock), and a storage + bus + context for driving the webhook dispatcher directly."""

from __future__ import annotations

import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from markco_trio.clock import ManualClock
from markco_trio.config import load_config
from markco_trio.context import PluginContext
from markco_trio.events import EventBus
from markco_trio.storage.sqlite import SqliteStorage
from tests.auth.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    Markco,
    StartMarkco,
    auth_builtin,
    start_markco,
)

WEBHOOK_SECRET_ENV = "MARKCO_TEST_WEBHOOK_SECRET"
WEBHOOK_SECRET = "whsec-events-tests"

MakeContext = Callable[..., "PluginContext"]


@pytest.fixture
async def make_context(tmp_path: Path) -> AsyncIterator[Callable[[str], PluginContext]]:
    """`ctx = make_context(config_text)`: a validated config (the webhook secret in the
    environment), an open SQLite storage and an event bus on a manual clock."""
    async with SqliteStorage(tmp_path / "events.db") as storage:
        await storage.upgrade()

        def make(text: str) -> PluginContext:
            path = tmp_path / "markco.toml"
            path.write_text('[server]\nlisten = "127.0.0.1:0"\ndata_dir = "data"\n\n'
                            + textwrap.dedent(text))
            config, pm = load_config(path, environ={WEBHOOK_SECRET_ENV: WEBHOOK_SECRET},
                                     entry_points=False)
            clock = ManualClock(start=time.time())  # receivers check against real time
            return PluginContext(config=config, plugins=pm, clock=clock, storage=storage,
                                 events=EventBus(storage, clock))

        yield make
