"""The compute API (`/api/v1`): list runtimes, start/stop/restart/sleep/wake a user's
workloads, snapshots (create, list, restore, delete), forks, follow their progress as
server-sent events, read their logs.

Authorisation: 401 without a principal; the owner or an admin may act (`runtime.manage`,
`user.read` through `ctx.authorize`), anyone else gets 403; an unknown user 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Blueprint, Response, request

from ...api.conventions import ApiError, error_response, page_params, to_json
from ...api.principal import current_principal
from ...authz import Action, Principal, Resource
from ...errors import NotFound
from ...records import Runtime, Snapshot, User, WorkloadRole
from ...roles import workload_name
from .actor import OperationFailed
from .service import ComputeService, ComputeUnavailable
from .status import UserComputeState

HEARTBEAT_SECONDS = 15.0
MAX_LOG_LINES = 2000


def state_json(state: UserComputeState) -> dict[str, Any]:
    """A user's compute state as JSON (times ISO-8601, enums as values), with its `summary`
    (the state of both workloads, in a word)."""
    data: dict[str, Any] = to_json(state)
    data["summary"] = state.summary
    return data


def snapshot_json(snapshot: Snapshot) -> dict[str, Any]:
    """A snapshot as JSON: its archive's path stays on the server."""
    data: dict[str, Any] = to_json(snapshot, omit=("path",))
    return data


def runtime_json(record: Runtime, service: ComputeService) -> dict[str, Any]:
    """A workload record, with whether it answers now."""
    data: dict[str, Any] = to_json(record)
    snapshot = service.state_nowait(record.user_id)
    status = snapshot.runtime if record.role == WorkloadRole.RUNTIME else snapshot.editor
    data["ready"] = status.ready and record.state == status.state
    return data


def compute_blueprint(service: ComputeService) -> Blueprint:
    """The routes, bound to the daemon's compute service."""
    bp = Blueprint("compute", __name__, url_prefix="/api/v1")
    ctx = service.ctx

    @bp.app_errorhandler(ComputeUnavailable)
    async def _compute_unavailable(exc: ComputeUnavailable) -> Response:
        # Any route that reaches compute without a backend (this module's or another's, e.g.
        # a move): a 503 naming the fix, never a 500 (schemathesis found one that did).
        return error_response(503, "compute_unavailable", str(exc))

    def principal() -> Principal:
        who = current_principal()
        if who is None:
            raise ApiError(401, "unauthenticated", "log in, or send an API token")
        return who

    async def target(user_id: str, action: str) -> tuple[Principal, User]:
        who = principal()
        if not ctx.authorize(who, action, Resource("user", owner_id=user_id)):
            raise ApiError(403, "forbidden", "only the owner or an administrator may do this")
        user = await ctx.require_storage().get_user(user_id)
        if user is None:
            raise ApiError(404, "user_not_found", f"no user {user_id!r}")
        return who, user

    def started_or_503() -> None:
        if ctx.backend is None:
            raise ApiError(503, "compute_unavailable", "no container backend is configured "
                           "([compute] backend)")

    @bp.get("/runtimes")
    async def list_runtimes() -> dict[str, Any]:
        """Live workloads: the caller's, or everyone's for an administrator."""
        who = principal()
        storage = ctx.require_storage()
        everyone = ctx.authorize(who, Action.ADMIN, Resource("deployment"))
        wanted = request.args.get("user_id") if everyone else who.user_id
        records = await storage.list_runtimes(user_id=wanted)
        return {"items": [runtime_json(r, service) for r in records], "next_cursor": None}

    @bp.get("/users/<user_id>/runtimes")
    async def user_runtimes(user_id: str) -> dict[str, Any]:
        """A user's workloads (live ones; `?all=1` for the history) and compute state."""
        await target(user_id, Action.USER_READ)
        live_only = request.args.get("all", "") not in ("1", "true", "yes")
        records = await ctx.require_storage().list_runtimes(user_id=user_id,
                                                            live_only=live_only)
        return {"items": [runtime_json(r, service) for r in records], "next_cursor": None,
                "state": state_json(service.state_nowait(user_id))}

    async def operate(user_id: str, kind: str) -> tuple[dict[str, Any], int]:
        who, user = await target(user_id, Action.RUNTIME_MANAGE)
        started_or_503()
        if user.disabled:
            raise ApiError(409, "user_disabled", "this user is disabled")
        reason = f"{kind} requested by {who.username}"
        wait = request.args.get("wait", "") in ("1", "true", "yes") or kind == "stop"
        try:
            if not wait:
                service.request(user_id, kind, reason=reason)
                return {"state": state_json(service.state_nowait(user_id)),
                        "progress": f"/api/v1/users/{user_id}/progress"}, 202
            if kind == "start":
                state = await service.ensure_started(user_id, reason=reason)
            elif kind == "restart":
                state = await service.restart(user_id, reason=reason)
            else:
                state = await service.stop(user_id, reason=reason)
        except OperationFailed as exc:
            raise ApiError(502, "start_failed", str(exc)) from None
        except ComputeUnavailable as exc:
            raise ApiError(503, "compute_unavailable", str(exc)) from None
        return {"state": state_json(state)}, 200

    async def checkpoint_op(user_id: str, call: Any, code: str) -> Any:
        """Run a checkpoint operation for the owner or an admin; its failure is a 409 with
        the reason (the runtime is left as it was)."""
        who, user = await target(user_id, Action.RUNTIME_MANAGE)
        started_or_503()
        if user.disabled:
            raise ApiError(409, "user_disabled", "this user is disabled")
        try:
            return await call(f"requested by {who.username}")
        except OperationFailed as exc:
            raise ApiError(409, code, str(exc)) from None
        except ComputeUnavailable as exc:
            raise ApiError(503, "compute_unavailable", str(exc)) from None

    @bp.post("/users/<user_id>/runtimes/sleep")
    async def sleep(user_id: str) -> dict[str, Any]:
        """Checkpoint the runtime and stop it and the editor (answers once asleep)."""
        state = await checkpoint_op(
            user_id, lambda reason: service.sleep(user_id, reason=reason), "sleep_failed")
        return {"state": state_json(state)}

    @bp.post("/users/<user_id>/runtimes/wake")
    async def wake(user_id: str) -> tuple[dict[str, Any], int]:
        """Wake (or start) the user's workloads: 202 with where to follow progress;
        `?wait=1`: 200 once both answer."""
        if request.args.get("wait", "") not in ("1", "true", "yes"):
            who, user = await target(user_id, Action.RUNTIME_MANAGE)
            started_or_503()
            if user.disabled:
                raise ApiError(409, "user_disabled", "this user is disabled")
            service.request(user_id, "wake", reason=f"wake requested by {who.username}")
            return {"state": state_json(service.state_nowait(user_id)),
                    "progress": f"/api/v1/users/{user_id}/progress"}, 202
        state = await checkpoint_op(
            user_id, lambda reason: service.wake(user_id, reason=reason), "wake_failed")
        return {"state": state_json(state)}, 200

    @bp.get("/users/<user_id>/snapshots")
    async def list_snapshots(user_id: str) -> dict[str, Any]:
        """The user's snapshots (named ones, and the image of a sleeping runtime), oldest
        first; `?limit=&cursor=` page through them."""
        await target(user_id, Action.USER_READ)
        cursor, limit = page_params(request.args)
        items = await service.list_snapshots(user_id)
        start = 0
        if cursor is not None:
            if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 9):
                raise ApiError(400, "bad_cursor", "this cursor is not one we gave out")
            start = int(cursor)
        page = items[start:start + limit]
        more = start + limit < len(items)
        return {"items": [snapshot_json(s) for s in page],
                "next_cursor": str(start + limit) if more else None}

    @bp.post("/users/<user_id>/snapshots")
    async def create_snapshot(user_id: str) -> tuple[dict[str, Any], int]:
        """A named snapshot of the running runtime: `{"name": "..."}`; 201."""
        body = await request.get_json(silent=True) or {}
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise ApiError(400, "bad_name", "send {\"name\": \"...\"}")
        snapshot = await checkpoint_op(
            user_id, lambda reason: service.create_snapshot(user_id, name, reason=reason),
            "snapshot_failed")
        return {"snapshot": snapshot_json(snapshot)}, 201

    @bp.post("/users/<user_id>/snapshots/<snapshot>/restore")
    async def restore_snapshot(user_id: str, snapshot: str) -> dict[str, Any]:
        """Replace the running runtime by the snapshot (by id or name)."""
        state = await checkpoint_op(
            user_id, lambda reason: service.restore_snapshot(user_id, snapshot, reason=reason),
            "restore_failed")
        return {"state": state_json(state)}

    @bp.delete("/users/<user_id>/snapshots/<snapshot>")
    async def delete_snapshot(user_id: str, snapshot: str) -> tuple[str, int]:
        """Delete a named snapshot (by id or name); 204."""
        await checkpoint_op(
            user_id, lambda reason: service.delete_snapshot(user_id, snapshot, reason=reason),
            "delete_failed")
        return "", 204

    @bp.post("/users/<user_id>/forks")
    async def create_fork(user_id: str) -> tuple[dict[str, Any], int]:
        """A second, disposable runtime from a live checkpoint: `{"name": "..."}`; 201. Run
        code in it with `POST .../forks/<name>/execute`."""
        body = await request.get_json(silent=True) or {}
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise ApiError(400, "bad_name", "send {\"name\": \"...\"}")
        await checkpoint_op(
            user_id, lambda reason: service.fork(user_id, name, reason=reason), "fork_failed")
        return {"fork": {"name": name, "execute": f"/api/v1/users/{user_id}/forks/{name}/"
                         "execute"}}, 201

    @bp.post("/users/<user_id>/forks/<name>/execute")
    async def execute_in_fork(user_id: str, name: str) -> Response:
        """Run code in a fork: the body is mrmd-python's execute request
        (`{"code": "..."}`), the answer is the fork's."""
        await target(user_id, Action.RUNTIME_MANAGE)
        started_or_503()
        body = await request.get_data(as_text=False)
        if isinstance(body, str):
            body = body.encode()
        try:
            status, answer = await service.execute_in_fork(user_id, name, body)
        except NotFound:
            raise ApiError(404, "fork_not_found", f"no fork {name!r}") from None
        except OSError as exc:
            raise ApiError(502, "fork_unreachable", f"the fork did not answer: {exc}") from None
        return Response(answer, status=status, mimetype="application/json")

    @bp.delete("/users/<user_id>/forks/<name>")
    async def delete_fork(user_id: str, name: str) -> tuple[str, int]:
        """Remove a fork; 204."""
        await checkpoint_op(
            user_id, lambda reason: service.remove_fork(user_id, name, reason=reason),
            "fork_not_found")
        return "", 204

    @bp.post("/users/<user_id>/runtimes/start")
    async def start(user_id: str) -> tuple[dict[str, Any], int]:
        """Start the user's runtime and editor (`?wait=1`: answer once they are ready)."""
        return await operate(user_id, "start")

    @bp.post("/users/<user_id>/runtimes/stop")
    async def stop(user_id: str) -> tuple[dict[str, Any], int]:
        """Stop the user's editor and runtime (their files stay)."""
        return await operate(user_id, "stop")

    @bp.post("/users/<user_id>/runtimes/restart")
    async def restart(user_id: str) -> tuple[dict[str, Any], int]:
        """Restart both (`?wait=1`: answer once they are ready again)."""
        return await operate(user_id, "restart")

    @bp.get("/users/<user_id>/runtimes/logs")
    async def logs(user_id: str) -> Response:
        """The last lines of the user's `?role=runtime|editor` output (`?tail=N`)."""
        await target(user_id, Action.RUNTIME_MANAGE)
        started_or_503()
        try:
            role = WorkloadRole(request.args.get("role", "runtime"))
        except ValueError:
            raise ApiError(400, "bad_role", "role must be runtime or editor") from None
        raw = request.args.get("tail", "200")
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) \
                or not 1 <= int(raw) <= MAX_LOG_LINES:
            raise ApiError(400, "bad_tail", f"tail must be 1 to {MAX_LOG_LINES}")
        assert ctx.backend is not None
        try:
            text = await ctx.backend.logs(
                workload_name(service.deployment_id, user_id, role), tail=int(raw))
        except NotFound:
            text = ""
        return Response(text, mimetype="text/plain")

    @bp.get("/users/<user_id>/progress")
    async def progress(user_id: str) -> Response:
        """Server-sent events: `state` first, then each `progress` step. `?until=done`
        closes the stream after the step that ends an operation."""
        await target(user_id, Action.USER_READ)
        until_done = request.args.get("until") == "done"

        async def stream() -> AsyncIterator[bytes]:
            import json

            with service.subscribe_progress(user_id) as events:
                state = service.state_nowait(user_id)
                yield _sse("state", json.dumps(state_json(state)))
                if until_done and state.ready and state.operation is None:
                    return
                while True:
                    event = None
                    with trio.move_on_after(HEARTBEAT_SECONDS):
                        event = await events.receive()
                    if event is None:
                        yield b": keep-alive\n\n"
                        continue
                    yield _sse("progress", json.dumps(event.as_json()))
                    if until_done and event.done:
                        return

        response = Response(stream(), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        response.timeout = None
        return response

    return bp


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()
