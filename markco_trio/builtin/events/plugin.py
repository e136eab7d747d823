"""The hooks of the built-in `events` plugin."""

from __future__ import annotations

from typing import Any

from ...context import PluginContext
from ...hookspecs import CliCommand, ConfigSection, hookimpl
from ...roles import ServiceSpec
from .api import events_blueprint
from .commands import events_commands
from .delivery import WebhookDispatcher
from .options import EventsOptions, WebhooksOptions


@hookimpl
def markco_config_sections() -> list[ConfigSection]:
    """Declare `[events]` (the live stream) and `[webhooks]`."""
    return [ConfigSection("events", EventsOptions, "the live event stream's limits"),
            ConfigSection("webhooks", WebhooksOptions,
                          "signed HTTP deliveries of events to configured URLs")]


@hookimpl
def markco_web_routes(ctx: PluginContext) -> list[Any]:
    """`/api/v1/events`, `/api/v1/events/stream`, `/api/v1/webhooks[/deliveries]`."""
    return [events_blueprint(ctx, ctx.config.section("events"),
                             ctx.config.section("webhooks"))]


@hookimpl
def markco_services(ctx: PluginContext) -> list[ServiceSpec]:
    """The webhook dispatcher (not critical: `/readyz` does not wait for receivers)."""
    dispatcher = WebhookDispatcher(ctx, ctx.config.section("webhooks"))
    return [ServiceSpec("webhooks", dispatcher.run, critical=False)]


@hookimpl
def markco_cli_commands() -> list[CliCommand]:
    """`markco webhooks list | deliveries`."""
    return events_commands()
