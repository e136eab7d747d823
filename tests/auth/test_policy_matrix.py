"""The one authorisation decision, as a matrix: every principal × every action × every
resource, against the table of what is allowed (DESIGN §5.3). Everything not listed is denied.
"""

from __future__ import annotations

import pytest

from markco_trio.authz import Action, HeldGrant, Principal, Resource, authorize
from markco_trio.plugins import make_plugin_manager

OWNER = "u-owner"
ACTIONS = [Action.EDITOR_ENTER, Action.RUNTIME_USE, Action.RUNTIME_MANAGE, Action.PROJECT_READ,
           Action.PROJECT_SHARE, Action.USER_READ, Action.USER_MANAGE, Action.EVENTS_READ,
           Action.ADMIN]
RESOURCES = {
    "editor": Resource("editor", OWNER),
    "runtime": Resource("runtime", OWNER),
    "thesis (private, shared)": Resource("project", OWNER, "thesis"),
    "notes (private)": Resource("project", OWNER, "notes"),
    "blog (public)": Resource("project", OWNER, "blog", public=True),
    "user": Resource("user", OWNER),
    "events": Resource("events", OWNER),
    "deployment": Resource("deployment"),
}
OWNED = [name for name in RESOURCES if name != "deployment"]
ADMIN_ACTIONS = [Action.ADMIN, Action.USER_READ, Action.USER_MANAGE, Action.RUNTIME_MANAGE,
                 Action.EVENTS_READ, Action.PROJECT_READ]
USER_SCOPED = [a for a in ACTIONS if a not in (Action.EVENTS_READ, Action.ADMIN)]



def admin(**fields: object) -> Principal:
    return Principal("u-admin", "root", True, **fields)  # type: ignore[arg-type]


PRINCIPALS: dict[str, Principal | None] = {
    "anonymous": None,
    "stranger": Principal("u-stranger", "stranger"),
    "owner": Principal(OWNER, "owner"),
    "owner's token, scope user": Principal(OWNER, "owner", scopes=frozenset({"user"}),
                                           via="token"),
    "owner's token, scope events:read": Principal(OWNER, "owner",
                                                  scopes=frozenset({"events:read"}),
                                                  via="token"),
    "editor of thesis": Principal("u-ed", "ed", grants=frozenset(
        {HeldGrant(OWNER, "thesis", "editor")})),
    "viewer of thesis": Principal("u-vw", "vw", grants=frozenset(
        {HeldGrant(OWNER, "thesis", "viewer")})),
    "viewer of thesis, of someone else": Principal("u-vw2", "vw2", grants=frozenset(
        {HeldGrant("u-other", "thesis", "viewer")})),
    "admin": admin(),
    "admin with explicit entry": admin(admin_entry=True),
    "admin's token, scope user": admin(scopes=frozenset({"user"}), via="token"),
    "admin's token, scope admin": admin(scopes=frozenset({"admin"}), via="token"),
}

PUBLIC = {(Action.PROJECT_READ, "blog (public)")}
ADMIN_POWERS = {(a, r) for a in ADMIN_ACTIONS for r in RESOURCES}
ENTRY = {(a, r) for a in (Action.EDITOR_ENTER, Action.RUNTIME_USE) for r in ("editor", "runtime")}

ALLOWED: dict[str, set[tuple[str, str]]] = {
    "anonymous": PUBLIC,
    "stranger": PUBLIC,
    "owner": {(a, r) for a in ACTIONS for r in OWNED},
    "owner's token, scope user": {(a, r) for a in USER_SCOPED for r in OWNED},
    "owner's token, scope events:read": {(Action.EVENTS_READ, r) for r in OWNED},
    "editor of thesis": PUBLIC | ENTRY | {(Action.PROJECT_READ, "thesis (private, shared)")},
    "viewer of thesis": PUBLIC | {(Action.PROJECT_READ, "thesis (private, shared)")},
    "viewer of thesis, of someone else": PUBLIC,
    "admin": ADMIN_POWERS,
    "admin with explicit entry": ADMIN_POWERS | ENTRY,
    "admin's token, scope user": PUBLIC,
    "admin's token, scope admin": ADMIN_POWERS,
}


@pytest.fixture(scope="module")
def plugins() -> object:
    return make_plugin_manager(entry_points=False)


@pytest.mark.parametrize("who", list(PRINCIPALS))
def test_authorize_matrix(plugins: object, who: str) -> None:
    principal = PRINCIPALS[who]
    wrong = []
    for action in ACTIONS:
        for name, resource in RESOURCES.items():
            expected = (action, name) in ALLOWED[who]
            if authorize(plugins, principal, action, resource) != expected:  # type: ignore[arg-type]
                wrong.append(f"{'allowed' if not expected else 'denied'}: {action} on {name}")
    assert not wrong, f"{who}: " + "; ".join(wrong)


def test_the_matrix_covers_every_action() -> None:
    known = {v for k, v in vars(Action).items() if not k.startswith("_")}
    assert known == set(ACTIONS)
