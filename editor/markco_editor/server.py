"""Wires the editor together and serves it: workspace, hub, runtime client, executor, watcher
and the ASGI app under hypercorn, all owned by one nursery."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from functools import partial

import hypercorn.trio
import trio
from hypercorn.config import Config

from markco_editor.app import EditorApp
from markco_editor.executor import Executor
from markco_editor.hub import Hub
from markco_editor.page import PageRenderer, load_static_assets
from markco_editor.runtime import RuntimeClient
from markco_editor.settings import EditorSettings
from markco_editor.sync import DocumentSync
from markco_editor.watcher import FileWatcher
from markco_editor.workspace import Workspace

__all__ = ["serve_editor"]

log = logging.getLogger(__name__)

# A larger WebSocket message than this is not a command the page sends.
_MAX_WS_MESSAGE = 4 * 1024 * 1024
# Pings keep idle WebSockets open through proxies that close silent connections.
_WS_PING_SECONDS = 20.0


def _hypercorn_config(settings: EditorSettings) -> Config:
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("markco_editor.http")
    config.websocket_ping_interval = _WS_PING_SECONDS
    config.websocket_max_message_size = _MAX_WS_MESSAGE
    config.include_server_header = False
    return config


async def serve_editor(
    settings: EditorSettings, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the editor until cancelled; report the port it listens on once it accepts
    connections (the real one when `settings.port` is 0)."""
    workspace = Workspace(settings.user_dir)
    hub = Hub()
    async with AsyncExitStack() as stack:
        runtime = None
        if settings.runtime_socket is not None:
            runtime = await stack.enter_async_context(
                RuntimeClient(socket_path=settings.runtime_socket)
            )
        elif settings.runtime_port is not None:
            runtime = await stack.enter_async_context(RuntimeClient(port=settings.runtime_port))
        executor = Executor(runtime, hub)
        watcher = FileWatcher(workspace, hub)
        assets = load_static_assets()
        sync = DocumentSync(
            workspace, lambda entry: watcher.note_saved(entry, created=False, by=None))
        app = EditorApp(
            settings, workspace, hub, executor, watcher, PageRenderer(settings, assets), assets,
            sync,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.run)
            nursery.start_soon(watcher.run)
            nursery.start_soon(sync.run)
            binds: list[str] = await nursery.start(
                partial(hypercorn.trio.serve, app, _hypercorn_config(settings))  # type: ignore[arg-type]
            )
            port = int(binds[0].rpartition(":")[2])
            log.info(
                "markco-editor serving %s on http://%s:%d%s (runtime: %s)",
                settings.user_dir,
                settings.host,
                port,
                settings.base_path,
                runtime.address if runtime is not None else "none",
            )
            task_status.started(port)
