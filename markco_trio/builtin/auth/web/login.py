"""The browser's way in and out: login pages, the OAuth callback, the console login link,
logout and the dashboard.

Routes: `GET /`, `GET /login` (`?next=`: where to return, see `next_path.py`),
`GET /login/<provider>`, `GET /auth/callback/<provider>`, `GET /auth/link/<token>`,
`POST /logout`, `POST /logout-all`, `GET /dashboard`, `POST /dashboard/...` (the admin page:
`admin.py`).
"""

from __future__ import annotations

import hmac
import logging

from quart import Blueprint, Response, request

from ....api.principal import current_principal
from ....errors import MarkcoError
from ....records import Snapshot, User
from ....roles import ComputeSnapshots
from .. import pages
from ..accounts import AccountDisabled, SignupClosed, is_configured_admin
from ..admin_entries import admin_entries_of
from ..invites import InviteProblem, invite_state
from ..login_links import LINK_PATH
from ..pending import PendingLogin
from ..ratelimit import retry_after_header
from ..state import AuthState
from ..tokens import hash_token, well_formed
from .next_path import DEFAULT_NEXT, login_next
from .request_auth import (
    current_form_token,
    forget_stale_cookie,
    install_request_auth,
    session_principal,
    session_token,
)

log = logging.getLogger("markco.auth")

MAX_DASHBOARD_INVITES = 50  # live ones first, then the newest



def redirect(url: str, status: int = 303, *, carries_secret: bool = False) -> Response:
    """A redirect that is never cached. `carries_secret`: the URL it answers holds a secret
    (a login link, an OAuth code): `no-referrer`, so the next page does not see that URL. Any
    other redirect is `same-origin`, as markco's pages are: the page it leads to must keep its
    `Origin` on form posts (DESIGN §5.1)."""
    return Response("", status=status, headers={
        "Location": url, "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer" if carries_secret else "same-origin"})


def _error_status(exc: MarkcoError, default: int) -> int:
    status = getattr(exc, "http_status", default)
    return status if isinstance(status, int) and 400 <= status <= 599 else default


async def start_login(state: AuthState, provider_name: str, *,
                      invite_token: str | None = None,
                      next_path: str | None = None) -> Response:
    """Send the browser to `provider_name` with a fresh state and PKCE verifier, keeping them
    server side under a key held in a short-lived cookie of this browser (with `next_path`,
    where the browser returns once logged in: see `next_path.py`)."""
    provider = state.providers.get(provider_name)
    if provider is None:
        return pages.message_page("Unknown login provider",
                                  f"This markco has no login provider named {provider_name!r}.",
                                  status=404)
    auth_request = provider.authorization_request(state.redirect_uri(provider_name))
    key = state.pending.add(provider_name, auth_request, invite_token=invite_token,
                            next_path=login_next(next_path))
    response = redirect(auth_request.url, 302)
    response.headers.add("Set-Cookie", (
        f"{state.pending_cookie}={key}; Max-Age={int(state.pending.ttl_seconds)}; Path=/; "
        f"HttpOnly; SameSite=Lax" + ("; Secure" if state.secure else "")))
    return response


async def finish_login(state: AuthState, user: User, *, via: str, then: str) -> Response:
    """Open a session for `user`, set its cookie, and redirect to `then` (a local path). Any
    session the browser held before is ended (no session fixation, no orphan)."""
    authority = state.authority
    previous = session_token()
    token, session = await authority.open_session(
        user, user_agent=request.headers.get("User-Agent"))
    if previous is not None:
        await authority.close_session(previous)
    await state.publish("auth.login", user_id=user.id,
                        data={"via": via, "session_id": session.id,
                              "username": user.username})
    response = redirect(state.url(then), carries_secret=True)  # a login link or OAuth code
    forget_stale_cookie()
    response.headers.add("Set-Cookie", authority.set_cookie_header(token))
    return response


def login_blueprint(state: AuthState) -> Blueprint:
    """The login and session routes (and the app-wide request authentication)."""
    bp = Blueprint("markco_auth_login", __name__)
    install_request_auth(bp, state)
    storage, clock, authority = state.storage, state.ctx.clock, state.authority

    def clear_pending(response: Response) -> Response:
        response.headers.add("Set-Cookie", (
            f"{state.pending_cookie}=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax"
            + ("; Secure" if state.secure else "")))
        return response

    @bp.get("/")
    async def home() -> Response:
        return redirect(state.url("/dashboard" if current_principal() else "/login"))

    def asked_next() -> str | None:
        """The request's `next` when it is a safe path on this site (else None)."""
        return login_next(request.args.get("next"))

    @bp.get("/login")
    async def login() -> Response:
        next_path = asked_next()
        if session_principal() is not None:
            return redirect(state.url(next_path or DEFAULT_NEXT))
        return pages.login_page(state.provider_buttons(), next_path=next_path)

    @bp.get("/login/<provider_name>")
    async def login_with(provider_name: str) -> Response:
        return await start_login(state, provider_name, next_path=asked_next())

    def too_many_attempts() -> Response | None:
        """429 when this client has used up its login attempts (see `ratelimit.py`)."""
        client = state.client_address(request.headers.get("X-Forwarded-For"))
        wait = state.login_attempts.take_nowait(client)
        if not wait:
            return None
        retry = retry_after_header(wait)
        log.warning("login attempts from %s over the limit; refused for %s s", client, retry)
        response = pages.message_page(
            "Too many login attempts",
            f"This address has tried to log in too often. Wait {retry} seconds, then start "
            f"the login again.", status=429)
        response.headers["Retry-After"] = retry
        return response

    @bp.get("/auth/callback/<provider_name>")
    async def callback(provider_name: str) -> Response:
        refused = too_many_attempts()
        if refused is not None:
            return refused
        pending = state.pending.take(request.cookies.get(state.pending_cookie))
        return clear_pending(await _callback(provider_name, pending))

    async def _callback(provider_name: str, pending: PendingLogin | None) -> Response:
        if pending is None or pending.provider != provider_name:
            return pages.message_page(
                "Login not recognised",
                f"This login attempt is unknown: it was started in another browser, took "
                f"longer than {state.options.pending_login_minutes:g} minutes, or was "
                f"already completed. Start the login again.", status=400)
        given = request.args.get("state", "")
        if not given or not hmac.compare_digest(given.encode(), pending.request.state.encode()):
            return pages.message_page(
                "Login refused",
                "The answer from the login provider does not belong to this login attempt "
                "(its state is missing or wrong). Start the login again.", status=400)
        provider = state.providers.get(provider_name)
        if provider is None:
            return pages.message_page("Unknown login provider", "This provider is gone.",
                                      status=404)
        try:
            identity = await provider.complete(params=request.args.to_dict(),
                                               pending=pending.request,
                                               redirect_uri=state.redirect_uri(provider_name))
        except MarkcoError as exc:
            return pages.message_page("Login failed", str(exc), status=_error_status(exc, 400))
        except Exception:
            log.exception("OAuth provider %r failed unexpectedly", provider_name)
            return pages.message_page(
                "Login failed", f"The {provider.display_name} login failed unexpectedly; "
                f"the server's log has the details. Try again later.", status=502)
        invite_ok = False
        if pending.invite_token is not None:
            try:
                invite_ok = (await state.invites.look_up(pending.invite_token)).state == "live"
            except InviteProblem:
                invite_ok = False
        allow_signup = (not state.options.invite_only or invite_ok
                        or is_configured_admin(state.options, identity))
        try:
            user, created = await state.accounts.login(identity, allow_signup=allow_signup)
        except (SignupClosed, AccountDisabled) as exc:
            return pages.message_page("Login refused", str(exc), status=403)
        if created:
            await state.publish("user.created", user_id=user.id,
                                data={"username": user.username, "via": provider_name})
        then = (f"/invites/{pending.invite_token}" if pending.invite_token
                else pending.next_path or DEFAULT_NEXT)
        return await finish_login(state, user, via=provider_name, then=then)

    @bp.get(LINK_PATH + "<token>")
    async def login_link(token: str) -> Response:
        refused = too_many_attempts()
        if refused is not None:
            return refused
        link = (await storage.consume_login_link(hash_token(token), now=clock.now())
                if well_formed(token) else None)
        user = await storage.get_user(link.user_id) if link is not None else None
        if link is None or user is None or user.disabled:
            return pages.message_page(
                "This login link does not work",
                "It has been used already, has expired, or was not copied whole. Print a new "
                "one on the server: markco login-link USER --config FILE", status=410)
        return await finish_login(state, user, via="login-link",
                                  then=asked_next() or DEFAULT_NEXT)

    @bp.post("/logout")
    async def logout() -> Response:
        token = session_token()
        principal = current_principal()
        if token is not None and await authority.close_session(token):
            await state.publish("auth.logout", user_id=principal.user_id if principal else None,
                                data={"scope": "this session"})
        response = redirect(state.url("/login"))
        forget_stale_cookie()
        response.headers.add("Set-Cookie", authority.clear_cookie_header())
        return response

    @bp.post("/logout-all")
    async def logout_all() -> Response:
        principal = session_principal()
        response = redirect(state.url("/login"))
        if principal is not None:
            count = await authority.close_user_sessions(principal.user_id)
            await state.publish("auth.logout", user_id=principal.user_id,
                                data={"scope": "everywhere"})
            await state.publish("auth.session_revoked", user_id=principal.user_id,
                                data={"count": count, "by": principal.user_id,
                                      "reason": "logout-all"})
        forget_stale_cookie()
        response.headers.add("Set-Cookie", authority.clear_cookie_header())
        return response

    @bp.get("/dashboard")
    async def dashboard() -> Response:
        principal = session_principal()
        if principal is None:
            return redirect(state.url("/login"))
        user = await storage.get_user(principal.user_id)
        if user is None:
            return redirect(state.url("/login"))
        sessions = await storage.list_sessions(user.id, now=clock.now())
        token = session_token()
        current = hash_token(token) if token else None
        held = await storage.list_grants(user_id=user.id)
        owners = {}
        for owner_id in {g.owner_id for g in held}:
            owner = await storage.get_user(owner_id)
            if owner is not None:
                owners[owner_id] = owner
        compute = state.ctx.compute
        workspace = compute.state_nowait(user.id) if compute is not None else None
        snapshots: list[Snapshot] = (await compute.list_snapshots(user.id)
                     if isinstance(compute, ComputeSnapshots) else [])
        publisher = state.ctx.publisher  # None: the publish plugin is off
        projects = await publisher.projects_of(user) if publisher is not None else None
        now = clock.now()
        invites = [(i, invite_state(i, now)) for i in await storage.list_invites(user.id)]
        invites.sort(key=lambda pair: (pair[1] != "live", -pair[0].created_at))
        return pages.dashboard_page(
            user, principal, sessions=sessions,
            current_session_id=next((s.id for s in sessions if s.token_hash == current), None),
            identities=await storage.list_identities(user.id), held=held, owners=owners,
            workspace=workspace, admin_entries=await admin_entries_of(storage, user.id),
            form_token=current_form_token(), snapshots=snapshots, projects=projects,
            user_page=bool(getattr(publisher, "user_pages", False)),
            invites=invites[:MAX_DASHBOARD_INVITES])

    @bp.post("/dashboard/invites/<invite_id>/revoke")
    async def revoke_invite(invite_id: str) -> Response:
        """Revoke one of one's own invites (the grants made from it stay)."""
        principal = session_principal()
        if principal is None:
            return redirect(state.url("/login"))
        try:
            done = await state.invites.revoke(principal, invite_id)
        except InviteProblem as exc:
            return pages.message_page("Invitation", str(exc), status=exc.http_status,
                                      link=("/dashboard", "Back to your dashboard"))
        if not done:
            return pages.message_page(
                "No such invite", "You have no live invite with this id (it may have been "
                "revoked already).", status=404, link=("/dashboard", "Back to your dashboard"))
        return redirect(state.url("/dashboard"))

    @bp.post("/dashboard/workspace/<action>")
    async def workspace_action(action: str) -> Response:
        """Start, stop or restart one's own editor and runtime from the dashboard (the same
        operations as the API, for a page without JavaScript)."""
        principal = session_principal()
        if principal is None:
            return redirect(state.url("/login"))
        compute = state.ctx.compute
        if action not in ("start", "stop", "restart", "sleep", "wake") or compute is None:
            return pages.message_page("Not available", "This markco runs no workspaces.",
                                      status=404, link=("/dashboard", "Back to your dashboard"))
        compute.request(principal.user_id, action, reason="dashboard")
        return redirect(state.url("/dashboard"))

    @bp.post("/dashboard/workspace/snapshots")
    @bp.post("/dashboard/workspace/snapshots/<snapshot>/<action>")
    async def snapshot_action(snapshot: str | None = None,
                              action: str = "create") -> Response:
        """Take, restore or delete a snapshot of one's own runtime from the dashboard; waits
        for the operation and shows its error, if any."""
        principal = session_principal()
        if principal is None:
            return redirect(state.url("/login"))
        compute = state.ctx.compute
        if not isinstance(compute, ComputeSnapshots) or \
                action not in ("create", "restore", "delete"):
            return pages.message_page("Not available", "This markco runs no workspaces.",
                                      status=404, link=("/dashboard", "Back to your dashboard"))
        uid = principal.user_id
        try:
            if action == "create":
                name = str((await request.form).get("name", "")).strip()
                await compute.create_snapshot(uid, name, reason="dashboard")
            elif action == "restore":
                await compute.restore_snapshot(uid, str(snapshot), reason="dashboard")
            else:
                await compute.delete_snapshot(uid, str(snapshot), reason="dashboard")
        except MarkcoError as exc:
            return pages.message_page("That did not work", str(exc), status=409,
                                      link=("/dashboard", "Back to your dashboard"))
        return redirect(state.url("/dashboard"))

    return bp
