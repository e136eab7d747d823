"""The built-in authorisation policy: owner, grant, admin (DESIGN §5.3).

- An owner may do everything to what is theirs.
- An `editor` grant on any project of an owner makes the holder a full collaborator in the
  owner's editor (`/u/<owner>/`), where anyone can run code as the owner; it also reads the
  project's pages.
- A `viewer` grant reads that one project's rendered pages and never enters the editor.
- Anyone reads a public project.
- An admin operates the deployment and manages users, but enters another user's editor or
  runtime only with an explicit, audited admin entry.
"""

from __future__ import annotations

from ..authz import Action, Principal, Resource
from ..hookspecs import hookimpl

_EDITOR_ACTIONS = frozenset({Action.EDITOR_ENTER, Action.RUNTIME_USE})
_ADMIN_ACTIONS = frozenset({Action.ADMIN, Action.USER_READ, Action.USER_MANAGE,
                            Action.RUNTIME_MANAGE, Action.EVENTS_READ, Action.PROJECT_READ})


@hookimpl
def markco_authorize(principal: Principal | None, action: str, resource: Resource) -> bool | None:
    """Allow what the owner/grant/admin rules allow; abstain otherwise (deny by default)."""
    if action == Action.PROJECT_READ and resource.kind == "project" and resource.public:
        return True
    if principal is None:
        return None
    if resource.owner_id is not None and principal.user_id == resource.owner_id:
        return True
    if resource.owner_id is not None:
        for grant in principal.grants:
            if grant.owner_id != resource.owner_id:
                continue
            if grant.role == "editor" and action in _EDITOR_ACTIONS:
                return True
            if (action == Action.PROJECT_READ and resource.project is not None
                    and grant.project == resource.project):
                return True
    if principal.is_admin:
        if action in _EDITOR_ACTIONS:
            return True if principal.admin_entry else None
        if action in _ADMIN_ACTIONS:
            return True
    return None
