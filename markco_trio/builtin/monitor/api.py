"""`GET /api/v1/monitor`: what the monitor sees now.

A user sees their own runtime (memory: working set, real limit, %; CPU; seconds since their
last sign of intent, and which); an administrator (the `admin` scope, or a session of one) sees
every watched runtime (`?user_id=` for one) and the monitor's counters. Nothing here is
persisted: it is the last poll's view; the events are in `/api/v1/events`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from quart import Blueprint, request

from ...api.conventions import ApiError
from ...api.openapi import OBJECT, STRING, Operation, document
from ...api.principal import current_principal
from ...authz import Action, Resource
from ...context import PluginContext
from .service import Monitor


def monitor_blueprint(ctx: PluginContext, monitor: Monitor) -> Blueprint:
    """The route, bound to the daemon's monitor."""
    bp = Blueprint("monitor", __name__, url_prefix="/api/v1")

    @bp.get("/monitor")
    @document(Operation("What the monitor sees now: your runtime, or every one for an "
                        "administrator (with the monitor's counters)", ok={200: OBJECT},
                        query={"user_id": STRING}, tag="compute"))
    async def view() -> dict[str, Any]:
        """The last poll's view of the caller's runtime, or of every runtime for an admin."""
        who = current_principal()
        if who is None:
            raise ApiError(401, "unauthenticated", "log in, or send an API token")
        everyone = ctx.authorize(who, Action.ADMIN, Resource("deployment"))
        if not everyone and not ctx.authorize(who, Action.RUNTIME_USE,
                                              Resource("user", owner_id=who.user_id)):
            raise ApiError(403, "forbidden", "this needs the user scope")
        wanted = request.args.get("user_id") or None
        if not everyone:
            if wanted is not None and wanted != who.user_id:
                raise ApiError(403, "forbidden", "only an administrator may see another "
                               "user's runtime")
            wanted = who.user_id
        users = [wanted] if wanted is not None else monitor.watched_nowait()
        items = [v for v in (monitor.view_nowait(u) for u in users) if v is not None]
        answer: dict[str, Any] = {"interval": monitor.options.interval, "runtimes": items}
        if everyone:
            stats = asdict(monitor.statistics())
            stats["events"] = dict(stats["events"])
            answer["statistics"] = stats
        return answer

    return bp
