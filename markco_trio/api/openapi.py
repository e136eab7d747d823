"""The OpenAPI 3.1 description of `/api/v1`, served at `GET /api/v1/openapi.json`.

The spec is built from the routes the API app really has: each `/api/v1` rule of the app is
looked up, first in the metadata its view function carries (`@document(Operation(...))`, what
an external plugin puts next to its route), then in `BUILTIN` (the built-in plugins' routes,
described here in one place). A route with neither is *undocumented*: it is left out of the
spec and `undocumented(app)` names it — the test suite fails on it, so a new route cannot ship
without its description. `stale(app)` names descriptions whose route no longer exists.

What every operation shares is added here, once: the error shape
(`{"error": {"code", "message"}}`), 401 and 403 (the request authentication refuses a bad
`Authorization` header or a cross-site request on any route, even one that needs no login),
503 (storage unavailable) and, for routes with path parameters, 400 and 404 (the front door
refuses encoded separators and dot segments in a path; an unknown id is a 404).
Scopes: an operation names the API-token scope it needs (`x-markco-scope`: `user`, `admin`,
`events:read`, or none), in its description and its security requirements.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from quart import Blueprint, Quart

from .. import __version__
from ..authz import KNOWN_SCOPES

__all__ = ["BUILTIN", "Operation", "build_spec", "document", "openapi_blueprint", "stale",
           "undocumented"]

PREFIX = "/api/v1"
ERROR_REF = {"$ref": "#/components/schemas/Error"}
STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted (runs in the background)",
               204: "Done, nothing to return", 400: "The request was not valid",
               401: "Not authenticated, or a bad Authorization header",
               403: "Not allowed: a missing scope, not the owner, or a cross-site request",
               404: "No such resource", 409: "Conflicts with the resource's state",
               410: "Gone (revoked, expired or used up)", 429: "Too many at once",
               502: "A workload did not answer or failed to start",
               503: "Unavailable: storage, compute or the event bus"}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Operation:
    """What one route does, for the spec.

    `scope`: the API-token scope needed (None: anonymous callers are served). `ok`: success
    statuses and their JSON schema (None: no body). `errors`: the route's own error statuses
    (the shared ones are added). `query`: query parameters, name -> JSON schema. `body`: the
    JSON request body's schema. `content`: the media type of a success body. `stream`: an
    open-ended event stream (excluded from fuzzing: it never ends)."""

    summary: str
    scope: str | None = "user"
    ok: Mapping[int, dict[str, Any] | None] = field(default_factory=lambda: {200: OBJECT})
    errors: tuple[int, ...] = ()
    query: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    body_required: bool = True
    content: str = "application/json"
    stream: bool = False
    any_status: bool = False  # the answer is relayed from a workload (fork execute)
    tag: str = ""


def document(operation: Operation) -> Callable[[F], F]:
    """Describe a route next to it (for plugins outside markco):

        @bp.get("/api/v1/things")
        @document(Operation("List things", ok={200: PAGE}))
        async def things(): ...
    """

    def mark(fn: F) -> F:
        fn.__markco_openapi__ = operation  # type: ignore[attr-defined]
        return fn

    return mark


# ------------------------------------------------------------------ schema pieces

OBJECT: dict[str, Any] = {"type": "object"}
STRING: dict[str, Any] = {"type": "string"}
PAGE: dict[str, Any] = {"type": "object", "required": ["items", "next_cursor"],
                        "properties": {"items": {"type": "array"},
                                       "next_cursor": {"type": ["string", "null"]}}}
LIMIT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 200}
PAGING: dict[str, dict[str, Any]] = {"cursor": STRING, "limit": LIMIT}
FLAG: dict[str, Any] = {"type": "string", "enum": ["1", "true", "yes", "0", "false", "no"]}
NAME_BODY: dict[str, Any] = {"type": "object", "required": ["name"],
                             "properties": {"name": {"type": "string", "minLength": 1}}}
TOKEN_BODY: dict[str, Any] = {"type": "object", "required": ["token"],
                              "properties": {"token": {"type": "string", "minLength": 1}}}
USER: dict[str, Any] = {
    "type": "object", "required": ["id", "username", "plan", "is_admin", "created_at"],
    "properties": {"id": STRING, "username": STRING, "email": {"type": ["string", "null"]},
                   "name": {"type": ["string", "null"]},
                   "avatar_url": {"type": ["string", "null"]}, "plan": STRING,
                   "is_admin": {"type": "boolean"}, "disabled": {"type": "boolean"},
                   "created_at": {"type": "string", "format": "date-time"}}}
TOKEN: dict[str, Any] = {
    "type": "object", "required": ["id", "name", "scopes", "created_at"],
    "not": {"required": ["token_hash"]},  # a secret's hash never leaves the server
    "properties": {"id": STRING, "name": STRING,
                   "scopes": {"type": "array", "items": STRING},
                   "expires_at": {"type": ["string", "null"]}}}
STATE: dict[str, Any] = {"type": "object", "required": ["state"],
                         "properties": {"state": OBJECT, "progress": STRING}}
REVOKED: dict[str, Any] = {"type": "object", "required": ["revoked"],
                           "properties": {"revoked": {"type": ["boolean", "integer"]}}}


def _compute(summary: str, *, errors: tuple[int, ...] = (409, 503), **kw: Any) -> Operation:
    return Operation(summary, tag="compute", errors=errors, **kw)


def _lifecycle(action: str, extra: tuple[int, ...] = ()) -> Operation:
    return _compute(f"{action.capitalize()} the user's workloads (`?wait=1`: answer when done; "
                    "otherwise 202 and follow `progress`)",
                    ok={200: STATE, 202: STATE}, errors=(409, 503, *extra),
                    query={"wait": FLAG})


BUILTIN: dict[tuple[str, str], Operation] = {
    # core
    ("GET", "/api/v1"): Operation(
        "The deployment: name, version, public URL", scope=None, tag="core",
        ok={200: {"type": "object", "required": ["name", "version", "public_url"],
                  "properties": {"name": STRING, "version": STRING, "public_url": STRING}}}),
    ("GET", "/api/v1/openapi.json"): Operation("This description (OpenAPI 3.1)", scope=None,
                                               tag="core"),
    # auth (markco_trio/builtin/auth/web/api.py)
    ("GET", "/api/v1/me"): Operation(
        "Who you are, how you are authenticated, your grants", tag="auth",
        ok={200: {"type": "object", "required": ["user", "via", "scopes", "grants"],
                  "properties": {"user": USER, "via": STRING,
                                 "scopes": {"type": ["array", "null"], "items": STRING},
                                 "grants": {"type": "array"}}}}),
    ("GET", "/api/v1/tokens"): Operation(
        "Your API tokens (never their secret)", tag="auth",
        ok={200: {**PAGE, "properties": {**PAGE["properties"],
                                         "items": {"type": "array", "items": TOKEN}}}}),
    ("POST", "/api/v1/tokens"): Operation(
        "Create an API token; the answer holds its secret, once",
        ok={201: {**TOKEN, "required": [*TOKEN["required"], "token"]}},
        errors=(400,), tag="auth",
        body={"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 1},
            "scopes": {"type": "array", "minItems": 1, "uniqueItems": True,
                       "items": {"type": "string", "enum": sorted(KNOWN_SCOPES)}},
            "expires_days": {"type": ["number", "null"], "exclusiveMinimum": 0,
                             "maximum": 3650}}}),
    ("DELETE", "/api/v1/tokens/{token_id}"): Operation("Revoke one of your API tokens",
                                                       ok={200: REVOKED}, tag="auth"),
    ("GET", "/api/v1/sessions"): Operation("Your sessions (`current` marks this one)",
                                           ok={200: PAGE}, tag="auth"),
    ("DELETE", "/api/v1/sessions"): Operation("Log out everywhere: end all your sessions",
                                              ok={200: REVOKED}, tag="auth"),
    ("DELETE", "/api/v1/sessions/{session_id}"): Operation("End one of your sessions",
                                                           ok={200: REVOKED}, tag="auth"),
    ("GET", "/api/v1/invites"): Operation("Invites you sent", ok={200: PAGE}, tag="auth"),
    ("POST", "/api/v1/invites"): Operation(
        "Invite someone to a project; the answer holds the invite's token and URL, once",
        ok={201: {"type": "object", "required": ["token", "url"],
                  "properties": {"token": STRING, "url": STRING}}},
        errors=(400,), tag="auth",
        body={"type": "object", "required": ["project"], "properties": {
            "project": {"type": "string", "minLength": 1},
            "role": {"type": "string", "enum": ["editor", "viewer"]},
            "expires_days": {"type": ["number", "null"], "exclusiveMinimum": 0},
            "max_uses": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000}}}),
    ("POST", "/api/v1/invites/lookup"): Operation(
        "What an invite token is for (the token travels in the body, never the URL)",
        scope=None, errors=(400, 404, 410), body=TOKEN_BODY, tag="auth"),
    ("POST", "/api/v1/invites/accept"): Operation(
        "Accept an invite: you get a grant on the inviter's project",
        errors=(400, 404, 409, 410), body=TOKEN_BODY, tag="auth"),
    ("DELETE", "/api/v1/invites/{invite_id}"): Operation("Revoke an invite you sent",
                                                         ok={200: REVOKED}, tag="auth"),
    ("GET", "/api/v1/grants"): Operation(
        "Grants you hold and grants you gave", tag="auth",
        ok={200: {"type": "object", "required": ["held", "given"],
                  "properties": {"held": {"type": "array"}, "given": {"type": "array"}}}}),
    ("DELETE", "/api/v1/grants/{grant_id}"): Operation("Revoke a grant you gave",
                                                       ok={200: REVOKED}, tag="auth"),
    ("GET", "/api/v1/admin-entries"): Operation(
        "Administrators' entries into your editor, newest first", ok={200: PAGE}, tag="auth"),
    ("GET", "/api/v1/users"): Operation(
        "Every user (administrators)", scope="admin", errors=(400,), query=PAGING, tag="auth",
        ok={200: {**PAGE, "properties": {**PAGE["properties"],
                                         "items": {"type": "array", "items": USER}}}}),
    ("GET", "/api/v1/users/{user_id}"): Operation(
        "A user's profile (yours, or any for an administrator)", ok={200: USER}, tag="auth"),
    # compute (markco_trio/builtin/compute/api.py, plans.py)
    ("GET", "/api/v1/runtimes"): _compute(
        "Live workloads: yours, or everyone's (`?user_id=` to pick one) for an administrator",
        ok={200: PAGE}, errors=(), query={"user_id": STRING}),
    ("GET", "/api/v1/users/{user_id}/runtimes"): _compute(
        "A user's workloads (live ones; `?all=1` for the history) and compute state",
        ok={200: PAGE}, errors=(), query={"all": FLAG}),
    ("POST", "/api/v1/users/{user_id}/runtimes/start"): _lifecycle("start", (502,)),
    ("POST", "/api/v1/users/{user_id}/runtimes/stop"): _lifecycle("stop", (502,)),
    ("POST", "/api/v1/users/{user_id}/runtimes/restart"): _lifecycle("restart", (502,)),
    ("POST", "/api/v1/users/{user_id}/runtimes/sleep"): _compute(
        "Put the runtime to sleep (checkpointed to disk; woken on use)", ok={200: STATE}),
    ("POST", "/api/v1/users/{user_id}/runtimes/wake"): _lifecycle("wake"),
    ("GET", "/api/v1/users/{user_id}/runtimes/logs"): _compute(
        "The last lines of a workload's log", ok={200: STRING}, content="text/plain",
        errors=(503,), query={"role": {"type": "string", "enum": ["runtime", "editor"]},
                              "tail": {"type": "integer", "minimum": 1, "maximum": 10000}}),
    ("GET", "/api/v1/users/{user_id}/progress"): _compute(
        "Progress of the user's current operation, as server-sent events "
        "(`?until=done` ends the stream when it finishes)", ok={200: STRING},
        content="text/event-stream", stream=True, errors=(),
        query={"until": {"type": "string", "enum": ["done"]}}),
    ("GET", "/api/v1/users/{user_id}/snapshots"): _compute(
        "The user's named snapshots", ok={200: PAGE}, errors=(503,), query=PAGING),
    ("POST", "/api/v1/users/{user_id}/snapshots"): _compute(
        "Take a named snapshot of the running runtime", ok={201: OBJECT}, body=NAME_BODY),
    ("POST", "/api/v1/users/{user_id}/snapshots/{snapshot}/restore"): _compute(
        "Replace the running runtime by a snapshot (by id or name)", ok={200: STATE}),
    ("DELETE", "/api/v1/users/{user_id}/snapshots/{snapshot}"): _compute(
        "Delete a named snapshot (by id or name)", ok={204: None}),
    ("POST", "/api/v1/users/{user_id}/forks"): _compute(
        "A disposable second runtime from a live checkpoint", ok={201: OBJECT},
        body=NAME_BODY),
    ("POST", "/api/v1/users/{user_id}/forks/{name}/execute"): _compute(
        "Run code in a fork: the body is the runtime's execute request, the answer (and its "
        "status) the fork's", errors=(502, 503), any_status=True, body_required=False,
        body={"type": "object", "properties": {"code": STRING}}),
    ("DELETE", "/api/v1/users/{user_id}/forks/{name}"): _compute("Remove a fork",
                                                                 ok={204: None}),
    ("GET", "/api/v1/plans"): _compute("The plans a user can be given, with their limits",
                                       ok={200: PAGE}, errors=()),
    ("PUT", "/api/v1/users/{user_id}/plan"): _compute(
        "Change a user's plan (administrators); applied to a running runtime at once",
        scope="admin", errors=(), body={"type": "object", "required": ["plan"],
                                        "properties": {"plan": STRING}}),
    # events (markco_trio/builtin/events/api.py)
    ("GET", "/api/v1/events"): Operation(
        "The event log: your own events, or anyone's for an administrator",
        scope="events:read", ok={200: PAGE}, errors=(400,), tag="events",
        query={**PAGING, "type": {"type": "array", "items": STRING},
               "user_id": STRING, "since": STRING, "until": STRING}),
    ("GET", "/api/v1/events/stream"): Operation(
        "The event log live, as server-sent events (resume with `Last-Event-ID`)",
        scope="events:read", ok={200: STRING}, content="text/event-stream", stream=True,
        errors=(400, 429, 503), tag="events",
        query={"cursor": STRING, "type": {"type": "array", "items": STRING},
               "user_id": STRING, "since": STRING, "until": STRING}),
    ("GET", "/api/v1/webhooks"): Operation("The configured webhooks (administrators)",
                                           scope="admin", ok={200: PAGE}, tag="events"),
    ("GET", "/api/v1/webhooks/deliveries"): Operation(
        "Webhook delivery attempts, oldest first (administrators)", scope="admin",
        ok={200: PAGE},
        errors=(400,), tag="events",
        query={**PAGING, "outcome": STRING, "webhook": STRING, "event_id": STRING}),
}


# ------------------------------------------------------------------ building the spec

_CONVERTER = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")


def openapi_path(rule: str) -> str:
    """A werkzeug rule as an OpenAPI path: `/users/<user_id>` -> `/users/{user_id}`."""
    return _CONVERTER.sub(r"{\1}", rule)


def api_routes(app: Quart) -> Iterator[tuple[str, str, Callable[..., Any]]]:
    """(method, OpenAPI path, view function) of every `/api/v1` route of `app`."""
    for rule in app.url_map.iter_rules():
        if rule.rule != PREFIX and not rule.rule.startswith(PREFIX + "/"):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield method, openapi_path(rule.rule), app.view_functions[rule.endpoint]


def _describe(method: str, path: str, view: Callable[..., Any]) -> Operation | None:
    attached = getattr(view, "__markco_openapi__", None)
    if isinstance(attached, Operation):
        return attached
    return BUILTIN.get((method, path))


def undocumented(app: Quart) -> list[str]:
    """`METHOD /path` of every `/api/v1` route that has no description."""
    return [f"{m} {p}" for m, p, view in api_routes(app) if _describe(m, p, view) is None]


def stale(app: Quart) -> list[str]:
    """`METHOD /path` of every `BUILTIN` description whose route `app` does not have."""
    present = {(m, p) for m, p, _ in api_routes(app)}
    return [f"{m} {p}" for m, p in BUILTIN if (m, p) not in present]


def _response(status: int, schema: dict[str, Any] | None, content: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": STATUS_TEXT.get(status, "Answer")}
    if schema is not None and status != 204:
        out["content"] = {content: {"schema": schema}}
    return out


def _error(status: int) -> dict[str, Any]:
    return {"description": STATUS_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": ERROR_REF}}}


def _operation(method: str, path: str, op: Operation) -> dict[str, Any]:
    params = re.findall(r"{([^}]+)}", path)
    responses: dict[str, Any] = {
        str(status): _response(status, schema, op.content) for status, schema in op.ok.items()}
    errors = {401, 403, 503, *op.errors}
    if params:
        errors |= {400, 404}
    if op.query:
        errors.add(400)  # a malformed query parameter
    if op.body is not None:
        errors.add(400)  # not a JSON object
    for status in sorted(errors):
        responses[str(status)] = _error(status)
    if op.any_status:
        responses["default"] = _response(0, OBJECT, op.content)
    needs = (f"Needs the `{op.scope}` scope (an API token made with it, or a session)."
             if op.scope else "Anonymous callers are served.")
    security: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"sessionCookie": []}]
    if op.scope is None:
        security.insert(0, {})
    out: dict[str, Any] = {
        "operationId": f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_')}",
        "summary": op.summary,
        "description": needs,
        "tags": [op.tag or "plugins"],
        "security": security,
        "x-markco-scope": op.scope,
        "responses": responses,
    }
    if op.stream:
        out["x-markco-stream"] = True
    parameters = [{"name": name, "in": "path", "required": True, "schema": STRING}
                  for name in params]
    for name, schema in op.query.items():
        param: dict[str, Any] = {"name": name, "in": "query", "required": False,
                                 "schema": schema}
        if schema.get("type") == "array":
            param.update(style="form", explode=True)
        parameters.append(param)
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {"required": op.body_required,
                              "content": {"application/json": {"schema": op.body}}}
    return out


def build_spec(app: Quart, *, public_url: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of `app`'s documented `/api/v1` routes."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, view in api_routes(app):
        op = _describe(method, path, view)
        if op is not None:
            paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "markco API",
            "version": __version__,
            "description": (
                "The JSON API of a markco deployment. Errors are always "
                "`{\"error\": {\"code\", \"message\"}}`; lists are cursor-paged "
                "(`?cursor=&limit=`, answers `{\"items\", \"next_cursor\"}`); times are ISO-8601 "
                "UTC. Authenticate with `Authorization: Bearer <API token>` (`markco token "
                "create`, or `POST /api/v1/tokens`) or a browser session. Token scopes: "
                + ", ".join(f"`{s}`" for s in sorted(KNOWN_SCOPES))
                + ". Every request is given an `X-Request-Id` (yours, when acceptable) that "
                "the server's logs carry."),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {"Error": {
                "type": "object", "required": ["error"],
                "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string", "pattern": "^[a-z0-9_]+$"},
                                   "message": STRING}}}}},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "An API token; its scopes limit what it may do."},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "markco_session",
                                  "description": "A browser session (`__Host-markco_session` "
                                                 "over HTTPS); not limited by scope."}},
        },
    }
    if public_url:
        spec["servers"] = [{"url": public_url.rstrip("/")}]
    return spec


def openapi_blueprint(app: Quart, *, public_url: str = "") -> Blueprint:
    """`GET /api/v1/openapi.json`, built from `app` at the first request (every blueprint is
    registered by then) and kept."""
    bp = Blueprint("openapi", __name__)
    built: list[dict[str, Any]] = []

    @bp.get(PREFIX + "/openapi.json")
    async def openapi() -> dict[str, Any]:
        if not built:
            built.append(build_spec(app, public_url=public_url))
        return built[0]

    return bp
