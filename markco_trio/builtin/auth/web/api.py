"""The auth API under `/api/v1` (JSON, conventions of `markco_trio.api.conventions`).

| route | needs | does |
|---|---|---|
| `GET /me` | `user` | who you are, how you are authenticated, your grants |
| `GET /tokens`, `POST /tokens`, `DELETE /tokens/<id>` | `user` | your API tokens |
| `GET /sessions`, `DELETE /sessions/<id>`, `DELETE /sessions` | `user` | your sessions |
| `GET /invites`, `POST /invites`, `DELETE /invites/<id>` | `user` | invites you sent |
| `POST /invites/lookup` | nothing | what an invite token is for (token in the body) |
| `POST /invites/accept` | `user` | accept an invite (token in the body) |
| `GET /grants`, `DELETE /grants/<id>` | `user` | grants you hold and gave; revoke one you gave |
| `GET /admin-entries` | `user` | administrators' entries into your editor, newest first |
| `GET /users` | `admin` | every user, cursor-paged |

Secrets (invite tokens) travel in request bodies, never in URLs.
"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, jsonify, request

from ....api.conventions import ApiError, error_response, page_json, page_params, to_json
from ....api.principal import current_principal
from ....authz import SCOPE_FOR_ACTION, Action, Principal, Resource
from ....records import Invite, User
from ..admin_entries import admin_entries_of
from ..api_tokens import TokenProblem, create_api_token
from ..invites import InviteProblem, invite_state
from ..state import AuthState
from ..tokens import hash_token
from .request_auth import session_token

_SECRET_FIELDS = ("token_hash",)


def _json_created(data: dict[str, Any]) -> Response:
    response = jsonify(data)
    response.status_code = 201
    return response


async def _body() -> dict[str, Any]:
    data = await request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "bad_body", "send a JSON object (Content-Type: application/json)")
    return data


def _user_json(user: User) -> Any:
    return to_json(user)


def api_blueprint(state: AuthState) -> Blueprint:
    """The `/api/v1` auth routes."""
    bp = Blueprint("markco_auth_api", __name__, url_prefix="/api/v1")
    storage, clock, authority = state.storage, state.ctx.clock, state.authority

    def caller(action: str = Action.USER_READ) -> Principal:
        principal = current_principal()
        if principal is None:
            raise ApiError(401, "unauthenticated",
                           "log in, or send 'Authorization: Bearer <API token>'")
        resource = (Resource("deployment") if action == Action.ADMIN
                    else Resource("user", owner_id=principal.user_id))
        if not state.ctx.authorize(principal, action, resource):
            scope = SCOPE_FOR_ACTION.get(action, action)
            raise ApiError(403, "forbidden", f"this needs the '{scope}' scope"
                           + (" and an administrator" if action == Action.ADMIN else ""))
        return principal

    async def me_user(principal: Principal) -> User:
        user = await storage.get_user(principal.user_id)
        if user is None:
            raise ApiError(401, "unauthenticated", "your account no longer exists")
        return user

    def invite_json(invite: Invite) -> Any:
        data = to_json(invite, omit=_SECRET_FIELDS)
        data["state"] = invite_state(invite, clock.now())
        return data

    @bp.errorhandler(InviteProblem)
    async def _invite_problem(exc: InviteProblem) -> Response:
        return error_response(exc.http_status, exc.code, str(exc))

    @bp.errorhandler(TokenProblem)
    async def _token_problem(exc: TokenProblem) -> Response:
        return error_response(exc.http_status, "bad_token_request", str(exc))

    # ------------------------------------------------------------------ me

    @bp.get("/me")
    async def me() -> Any:
        principal = caller()
        user = await me_user(principal)
        return {"user": _user_json(user), "via": principal.via,
                "scopes": sorted(principal.scopes) if principal.scopes is not None else None,
                "grants": [{"owner_id": g.owner_id, "project": g.project, "role": g.role}
                           for g in sorted(principal.grants,
                                           key=lambda g: (g.owner_id, g.project))]}

    # ------------------------------------------------------------------ tokens

    @bp.get("/tokens")
    async def list_tokens() -> Any:
        principal = caller()
        tokens = await storage.list_api_tokens(principal.user_id)
        return {"items": [to_json(t, omit=_SECRET_FIELDS) for t in tokens],
                "next_cursor": None}

    @bp.post("/tokens")
    async def create_token() -> Response:
        principal = caller(Action.USER_MANAGE)
        body = await _body()
        scopes = body.get("scopes", ["user"])
        days = body.get("expires_days")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ApiError(400, "bad_scopes", "scopes: a list of strings")
        if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))):
            raise ApiError(400, "bad_expiry", "expires_days: a number of days, or null")
        name = body.get("name")
        if not isinstance(name, str):
            raise ApiError(400, "bad_name", "name: a string to recognise the token by")
        token, record = await create_api_token(
            storage, clock, await me_user(principal), name=name, scopes=scopes,
            expires_days=days, creator_scopes=principal.scopes)
        await state.publish("token.created", user_id=principal.user_id,
                            data={"token_id": record.id, "name": record.name,
                                  "scopes": list(record.scopes), "via": principal.via})
        return _json_created({"token": token, **to_json(record, omit=_SECRET_FIELDS)})

    @bp.delete("/tokens/<token_id>")
    async def revoke_token(token_id: str) -> Any:
        principal = caller(Action.USER_MANAGE)
        tokens = {t.id: t for t in await storage.list_api_tokens(principal.user_id)}
        record = tokens.get(token_id)
        if record is None:
            raise ApiError(404, "token_not_found", "you have no API token with this id")
        revoked = await storage.revoke_api_token(token_id, now=clock.now())
        authority.evict_token_hash(record.token_hash)
        if revoked:
            await state.publish("token.revoked", user_id=principal.user_id,
                                data={"token_id": token_id, "via": principal.via})
        return {"revoked": revoked}

    # ------------------------------------------------------------------ sessions

    @bp.get("/sessions")
    async def list_sessions() -> Any:
        principal = caller()
        token = session_token()
        current = hash_token(token) if token else None
        sessions = await storage.list_sessions(principal.user_id, now=clock.now())
        return {"items": [to_json(s, omit=_SECRET_FIELDS) | {"current": s.token_hash == current}
                          for s in sessions], "next_cursor": None}

    @bp.delete("/sessions/<session_id>")
    async def revoke_session(session_id: str) -> Any:
        principal = caller(Action.USER_MANAGE)
        sessions = await storage.list_sessions(principal.user_id, now=clock.now())
        session = next((s for s in sessions if s.id == session_id), None)
        if session is None:
            raise ApiError(404, "session_not_found", "you have no live session with this id")
        revoked = await authority.close_session_record(session)
        if revoked:
            await state.publish("auth.session_revoked", user_id=principal.user_id,
                                data={"count": 1, "session_id": session_id,
                                      "by": principal.user_id, "reason": "api"})
        return {"revoked": revoked}

    @bp.delete("/sessions")
    async def revoke_all_sessions() -> Any:
        principal = caller(Action.USER_MANAGE)
        count = await authority.close_user_sessions(principal.user_id)
        await state.publish("auth.session_revoked", user_id=principal.user_id,
                            data={"count": count, "by": principal.user_id, "reason": "api"})
        return {"revoked": count}

    # ------------------------------------------------------------------ invites

    @bp.get("/invites")
    async def list_invites() -> Any:
        principal = caller()
        invites = await storage.list_invites(principal.user_id)
        return {"items": [invite_json(i) for i in invites], "next_cursor": None}

    @bp.post("/invites")
    async def create_invite() -> Response:
        principal = caller(Action.USER_MANAGE)
        body = await _body()
        project, role = body.get("project"), body.get("role", "editor")
        days, uses = body.get("expires_days"), body.get("max_uses")
        if not isinstance(project, str) or not isinstance(role, str):
            raise ApiError(400, "bad_invite", "project and role: strings")
        if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float))):
            raise ApiError(400, "bad_expiry", "expires_days: a number of days")
        if uses is not None and (isinstance(uses, bool) or not isinstance(uses, int)):
            raise ApiError(400, "bad_max_uses", "max_uses: an integer")
        token, invite = await state.invites.create(principal, project=project, role=role,
                                                   days=days, max_uses=uses)
        return _json_created({"token": token, "url": state.url(f"/invites/{token}"),
                              **invite_json(invite)})

    @bp.post("/invites/lookup")
    async def look_up_invite() -> Any:
        token = (await _body()).get("token")
        if not isinstance(token, str):
            raise ApiError(400, "bad_token", "token: the invite's token")
        return (await state.invites.look_up(token)).public_json()

    @bp.post("/invites/accept")
    async def accept_invite() -> Any:
        principal = caller()
        token = (await _body()).get("token")
        if not isinstance(token, str):
            raise ApiError(400, "bad_token", "token: the invite's token")
        grant, _ = await state.invites.accept(token, principal)
        authority.evict_user(principal.user_id)
        return to_json(grant)

    @bp.delete("/invites/<invite_id>")
    async def revoke_invite(invite_id: str) -> Any:
        principal = caller(Action.USER_MANAGE)
        if not await state.invites.revoke(principal, invite_id):
            raise ApiError(404, "invite_not_found", "you have no live invite with this id")
        return {"revoked": True}

    # ------------------------------------------------------------------ grants

    @bp.get("/grants")
    async def list_grants() -> Any:
        principal = caller()
        held = await storage.list_grants(user_id=principal.user_id)
        given = await storage.list_grants(owner_id=principal.user_id)
        return {"held": to_json(held), "given": to_json(given)}

    @bp.delete("/grants/<grant_id>")
    async def revoke_grant(grant_id: str) -> Any:
        principal = caller(Action.USER_MANAGE)
        given = {g.id: g for g in await storage.list_grants(owner_id=principal.user_id)}
        grant = given.get(grant_id)
        if grant is None or not await storage.revoke_grant(grant_id, owner_id=principal.user_id,
                                                           now=clock.now()):
            raise ApiError(404, "grant_not_found", "you gave no live grant with this id")
        authority.evict_user(grant.user_id)
        await state.publish("grant.revoked", user_id=principal.user_id,
                            data={"grant_id": grant_id, "user_id": grant.user_id,
                                  "project": grant.project, "role": grant.role.value})
        return {"revoked": True}

    # ------------------------------------------------------------------ admin entries

    @bp.get("/admin-entries")
    async def list_admin_entries() -> Any:
        principal = caller()
        entries = await admin_entries_of(storage, principal.user_id)
        return {"items": to_json(entries), "next_cursor": None}

    # ------------------------------------------------------------------ users (admin)

    @bp.get("/users")
    async def list_users() -> Any:
        caller(Action.ADMIN)
        cursor, limit = page_params(request.args)
        try:
            page = await storage.list_users(cursor=cursor, limit=limit)
        except ValueError as exc:
            raise ApiError(400, "bad_cursor", str(exc)) from None
        return page_json(page, _user_json)

    @bp.get("/users/<user_id>")
    async def get_user(user_id: str) -> Any:
        principal = caller()
        if not state.ctx.authorize(principal, Action.USER_READ, Resource("user", user_id)):
            raise ApiError(404, "user_not_found", "no such user")
        user = await storage.get_user(user_id)
        if user is None:
            raise ApiError(404, "user_not_found", "no such user")
        return _user_json(user)

    return bp
