"""Invites to a project: create, look up, revoke, accept (DESIGN §5.3).

An invite is made by the OWNER of a project (the original let anyone mint any invite), for one
of their projects, with a role, an expiry and a use limit. Its link is a capability: whoever
holds it may accept it, once logged in. Accepting records exactly the invite's role as a grant
(replacing an earlier grant on the same project), atomically with counting the use, so a
single-use invite cannot be accepted twice. Expired, exhausted and revoked invites are refused
with a message saying which.

- `editor`: a full collaborator in the owner's editor (`/u/<owner>/`), where ANYONE LET IN CAN
  RUN CODE AS THE OWNER — the invite page says so before accepting.
- `viewer`: reads the project's rendered pages even when not public; never enters the editor.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ...api.conventions import iso_time
from ...authz import Action, Principal, Resource
from ...clock import Clock
from ...errors import MarkcoError
from ...events import EventBus
from ...records import Grant, GrantRole, Invite, User
from ...roles import Storage
from .options import AuthOptions
from .tokens import hash_token, new_token, well_formed

# A project is a directory under the owner's Projects/ and a path segment of /@user/<project>.
PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

InviteState = Literal["live", "expired", "exhausted", "revoked"]


class InviteProblem(MarkcoError):
    """An invite cannot be made, found or accepted; `code` and `http_status` for the API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code


@dataclass(frozen=True)
class InviteView:
    """What anyone holding the link may see: the project, the role and who invites — never
    the token or its hash."""

    invite: Invite
    owner: User
    state: InviteState

    def public_json(self) -> dict[str, object]:
        """The lookup answer of the API."""
        return {"project": self.invite.project, "role": self.invite.role.value,
                "owner": {"id": self.owner.id, "username": self.owner.username,
                          "name": self.owner.name},
                "expires_at": iso_time(self.invite.expires_at), "state": self.state,
                "uses_left": max(self.invite.max_uses - self.invite.uses, 0)}


def invite_state(invite: Invite, now: float) -> InviteState:
    """Why an invite can or cannot be accepted at `now`."""
    if invite.revoked_at is not None:
        return "revoked"
    if invite.expires_at is not None and invite.expires_at <= now:
        return "expired"
    if invite.uses >= invite.max_uses:
        return "exhausted"
    return "live"


_REFUSALS: dict[InviteState, tuple[int, str, str]] = {
    "revoked": (410, "invite_revoked", "This invite was revoked by the person who sent it. "
                "Ask them for a new one."),
    "expired": (410, "invite_expired", "This invite has expired. Ask the person who sent it "
                "for a new one."),
    "exhausted": (410, "invite_used_up", "This invite has already been used as many times as "
                  "it allows. Ask the person who sent it for a new one."),
}


class Invites:
    """The invite operations, shared by the HTML pages and the API."""

    def __init__(self, storage: Storage, clock: Clock, options: AuthOptions,
                 authorize: Callable[[Principal | None, str, Resource], bool],
                 events: EventBus | None) -> None:
        self._storage = storage
        self._clock = clock
        self._options = options
        self._authorize = authorize
        self._events = events

    async def create(self, owner: Principal, *, project: str, role: str,
                     days: float | None = None, max_uses: int | None = None,
                     ) -> tuple[str, Invite]:
        """Invite to `owner`'s `project`; return the token (shown once) and the record."""
        if not PROJECT_NAME.match(project):
            raise InviteProblem(400, "bad_project", "project: letters, digits, '.', '_' and "
                                "'-' only, starting with a letter or digit, at most 100")
        try:
            grant_role = GrantRole(role)
        except ValueError:
            raise InviteProblem(400, "bad_role", "role: must be 'editor' or 'viewer'") from None
        resource = Resource(kind="project", owner_id=owner.user_id, project=project)
        if not self._authorize(owner, Action.PROJECT_SHARE, resource):
            raise InviteProblem(403, "forbidden", "you may only invite people to your own "
                                "projects (and an API token needs the 'user' scope)")
        days = self._options.invite_days if days is None else days
        if not 0 < days <= self._options.invite_max_days:
            raise InviteProblem(400, "bad_expiry", f"expires_days: more than 0 and at most "
                                f"{self._options.invite_max_days:g}")
        uses = self._options.invite_max_uses if max_uses is None else max_uses
        if not 1 <= uses <= 1000:
            raise InviteProblem(400, "bad_max_uses", "max_uses: from 1 to 1000")
        token = new_token()
        now = self._clock.now()
        invite = await self._storage.create_invite(
            owner_id=owner.user_id, project=project, role=grant_role,
            token_hash=hash_token(token), expires_at=now + days * 86400, max_uses=uses, now=now)
        await self._publish("invite.created", owner.user_id,
                            {"invite_id": invite.id, "project": project, "role": role,
                             "max_uses": uses, "expires_at": invite.expires_at})
        return token, invite

    async def look_up(self, token: str) -> InviteView:
        """The invite of `token` with its owner and state; `InviteProblem` 404 if unknown."""
        invite = await self._storage.get_invite(hash_token(token)) if well_formed(token) \
            else None
        owner = await self._storage.get_user(invite.owner_id) if invite else None
        if invite is None or owner is None:
            raise InviteProblem(404, "invite_not_found", "This invite link is not valid. "
                                "Check that it was copied whole, or ask for a new one.")
        return InviteView(invite, owner, invite_state(invite, self._clock.now()))

    async def accept(self, token: str, user: Principal) -> tuple[Grant, InviteView]:
        """Accept the invite as `user`: record its role as a grant, count the use."""
        view = await self.look_up(token)
        if view.state != "live":
            raise InviteProblem(*_REFUSALS[view.state])
        if view.invite.owner_id == user.user_id:
            raise InviteProblem(409, "own_invite", "This is an invite to your own project; "
                                "send the link to the person you want to invite.")
        if not user.has_scope("user"):
            raise InviteProblem(403, "forbidden", "an API token needs the 'user' scope")
        grant = await self._storage.accept_invite(hash_token(token), user_id=user.user_id,
                                                  now=self._clock.now())
        if grant is None:  # it changed between the look-up and now (used up concurrently...)
            fresh = await self.look_up(token)
            state = fresh.state if fresh.state != "live" else "exhausted"
            raise InviteProblem(*_REFUSALS[state])
        await self._publish("invite.accepted", user.user_id,
                            {"invite_id": view.invite.id, "owner_id": view.invite.owner_id,
                             "project": grant.project, "role": grant.role.value,
                             "grant_id": grant.id})
        return grant, view

    async def revoke(self, owner: Principal, invite_id: str) -> bool:
        """Revoke one of `owner`'s invites (grants made from it stay: revoke those apart)."""
        if not owner.has_scope("user"):
            raise InviteProblem(403, "forbidden", "an API token needs the 'user' scope")
        done = await self._storage.revoke_invite(invite_id, owner_id=owner.user_id,
                                                 now=self._clock.now())
        if done:
            await self._publish("invite.revoked", owner.user_id, {"invite_id": invite_id})
        return done

    async def _publish(self, kind: str, user_id: str, data: dict[str, object]) -> None:
        if self._events is not None:
            await self._events.publish(kind, user_id=user_id, data=data)
