"""Authenticating every request of the API app, and refusing cross-site state changes.

`before_app_request` and `before_app_websocket` handlers (so they cover every plugin's routes,
not only auth's):
1. `Authorization: Bearer <API token>`: the token's principal, or 401. Any other scheme is a
   401 too. Tokens are never read from the query string or a form.
2. Otherwise the session cookie: its principal, or anonymous (a stale cookie is removed from
   the browser on the way out).
3. A request not authenticated by an API token that an editor page (`/u/`) may have made —
   same-origin or same-site by Fetch Metadata and not a top-level navigation — is refused
   with 403 `editor_initiated` (`origin.editor_initiated`): markco's own pages run no script.
4. A state-changing method not authenticated by an API token must carry an Origin (or
   Referer) of markco itself (`origin.py`), else 403 — even for anonymous requests, since a
   forged login form is a CSRF too. A WebSocket handshake counts as state-changing (browsers
   always send its Origin, and cross-site WebSockets carry cookies).
5. A browser's form post with a session must carry the session's form token (`csrf`, which
   markco's pages put in every form: `tokens.form_token`), else 403: a page under `/u/` can
   fake its Referer, but cannot read the token.
The result is recorded with `markco_trio.api.principal.set_principal`. Every response but a
published page's also gets `X-Frame-Options: DENY` and `Cross-Origin-Opener-Policy:
same-origin` (unless it set its own), so an editor page can neither frame markco nor script a
window of it that it opened.
"""

from __future__ import annotations

import hmac

from quart import Blueprint, Response, g, request, websocket
from werkzeug.datastructures import Headers

from ....api.conventions import error_response
from ....api.principal import current_principal, set_principal
from ....authz import Principal
from .. import pages
from ..origin import SAFE_METHODS, UNGUARDED_PREFIX, editor_initiated, from_markco_page
from ..state import AuthState
from ..tokens import form_token

FORM_TOKEN_FIELD = "csrf"
_EDITOR_INITIATED = (
    "This request came from a page that runs script on this site — a page inside an editor "
    "(/u/...), which can show anyone's notebook output — so it was refused. Open markco's own "
    "pages directly (the dashboard, the admin page) and act from there.")
_BAD_FORM = ("This form is out of date or did not come from a markco page, so it was "
             "refused. Go back, reload the page and try again.")


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


def current_form_token() -> str | None:
    """The form token for the forms of the page being rendered (None without a session)."""
    token = session_token()
    return form_token(token) if token is not None else None


def forget_stale_cookie() -> None:
    """This response sets its own session cookie: do not also clear a stale one."""
    g.markco_stale_cookie = False


def install_request_auth(bp: Blueprint, state: AuthState) -> None:
    """Register the app-wide authentication handlers on `bp` (HTTP and WebSocket)."""
    authority = state.authority

    def refuse(code: str, message: str, *, json_errors: bool) -> Response:
        if json_errors:
            return error_response(403, code, message)
        return pages.message_page("Refused", message, status=403,
                                  link=("/dashboard", "Go to your dashboard"))

    async def authenticate(headers: Headers, path: str, *, routed: bool, changes_state: bool,
                           json_errors: bool) -> Response | None:
        g.markco_session_token = None
        g.markco_stale_cookie = False
        set_principal(None)
        authorization = headers.get("Authorization")
        # (An unrouted path is a 404 whoever asks: nothing there to protect.)
        if authorization is None and routed and editor_initiated(
                path, site=headers.get("Sec-Fetch-Site"), mode=headers.get("Sec-Fetch-Mode"),
                dest=headers.get("Sec-Fetch-Dest"), referer=headers.get("Referer")):
            return refuse("editor_initiated", _EDITOR_INITIATED, json_errors=json_errors)
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
            return refuse("bad_origin", message, json_errors=json_errors)
        return None

    async def form_token_ok() -> bool:
        """Whether a browser's form post with a session carries the session's form token."""
        token = session_token()
        if token is None or not from_markco_page(request.headers.get("Sec-Fetch-Site")):
            return True  # no session to act with, or not a browser (CSRF needs one)
        given = (await request.form).get(FORM_TOKEN_FIELD, "")
        return hmac.compare_digest(given.encode(), form_token(token).encode())

    @bp.before_app_request
    async def _authenticate_request() -> Response | None:
        changes_state = request.method not in SAFE_METHODS
        refused = await authenticate(request.headers, request.path,
                                     routed=request.url_rule is not None,
                                     changes_state=changes_state, json_errors=wants_json())
        if refused is None and changes_state and not await form_token_ok():
            refused = refuse("bad_form_token", _BAD_FORM, json_errors=wants_json())
        return refused

    @bp.before_app_websocket
    async def _authenticate_websocket() -> Response | None:
        # Browsers send Origin with every WebSocket handshake and SameSite does not protect
        # them: a WebSocket authenticated by cookie must come from a markco page.
        return await authenticate(websocket.headers, websocket.path,
                                  routed=websocket.url_rule is not None, changes_state=True,
                                  json_errors=True)

    @bp.after_app_request
    async def _drop_stale_cookie(response: Response) -> Response:
        if getattr(g, "markco_stale_cookie", False):
            response.headers.add("Set-Cookie", authority.clear_cookie_header())
        if not request.path.startswith(UNGUARDED_PREFIX):
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return response
