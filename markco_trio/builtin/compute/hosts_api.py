"""The hosts API (administrators only): the hosts and what is on them, moves, drains.

- `GET /api/v1/hosts`: each configured host — up, down (why) or draining; its labels, memory
  budget, reserved memory and users.
- `POST /api/v1/users/<id>/runtimes/move` `{"to": "HOST"}`: move the user's runtime (memory
  and all) to HOST; answers with the move's measurements once it is done (409: it was rolled
  back, the runtime stays where it was).
- `POST /api/v1/hosts/<host>/drain`: move everyone off HOST (sleeping users included); nothing
  new is placed there afterwards.
- `GET /api/v1/migrations`: every move, newest first, with its timings and bytes.
"""

from __future__ import annotations

import html
from typing import Any

from quart import Blueprint, request

from ...api.conventions import ApiError, to_json
from ...api.openapi import OBJECT, PAGE, Operation, document
from ...api.principal import current_principal
from ...authz import Action, Resource
from ...errors import NotFound
from . import placement
from .actor import OperationFailed
from .moves import MoveFailed
from .service import ComputeService

MOVE_BODY: dict[str, Any] = {"type": "object", "required": ["to"],
                             "properties": {"to": {"type": "string", "minLength": 1}}}


async def hosts_view(service: ComputeService) -> list[dict[str, Any]]:
    """Each host as operators see it (also the admin page's and `markco hosts list`'s)."""
    hosts = placement.hosts_of(service)
    if hosts is None:
        return [{"name": service.host, "state": "up", "labels": [], "memory_budget_mb": 0,
                 "reserved_mb": 0, "users": []}]
    reserved = await placement.reservations(service)
    options: dict[str, Any] = getattr(hosts, "host_options", {})
    result = []
    for name in hosts.host_names():
        host = options.get(name)
        users = reserved.get(name, {})
        state = "draining" if name in hosts.draining else \
            ("down" if not hosts.is_up(name) else "up")
        result.append({"name": name, "state": state, "reason": hosts.down.get(name),
                       "labels": list(getattr(host, "labels", [])),
                       "memory_budget_mb": getattr(host, "memory_budget_mb", 0),
                       "reserved_mb": sum(users.values()) >> 20, "users": sorted(users)})
    return result


def hosts_blueprint(service: ComputeService) -> Blueprint:
    """The routes (see the module doc), bound to the compute service."""
    bp = Blueprint("compute_hosts", __name__, url_prefix="/api/v1")
    ctx = service.ctx

    def admin() -> str:
        who = current_principal()
        if who is None:
            raise ApiError(401, "unauthenticated", "log in, or send an API token")
        if not ctx.authorize(who, Action.ADMIN, Resource("deployment")):
            raise ApiError(403, "forbidden", "only an administrator may do this")
        return who.username

    @bp.get("/hosts")
    @document(Operation("The container hosts: state, labels, budget, reserved memory, users "
                        "(administrators)", scope="admin", tag="compute", ok={200: PAGE}))
    async def list_hosts() -> dict[str, Any]:
        """See the module doc."""
        admin()
        return {"items": await hosts_view(service), "next_cursor": None}

    @bp.get("/migrations")
    @document(Operation("Every move of a runtime between hosts, newest first, with its "
                        "durations and bytes (administrators)", scope="admin", tag="compute",
                        ok={200: PAGE}))
    async def list_migrations() -> dict[str, Any]:
        """See the module doc."""
        admin()
        return {"items": await migrations_view(service), "next_cursor": None}

    @bp.post("/users/<user_id>/runtimes/move")
    @document(Operation("Move the user's runtime, memory and all, to another host "
                        "(administrators); 409 when it was rolled back", scope="admin",
                        tag="compute", body=MOVE_BODY, errors=(400, 404, 409, 503),
                        ok={200: OBJECT}))
    async def move(user_id: str) -> dict[str, Any]:
        """See the module doc."""
        who = admin()
        body = await request.get_json(silent=True)
        to = body.get("to") if isinstance(body, dict) else None
        if not isinstance(to, str) or not to:
            raise ApiError(400, "bad_host", "send {\"to\": \"HOST\"} naming a configured host")
        if await ctx.require_storage().get_user(user_id) is None:
            raise ApiError(404, "user_not_found", f"no user {user_id!r}")
        try:
            result = await service.move(user_id, to, reason=f"move requested by {who}")
        except NotFound as exc:
            raise ApiError(404, "host_not_found", str(exc)) from None
        except (OperationFailed, MoveFailed) as exc:
            raise ApiError(409, "move_failed", str(exc)) from None
        return {"move": result}

    @bp.post("/hosts/<host>/drain")
    @document(Operation("Move every user off a host, sleeping ones included (administrators)",
                        scope="admin", tag="compute", errors=(404, 409), ok={200: OBJECT}))
    async def drain(host: str) -> dict[str, Any]:
        """See the module doc."""
        who = admin()
        try:
            outcome = await service.drain_host(host, reason=f"drain of {host} by {who}")
        except NotFound as exc:
            raise ApiError(404, "host_not_found", str(exc)) from None
        except MoveFailed as exc:
            raise ApiError(409, "drain_failed", str(exc)) from None
        return {"host": host, "users": outcome}

    return bp


async def migrations_view(service: ComputeService) -> list[dict[str, Any]]:
    """Every move, newest first, with `switch_ms` and `bytes` (schema 5) read alongside."""
    storage: Any = service.storage
    rows = await storage._read(lambda tx: tx.execute(
        "SELECT id, switch_ms, bytes FROM migrations"))
    extra = {row["id"]: (row["switch_ms"], row["bytes"]) for row in rows}
    items = []
    for migration in reversed(await service.storage.list_migrations()):
        data: dict[str, Any] = to_json(migration)
        data["switch_ms"], data["bytes"] = extra.get(migration.id, (None, None))
        items.append(data)
    return items


def moves_section(items: list[dict[str, Any]], *, limit: int = 20) -> str:
    """The admin page's "Moves" section: the newest moves with their phases (escaped HTML)."""
    def cell(value: Any) -> str:
        return f"<td>{html.escape('' if value is None else str(value))}</td>"

    if not items:
        return ("<section id=\"moves\"><h2>Moves</h2><p class=\"muted\">No runtime has "
                "moved between hosts yet.</p></section>")
    rows = "".join(
        "<tr>" + cell(m.get("started_at")) + cell(m.get("user_id")) + cell(
            f"{m.get('from_host')} → {m.get('to_host')}") + cell(m.get("status"))
        + cell(m.get("checkpoint_ms")) + cell(m.get("transfer_ms")) + cell(m.get("restore_ms"))
        + cell(m.get("switch_ms")) + cell(f"{(m.get('bytes') or 0) / (1 << 20):.1f}")
        + cell(m.get("error")) + "</tr>" for m in items[:limit])
    return ("<section id=\"moves\"><h2>Moves</h2><table><tr><th>Started</th><th>User</th>"
            "<th>Hosts</th><th>Status</th><th>Checkpoint ms</th><th>Transfer ms</th>"
            "<th>Restore ms</th><th>Switch ms</th><th>MiB</th><th>Error</th></tr>"
            f"{rows}</table></section>")
