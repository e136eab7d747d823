"""Authenticating every request of the API app, and refusing cross-site state changes.

`before_app_request` and `before_app_websocket` handlers (so they cover every plugin's routes,
not only auth's):
1. `Authorization: Bearer <API token>`: the token's principal, or 401. Any other scheme is a
   401 too. Tokens are never read from the query string or a form.
2. Otherwise the session cookie: its principal, or anonymous (a stale cookie is removed from
   the browser on the way out).
3. A state-changing method not authenticated by an API token must carry an Origin (or
   Referer) of markco itself (`origin.py`), else 403 — even for anonymous requests, since a
   forged login form is a CSRF too. A WebSocket handshake counts as state-changing (browsers
   always send its Origin, and cross-site WebSockets carry cookies).
The result is recorded with `markco_trio.api.principal.set_principal`.
"""

from __future__ import annotations

from quart import Blueprint, Response, g, request, websocket
from werkzeug.datastructures import Headers

from ....api.conventions import error_response
from ....api.principal import current_principal, set_principal
from ....authz import Principal
from .. import pages
from ..origin import SAFE_METHODS
from ..state import AuthState


def wants_json() -> bool:
    """Whether the current request is an API call (JSON errors) rather than a page."""
    return request.path.startswith("/api/")


def session_token() -> str | None:
    """The raw session token of the current request, when its cookie is a live session."""
    token: str | None = getattr(g, "markco_session_token", None)
    return token


def session_principal() -> Principal | None:
    """The caller when authenticated by a browser session (not an API token)."""
    principal = current_principal()
    return principal if principal is not None and session_token() is not None else None


def forget_stale_cookie() -> None:
    """This response sets its own session cookie: do not also clear a stale one."""
    g.markco_stale_cookie = False


def install_request_auth(bp: Blueprint, state: AuthState) -> None:
    """Register the app-wide authentication handlers on `bp` (HTTP and WebSocket)."""
    authority = state.authority

    async def authenticate(headers: Headers, *, changes_state: bool,
                           json_errors: bool) -> Response | None:
        g.markco_session_token = None
        g.markco_stale_cookie = False
        set_principal(None)
        authorization = headers.get("Authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return error_response(401, "bad_authorization",
                                      "send an API token as 'Authorization: Bearer <token>'")
            by_token = await authority.principal_for_token(token.strip())
            if by_token is None:
                return error_response(401, "invalid_token",
                                      "the API token is unknown, revoked or expired; create "
                                      "a new one (markco tokens create, or POST /api/v1/tokens)")
            set_principal(by_token)
            return None  # a cross-site page cannot send this header: no Origin check needed
        cookie_token = authority.session_token(headers.get("Cookie"))
        if cookie_token is not None:
            principal = await authority.principal_for_session(cookie_token)
            if principal is None:
                g.markco_stale_cookie = True
            else:
                g.markco_session_token = cookie_token
                set_principal(principal)
        if changes_state and not authority.origin_allowed(headers.get("Origin"),
                                                          headers.get("Referer")):
            message = ("This request did not come from a markco page (its Origin header is "
                       "missing or from another site), so it was refused. Go back, reload the "
                       "page and try again.")
            if json_errors:
                return error_response(403, "bad_origin", message)
            return pages.message_page("Refused", message, status=403)
        return None

    @bp.before_app_request
    async def _authenticate_request() -> Response | None:
        return await authenticate(request.headers,
                                  changes_state=request.method not in SAFE_METHODS,
                                  json_errors=wants_json())

    @bp.before_app_websocket
    async def _authenticate_websocket() -> Response | None:
        # Browsers send Origin with every WebSocket handshake and SameSite does not protect
        # them: a WebSocket authenticated by cookie must come from a markco page.
        return await authenticate(websocket.headers, changes_state=True, json_errors=True)

    @bp.after_app_request
    async def _drop_stale_cookie(response: Response) -> Response:
        if getattr(g, "markco_stale_cookie", False):
            response.headers.add("Set-Cookie", authority.clear_cookie_header())
        return response
