"""The hooks of the built-in `auth` plugin."""

from __future__ import annotations

from typing import Any

from ...context import PluginContext
from ...hookspecs import CliCommand, ConfigSection, hookimpl
from ...roles import ServiceSpec
from .commands import auth_commands
from .options import AuthOptions
from .services import auth_services
from .state import state_for
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


@hookimpl
def markco_web_routes(ctx: PluginContext) -> list[Any]:
    """Login, logout, dashboard, invites and the auth API; authenticates every request."""
    state = state_for(ctx)
    return [login_blueprint(state), invite_blueprint(state), api_blueprint(state),
            editor_auth_blueprint(state), admin_blueprint(state)]


@hookimpl
def markco_services(ctx: PluginContext) -> list[ServiceSpec]:
    """Revocation polling, batched session renewal, purging, the console login link."""
    return auth_services(state_for(ctx))


@hookimpl
def markco_cli_commands() -> list[CliCommand]:
    """`login-link`, `tokens`, `sessions`, `admins`."""
    return auth_commands()
