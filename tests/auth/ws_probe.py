"""A tiny plugin for the tests: a WebSocket route that says who is calling."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, websocket

from markco_trio.api.principal import current_principal
from markco_trio.context import PluginContext
from markco_trio.hookspecs import hookimpl


@hookimpl
def markco_web_routes(ctx: PluginContext) -> list[Any]:
    """`/probe/ws` answers the caller's username (or "anonymous") and closes."""
    bp = Blueprint("auth_ws_probe", __name__)

    @bp.websocket("/probe/ws")
    async def probe() -> None:
        principal = current_principal()
        await websocket.send(principal.username if principal else "anonymous")

    return [bp]
