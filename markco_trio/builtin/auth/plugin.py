"""The hooks of the built-in `auth` plugin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ...context import PluginContext
from ...hookspecs import CliCommand, ConfigSection, ProviderSpec, hookimpl
from ...roles import ServiceSpec
from .authority import SessionAuthority
from .commands import auth_commands
from .options import AuthOptions
from .services import auth_services
from .state import AuthState, state_for
from .web.admin import admin_blueprint
from .web.api import api_blueprint
from .web.editor_auth import editor_auth_blueprint
from .web.invite_pages import invite_blueprint
from .web.login import login_blueprint


@hookimpl
def markco_config_sections() -> list[ConfigSection]:
    """Declare `[auth]`."""
    return [ConfigSection("auth", AuthOptions,
                          "sessions, console login links, sign-up and administrators")]


@asynccontextmanager
async def _builtin_sessions(ctx: PluginContext) -> AsyncIterator[SessionAuthority]:
    yield state_for(ctx).authority


@hookimpl
def markco_session_authorities() -> list[ProviderSpec]:
    """`builtin`: sessions and API tokens in storage, cached in memory (`authority.py`)."""
    return [ProviderSpec("builtin", lambda options, ctx: _builtin_sessions(ctx),
                         description="sessions, API tokens and OAuth logins in storage")]


def _own(ctx: PluginContext) -> AuthState | None:
    """The plugin's state, or None when another plugin's session authority was chosen (its
    pages and services then come from that plugin)."""
    if ctx.sessions is not None and not isinstance(ctx.sessions, SessionAuthority):
        return None
    return state_for(ctx)


@hookimpl
def markco_web_routes(ctx: PluginContext) -> list[Any]:
    """Login, logout, dashboard, invites and the auth API; authenticates every request."""
    state = _own(ctx)
    if state is None:
        return []
    return [login_blueprint(state), invite_blueprint(state), api_blueprint(state),
            editor_auth_blueprint(state), admin_blueprint(state)]


@hookimpl
def markco_services(ctx: PluginContext) -> list[ServiceSpec]:
    """Revocation polling, batched session renewal, purging, the console login link."""
    state = _own(ctx)
    return auth_services(state) if state is not None else []


@hookimpl
def markco_cli_commands() -> list[CliCommand]:
    """`login-link`, `tokens`, `sessions`, `admins`."""
    return auth_commands()
