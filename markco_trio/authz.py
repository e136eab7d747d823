"""The one authorisation decision: may principal P do action A on resource R?

Pure and synchronous (it runs for every proxied request): the principal carries the grants it
holds, cached with its session and refreshed when the revocation epoch moves. Plugins vote
through the `markco_authorize` hook; access needs at least one "allow" and no "deny" — deny by
default. The built-in policy (`markco_trio.builtin.policy`) implements owner / grant / admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pluggy


class Action:
    """The actions markco asks about. Plain strings, so plugins can add their own."""

    EDITOR_ENTER = "editor.enter"  # open /u/<owner>/ (runs code as the owner)
    RUNTIME_USE = "runtime.use"  # reach the owner's runtime front
    RUNTIME_MANAGE = "runtime.manage"  # start / stop / restart the owner's workloads
    PROJECT_READ = "project.read"  # read a project's rendered pages (publish)
    PROJECT_SHARE = "project.share"  # create / revoke invites for a project
    USER_READ = "user.read"  # see a user's profile, sessions, tokens
    USER_MANAGE = "user.manage"  # change a user: tokens, sessions, plan
    EVENTS_READ = "events.read"  # read the event log
    ADMIN = "admin"  # operate the deployment


# Which API-token scope an action needs. Sessions (scopes=None) are not limited by scope.
SCOPE_FOR_ACTION: dict[str, str] = {
    Action.EDITOR_ENTER: "user",
    Action.RUNTIME_USE: "user",
    Action.RUNTIME_MANAGE: "user",
    Action.PROJECT_READ: "user",
    Action.PROJECT_SHARE: "user",
    Action.USER_READ: "user",
    Action.USER_MANAGE: "user",
    Action.EVENTS_READ: "events:read",
    Action.ADMIN: "admin",
}

KNOWN_SCOPES = frozenset({"user", "admin", "events:read"})


@dataclass(frozen=True)
class HeldGrant:
    """A grant as the principal carries it: role `role` on `owner_id`'s `project`."""

    owner_id: str
    project: str
    role: str


@dataclass(frozen=True)
class Principal:
    """Who is asking. `scopes` is None for a browser session (the user's full rights) and the
    token's scopes for an API token. `admin_entry` is set only on a request where an admin
    explicitly asked to enter another user's editor (it is audited)."""

    user_id: str
    username: str
    is_admin: bool = False
    scopes: frozenset[str] | None = None
    grants: frozenset[HeldGrant] = field(default_factory=frozenset)
    admin_entry: bool = False
    via: str = "session"

    def has_scope(self, scope: str) -> bool:
        """True when unrestricted (a session) or the token carries `scope` (`admin` implies
        every scope)."""
        return self.scopes is None or scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True)
class Resource:
    """What is acted on: a kind (`editor`, `runtime`, `project`, `user`, `deployment`), whose it
    is, and for projects which one and whether it is public."""

    kind: str
    owner_id: str | None = None
    project: str | None = None
    public: bool = False


def authorize(pm: pluggy.PluginManager, principal: Principal | None, action: str,
              resource: Resource) -> bool:
    """Ask every `markco_authorize` implementation; allow only on at least one True and no
    False. A token missing the scope the action needs is refused before any vote."""
    if principal is not None:
        needed = SCOPE_FOR_ACTION.get(action)
        if needed is not None and not principal.has_scope(needed):
            return False
    votes = pm.hook.markco_authorize(principal=principal, action=action, resource=resource)
    return bool(votes) and all(v is not False for v in votes) and any(v is True for v in votes)
