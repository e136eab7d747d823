"""The invite pages a recipient opens: `GET /invites/<token>` (what it is, what the role
means), `GET /invites/<token>/login/<provider>` (log in, then come back to it) and
`POST /invites/<token>/accept`.

An invite link is a capability to share, like the invite links of other services: it does
not authenticate anyone (accepting needs a logged-in user) and its pages are sent with
`Referrer-Policy: same-origin`, so the link does not leak to other sites (and the accept form
keeps its Origin).
"""

from __future__ import annotations

from quart import Blueprint, Response

from ....api.principal import current_principal
from .. import pages
from ..invites import InviteProblem
from ..state import AuthState
from .login import redirect, start_login
from .request_auth import current_form_token


def invite_blueprint(state: AuthState) -> Blueprint:
    """The invite pages."""
    bp = Blueprint("markco_auth_invites", __name__)

    def problem_page(exc: InviteProblem) -> Response:
        return pages.message_page("Invitation", str(exc), status=exc.http_status,
                                  link=("/dashboard", "Go to your dashboard"))

    @bp.get("/invites/<token>")
    async def show(token: str) -> Response:
        try:
            view = await state.invites.look_up(token)
        except InviteProblem as exc:
            return problem_page(exc)
        return pages.invite_page(
            project=view.invite.project, role=view.invite.role.value, owner=view.owner,
            expires_at=view.invite.expires_at, state=view.state, token=token,
            viewer=current_principal(), providers=state.provider_buttons(),
            form_token=current_form_token())

    @bp.get("/invites/<token>/login/<provider_name>")
    async def login_then_accept(token: str, provider_name: str) -> Response:
        try:
            view = await state.invites.look_up(token)
        except InviteProblem as exc:
            return problem_page(exc)
        if view.state != "live":
            return redirect(state.url(f"/invites/{token}"))
        return await start_login(state, provider_name, invite_token=token)

    @bp.post("/invites/<token>/accept")
    async def accept(token: str) -> Response:
        principal = current_principal()
        if principal is None:
            return redirect(state.url(f"/invites/{token}"))
        try:
            grant, view = await state.invites.accept(token, principal)
        except InviteProblem as exc:
            return problem_page(exc)
        state.authority.evict_user(principal.user_id)  # the new grant must be seen at once
        return pages.accepted_page(project=grant.project, role=grant.role.value,
                                   owner=view.owner)

    return bp
