"""The events API (`/api/v1`): the event log, its live stream, and the webhook delivery log.

- `GET /api/v1/events?user_id=&type=&since=&until=&cursor=&limit=` — events oldest first,
  cursor-paged by their place in the log (stable while events are appended).
- `GET /api/v1/events/stream` — the same filters as server-sent events, live; resumable with
  `Last-Event-ID` (or `?cursor=`).
- `GET /api/v1/webhooks` — the configured webhooks (never their secrets) and their queues.
- `GET /api/v1/webhooks/deliveries?webhook=&event_id=&outcome=&cursor=&limit=` — every
  delivery attempt, oldest first.

Who sees what: reading events needs `events.read` — a browser session, or an API token with
the `events:read` scope (`admin` implies it). A user sees only the events about themselves
(`user_id` is forced to theirs; asking for another user's is a 403, not an empty list). An
administrator acting as one (a session, or an `admin`-scoped token) sees every event,
including the deployment's own (no user), and may filter by `user_id`. The webhook routes are
for administrators only.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Blueprint, Response, g, request

from ...api.conventions import ApiError, page_params, to_json
from ...api.principal import current_principal
from ...authz import Action, Principal, Resource
from ...context import PluginContext
from ...events import EventBus
from .delivery import webhook_subscriber
from .options import EventsOptions, WebhooksOptions
from .query import BadQuery, EventQuery, event_json, parse_query
from .stream import event_stream

_DELIVERY_OUTCOMES = ("delivered", "retrying", "failed")


def _principal() -> Principal:
    who = current_principal()
    if who is None:
        raise ApiError(401, "unauthenticated", "log in, or send an API token")
    return who


def _bad(exc: BadQuery) -> ApiError:
    return ApiError(400, exc.code, str(exc))


def events_blueprint(ctx: PluginContext, options: EventsOptions,
                     webhooks: WebhooksOptions) -> Blueprint:
    """The routes, bound to the daemon's storage and bus."""
    bp = Blueprint("events", __name__, url_prefix="/api/v1")
    streams: dict[str, int] = {}

    def is_admin(who: Principal) -> bool:
        return ctx.authorize(who, Action.EVENTS_READ, Resource("deployment"))

    def may_read(who: Principal, user_id: str | None) -> bool:
        """Whether `who` may read the events of `user_id` (None: everyone's)."""
        if is_admin(who):
            return True
        return (user_id is not None and who.user_id == user_id
                and ctx.authorize(who, Action.EVENTS_READ, Resource("user", owner_id=user_id)))

    def still_allowed(who: Principal, user_id: str | None) -> Callable[[], Awaitable[bool]]:
        """For an open stream: whether the credential that opened it still gives its
        user the right to read it. Decided again each time the auth plugin's answers may
        have been revoked (its `revision` moved: a revoked token or session, a logout
        everywhere, a disabled user, a cache flush); without an auth plugin, always."""
        authority = ctx.sessions
        revision = getattr(authority, "revision", None)
        bearer = request.headers.get("Authorization")
        session = getattr(g, "markco_session_token", None)
        seen = revision
        ok = True

        async def check() -> bool:
            nonlocal seen, ok
            if not ok or authority is None or revision is None:
                return ok
            now = authority.revision
            if now == seen:
                return True
            seen = now
            if bearer is not None:
                again = await authority.principal_for_token(bearer.partition(" ")[2].strip())
            elif session is not None:
                again = await authority.principal_for_session(session)
            else:
                again = None
            ok = (again is not None and again.user_id == who.user_id
                  and may_read(again, user_id))
            return ok

        return check

    def query_for(who: Principal) -> EventQuery:
        """The caller's query, its user filter decided by who they are."""
        wanted = request.args.get("user_id") or None
        if is_admin(who):
            user_id = wanted
        else:
            user_id = who.user_id
            if wanted is not None and wanted != who.user_id:
                raise ApiError(403, "forbidden", "you may read only your own events")
            if not ctx.authorize(who, Action.EVENTS_READ, Resource("user", owner_id=user_id)):
                raise ApiError(403, "forbidden", "reading events needs the events:read scope "
                               "(an API token made with --scope events:read)")
        try:
            return parse_query(request.args, request.args.getlist("type"), user_id=user_id)
        except BadQuery as exc:
            raise _bad(exc) from None

    @bp.get("/events")
    async def list_events() -> dict[str, Any]:
        """One page of events, oldest first."""
        who = _principal()
        query = query_for(who)
        cursor, limit = page_params(request.args)
        try:
            after = query.position(cursor)
        except BadQuery as exc:
            raise _bad(exc) from None
        # One more than asked: whether a next page exists without a second query.
        events = await ctx.require_storage().list_events(
            after_seq=after, limit=limit + 1, user_id=query.user_id,
            types=list(query.types) if query.types is not None else None,
            since=query.since, until=query.until)
        page = events[:limit]
        more = len(events) > limit
        return {"items": [event_json(e) for e in page],
                "next_cursor": query.cursor(page[-1].seq) if more else None}

    @bp.get("/events/stream")
    async def stream() -> Response:
        """Live events as server-sent events."""
        who = _principal()
        query = query_for(who)
        resume = request.headers.get("Last-Event-ID") or request.args.get("cursor")
        try:
            after = query.position(resume) if resume else None
        except BadQuery as exc:
            raise _bad(exc) from None
        bus = ctx.events
        if not isinstance(bus, EventBus):
            raise ApiError(503, "events_unavailable", "the event bus is not running")
        if streams.get(who.user_id, 0) >= options.max_streams_per_user:
            raise ApiError(429, "too_many_streams",
                           f"at most {options.max_streams_per_user} event streams per user at "
                           "once; close another first")
        storage = ctx.require_storage()
        allowed = still_allowed(who, query.user_id)

        async def body() -> Any:
            # Counted from the first step: a stream whose client left before its body began
            # never runs, and so never needs uncounting.
            streams[who.user_id] = streams.get(who.user_id, 0) + 1
            try:
                async for chunk in event_stream(bus, storage, query, after_seq=after,
                                                heartbeat=options.stream_heartbeat,
                                                buffer=options.stream_buffer,
                                                allowed=allowed):
                    yield chunk
            finally:
                left = streams.get(who.user_id, 1) - 1
                if left > 0:
                    streams[who.user_id] = left
                else:
                    streams.pop(who.user_id, None)

        response = Response(body(), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"
        response.timeout = None
        return response

    def admin_only() -> None:
        who = _principal()
        if not ctx.authorize(who, Action.ADMIN, Resource("deployment")):
            raise ApiError(403, "forbidden", "only an administrator (with the admin scope) "
                           "may read the webhooks")

    @bp.get("/webhooks")
    async def list_webhooks() -> dict[str, Any]:
        """The configured webhooks: name, URL, types, and how many events their queue was
        handed (`queued`) and lost because it was full (`dropped`) since the daemon started."""
        admin_only()
        bus = ctx.events
        counts = bus.statistics().subscribers if bus is not None else {}
        return {"items": [{"name": name, "url": endpoint.url, "types": endpoint.types or None,
                           "queued": counts.get(webhook_subscriber(name), (0, 0))[0],
                           "dropped": counts.get(webhook_subscriber(name), (0, 0))[1]}
                          for name, endpoint in sorted(webhooks.endpoints.items())],
                "next_cursor": None}

    @bp.get("/webhooks/deliveries")
    async def list_deliveries() -> dict[str, Any]:
        """Delivery attempts, oldest first; filter by `webhook`, `event_id`, `outcome`."""
        admin_only()
        cursor, limit = page_params(request.args)
        after = _delivery_position(cursor)
        outcome = request.args.get("outcome") or None
        if outcome is not None and outcome not in _DELIVERY_OUTCOMES:
            raise ApiError(400, "bad_outcome",
                           f"outcome must be one of {', '.join(_DELIVERY_OUTCOMES)}")
        rows = await ctx.require_storage().list_webhook_deliveries(
            after_seq=after, limit=limit + 1, webhook=request.args.get("webhook") or None,
            event_id=request.args.get("event_id") or None, outcome=outcome)
        page = rows[:limit]
        more = len(rows) > limit
        return {"items": [to_json(r, omit=("seq", "event_seq")) for r in page],
                "next_cursor": _delivery_cursor(page[-1].seq) if more else None}

    return bp


def _delivery_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"d1:{seq}".encode()).decode().rstrip("=")


def _delivery_position(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    kind, _, seq = raw.partition(":")
    if kind != "d1" or not seq.isdigit() or len(seq) > 19:
        raise ApiError(400, "bad_cursor", "this cursor is not one markco gave out")
    return int(seq)


__all__ = ["events_blueprint"]
