"""Fixtures shared by the whole suite: free ports, configuration files, a running daemon."""

from __future__ import annotations

import sys
import textwrap
import types
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import trio

from markco_trio.config import load_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a config file in tmp_path: `[server]` with a tmp data dir and port 0 is prepended
    unless the text has its own `[server]`."""

    def write(text: str = "", name: str = "markco.toml") -> Path:
        body = textwrap.dedent(text)
        if "[server]" not in body:
            body = ('[server]\nlisten = "127.0.0.1:0"\ndata_dir = "data"\n'
                    'drain_seconds = 2\n\n' + body)
        path = tmp_path / name
        path.write_text(body)
        return path

    return write


@pytest.fixture
async def daemon(write_config: Callable[[str], Path]) -> AsyncIterator[Callable[..., object]]:
    """Start a Daemon in-process: `d, port = await start(config_text)`; stopped at teardown."""
    from markco_trio.daemon import Daemon

    async with trio.open_nursery() as nursery:

        async def start(text: str = "", **kwargs: object) -> tuple[Daemon, int]:
            config, pm = load_config(write_config(text), **kwargs)  # type: ignore[arg-type]
            d = Daemon(config, pm)
            port = await nursery.start(lambda task_status: d.run(task_status=task_status,
                                                                 handle_signals=False))
            return d, port

        yield start
        nursery.cancel_scope.cancel()


@pytest.fixture
def module_plugin() -> Iterator[Callable[[str, dict[str, object]], types.ModuleType]]:
    """Make importable in-memory plugin modules for a test: `make(name, attributes)`;
    removed from `sys.modules` afterwards."""
    made: list[str] = []

    def make(name: str, attrs: dict[str, object]) -> types.ModuleType:
        module = types.ModuleType(name)
        for key, value in attrs.items():
            setattr(module, key, value)
        sys.modules[name] = module
        made.append(name)
        return module

    yield make
    for name in made:
        sys.modules.pop(name, None)
