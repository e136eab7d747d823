"""The built-in authorisation policy: owner, grant, admin (DESIGN §5.3).

- An owner may do everything to what is theirs.
- An `editor` grant on any project of an owner makes the holder a full collaborator in the
  owner's editor (`/u/<owner>/`), where anyone can run code as the owner; it also reads the
  granted project's pages.
- A `viewer` grant reads that one project's rendered pages and never enters the editor.
- Anyone reads a public project.
- An admin operates the deployment and manages users, but enters another user's editor or
  runtime only with an explicit, audited admin entry (a browser session that went through
  `POST /admin/enter/<user>`; the auth plugin sets `admin_entry` for that owner only).
  Through an API token, admin powers need the token's `admin` scope: a `user`-scoped token of
  an admin acts as that user, nothing more.

Scopes are checked by `markco_trio.authz.authorize` before any vote (a token without the scope
an action needs is refused whatever this policy says). This policy abstains where it has no
rule, so access stays denied unless some rule allows it.
"""

from __future__ import annotations

from ..authz import Action, Principal, Resource
from ..hookspecs import hookimpl

# What an editor grant (and an admin's explicit entry) opens: the owner's editor and runtime.
_EDITOR_ACTIONS = frozenset({Action.EDITOR_ENTER, Action.RUNTIME_USE})
_EDITOR_KINDS = frozenset({"editor", "runtime"})
# What an admin may do to other users' things without entering their editor.
_ADMIN_ACTIONS = frozenset({Action.ADMIN, Action.USER_READ, Action.USER_MANAGE,
                            Action.RUNTIME_MANAGE, Action.EVENTS_READ, Action.PROJECT_READ})


def _acts_as_admin(principal: Principal) -> bool:
    return principal.is_admin and (principal.scopes is None or "admin" in principal.scopes)


@hookimpl
def markco_authorize(principal: Principal | None, action: str, resource: Resource) -> bool | None:
    """Allow what the owner/grant/admin rules allow; abstain otherwise (deny by default)."""
    if action == Action.PROJECT_READ and resource.kind == "project" and resource.public:
        return True
    if principal is None:
        return None
    owner = resource.owner_id
    if owner is not None and principal.user_id == owner:
        return True
    enters = action in _EDITOR_ACTIONS and resource.kind in _EDITOR_KINDS
    if owner is not None:
        for grant in principal.grants:
            if grant.owner_id != owner:
                continue
            if grant.role == "editor" and enters:
                return True
            if (action == Action.PROJECT_READ and resource.kind == "project"
                    and resource.project is not None and grant.project == resource.project):
                return True
    if _acts_as_admin(principal):
        if enters:  # only by an explicit, audited entry, from a browser session
            return True if principal.admin_entry and principal.scopes is None else None
        if action in _ADMIN_ACTIONS:
            return True
    return None
