"""`GET /editor-auth`: the main origin's half of the editor-origin handshake.

With `[server] editor_domain` set, a browser that opens `<id>.<editor_domain>` without that
origin's cookie is sent here (`?user=<id>&next=<path>`). With a live session whose principal may
enter `<id>`'s editor (the one authorisation decision: the owner, an editor grant, an admin's
audited entry), it gets a one-time code and goes back to the editor origin, which exchanges it
for its own cookie (`editor_origin.py`). Without a session: the login page. Without the right:
the same 404 as for a user who does not exist. Only top-level navigations are answered.
"""

from __future__ import annotations

import re

from quart import Blueprint, Response, request

from ....authz import Action, Resource
from .. import pages
from ..editor_origin import exchange_url, safe_next
from ..state import AuthState
from .login import redirect
from .next_path import login_url
from .request_auth import session_token

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def editor_auth_blueprint(state: AuthState) -> Blueprint:
    """`GET /editor-auth` (404 when editors share the main origin)."""
    bp = Blueprint("markco_auth_editor_origin", __name__)
    authority = state.authority
    domain = state.ctx.config.server.editor_domain

    @bp.get("/editor-auth")
    async def editor_auth() -> Response:
        if not domain:
            return pages.message_page("Not here", "Editors are served on this origin.",
                                      status=404, link=("/dashboard", "Your dashboard"))
        dest = request.headers.get("Sec-Fetch-Dest")
        if dest is not None and dest.lower() != "document":
            return pages.message_page("Refused", "Open your editor from the address bar or "
                                      "a link.", status=403, link=None)
        owner = request.args.get("user", "")
        if not _LABEL.match(owner):
            return pages.message_page("Bad link", "This link names no editor.", status=400,
                                      link=("/dashboard", "Your dashboard"))
        next_path = safe_next(request.args.get("next", f"/u/{owner}/"))
        if next_path is None:
            return pages.message_page(
                "Bad link", "This link would lead away from the editor.", status=400,
                link=("/dashboard", "Your dashboard"))
        token = session_token()
        principal = (await authority.principal_for_session(token, entering=owner)
                     if token is not None else None)
        if token is None or principal is None:  # log in, then come back through here
            return redirect(state.url(login_url(request.full_path)))
        if not state.ctx.authorize(principal, Action.EDITOR_ENTER,
                                   Resource("editor", owner_id=owner)):
            return pages.message_page("No editor here", "There is no editor at this address "
                                      "that you may open.", status=404,
                                      link=("/dashboard", "Your dashboard"))
        code = authority.mint_editor_code(token, owner)
        return redirect(exchange_url(state.public_url, domain, owner, code, next_path),
                        carries_secret=True)

    return bp
