"""The built-in `auth` plugin: GitHub (or any OAuth provider) login, sessions, console login
links, API tokens and invites (DESIGN §5).

It is a plugin like any other — registered as `("auth", "markco_trio.builtin.auth")`, so a
deployment can disable it and provide its own. What other parts of markco use from it:

- `ctx.sessions`: the daemon's `SessionAuthority`, the `builtin` provider of the session
  authority role (`[sessions] provider`) (session cookie or API token →
  `Principal`, synchronous cache lookups for the front door; see `authority.py`).
- `markco_trio.api.principal.current_principal()` in any route of the API app: every request
  is authenticated before it reaches a blueprint.

Modules: `options` ([auth]), `tokens` (secrets and hashes), `authority` (the session cache),
`pending` (OAuth logins in flight), `accounts` (user upsert, usernames in `usernames`),
`invites`, `api_tokens`, `login_links`, `origin` (the CSRF check), `pages` (HTML),
`web/` (routes), `services` (supervised tasks), `commands` (CLI), `plugin` (the hooks).
"""

from __future__ import annotations

from .authority import LOOKUP_NEEDED, LookupNeeded, SessionAuthority
from .options import AuthOptions
from .plugin import (
    markco_cli_commands,
    markco_config_sections,
    markco_services,
    markco_session_authorities,
    markco_web_routes,
)

__all__ = [
    "LOOKUP_NEEDED",
    "AuthOptions",
    "LookupNeeded",
    "SessionAuthority",
    "markco_cli_commands",
    "markco_config_sections",
    "markco_services",
    "markco_session_authorities",
    "markco_web_routes",
]
