"""`AuthState`: what the auth plugin's routes and services share inside one daemon.

Built once per daemon, the first time a hook asks (`state_for(ctx)`), after storage and the
OAuth providers have been entered. Its `SessionAuthority` is the auth plugin's `builtin`
provider of the session authority role (`ctx.sessions`), the typed contract the front door
uses (see `authority.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from weakref import WeakKeyDictionary

from ...context import PluginContext
from ...roles import OAuthProvider
from .accounts import Accounts
from .authority import SessionAuthority
from .invites import Invites
from .options import AuthOptions
from .origin import allowed_origins
from .pending import PendingLogins
from .ratelimit import ClientAddress, TokenBuckets

# The daemon's state per context (a PluginContext hashes by identity).
_STATES: WeakKeyDictionary[PluginContext, AuthState] = WeakKeyDictionary()


class AuthState:
    """The auth plugin inside one daemon: options, the session authority, logins in flight,
    accounts and invites."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.options: AuthOptions = ctx.config.section("auth")
        self.storage = ctx.require_storage()
        self.public_url = ctx.config.server.public_url.rstrip("/")
        self.secure = self.public_url.startswith("https://")
        self.allowed_origins = allowed_origins(self.public_url, self.options.trusted_origins)
        self.authority = SessionAuthority(self.storage, ctx.clock, self.options,
                                          secure=self.secure,
                                          allowed_origins=self.allowed_origins)
        self.pending = PendingLogins(ctx.clock, self.options.pending_login_minutes * 60)
        self.accounts = Accounts(self.storage, ctx.clock, self.options)
        self.invites = Invites(self.storage, ctx.clock, self.options, ctx.authorize,
                               ctx.events)
        self.login_attempts = TokenBuckets(per_minute=self.options.login_attempts_per_minute,
                                           burst=self.options.login_attempts_burst,
                                           now=ctx.clock.now)
        self.client_address = ClientAddress(ctx.config.server.trusted_proxies)
        # The login-in-flight cookie: Lax so the provider's top-level redirect carries it.
        self.pending_cookie = ("__Host-" if self.secure else "") + "markco_login"

    @property
    def providers(self) -> Mapping[str, OAuthProvider]:
        """The configured OAuth providers by name."""
        return self.ctx.oauth

    def provider_buttons(self) -> list[tuple[str, str]]:
        """(name, display name) of each provider, for the pages."""
        return [(name, p.display_name) for name, p in self.providers.items()]

    def redirect_uri(self, provider: str) -> str:
        """The callback URL registered at the provider."""
        return f"{self.public_url}/auth/callback/{provider}"

    def url(self, path: str) -> str:
        """An absolute URL under the public URL (redirects never trust the Host header)."""
        return self.public_url + path

    @property
    def login_link_enabled(self) -> bool:
        """Whether the daemon prints a console login link at start."""
        mode = self.options.login_link
        return mode == "always" or (mode == "auto" and not self.providers)

    async def publish(self, kind: str, *, user_id: str | None,
                      data: Mapping[str, Any] | None = None) -> None:
        """Record an event (`auth.login`, `token.created`...) when the bus is running."""
        if self.ctx.events is not None:
            await self.ctx.events.publish(kind, user_id=user_id, data=data or {})


def state_for(ctx: PluginContext) -> AuthState:
    """The daemon's `AuthState`, created on first use (the `builtin` session authority
    provider enters its authority; the plugin's routes and services share it)."""
    state = _STATES.get(ctx)
    if state is None:
        state = AuthState(ctx)
        _STATES[ctx] = state
    return state
