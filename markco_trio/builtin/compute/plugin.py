"""The hooks of the built-in `compute` plugin."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ...context import PluginContext
from ...errors import MarkcoError
from ...hookspecs import CliCommand, ConfigSection, ProviderSpec, hookimpl
from ...records import Event
from ...roles import EventObserver, ServiceSpec
from .api import compute_blueprint
from .commands import compute_commands
from .hosts_api import hosts_blueprint
from .hosts_commands import hosts_commands
from .options import WorkloadsOptions
from .plans import plans_blueprint, plans_commands
from .service import ComputeService, service_for

log = logging.getLogger("markco.compute")

PLAN_EVENTS = frozenset({"user.updated", "user.plan_changed"})


@hookimpl
def markco_config_sections() -> list[ConfigSection]:
    """Declare `[workloads]`."""
    return [ConfigSection("workloads", WorkloadsOptions,
                          "users' editors and runtimes: commands, plans, restarts, the front")]


@asynccontextmanager
async def _builtin_compute(ctx: PluginContext) -> AsyncIterator[ComputeService]:
    yield service_for(ctx)


@hookimpl
def markco_compute_controls() -> list[ProviderSpec]:
    """`builtin`: users' editors and runtimes on the `[compute] backend` (`service.py`)."""
    return [ProviderSpec("builtin", lambda options, ctx: _builtin_compute(ctx),
                         description="editors and runtimes on the chosen container backend")]


def _own(ctx: PluginContext) -> ComputeService | None:
    """The plugin's service, or None when another plugin's compute control was chosen (its
    routes and services then come from that plugin)."""
    if ctx.compute is not None and not isinstance(ctx.compute, ComputeService):
        return None
    return service_for(ctx)


@hookimpl
def markco_web_routes(ctx: PluginContext) -> list[Any]:
    """`/api/v1/runtimes`, `/api/v1/users/<id>/runtimes/...`, `/api/v1/users/<id>/progress`,
    `/api/v1/plans`, `PUT /api/v1/users/<id>/plan` and the admin page's plan form."""
    service = _own(ctx)
    if service is None:
        return []
    return [compute_blueprint(service), plans_blueprint(service), hosts_blueprint(service)]


@hookimpl
def markco_cli_commands() -> list[CliCommand]:
    """`markco runtimes sleep|wake USER`, `markco snapshots list|create|restore|delete`,
    `markco plans list|set`."""
    return [*compute_commands(), *plans_commands(), *hosts_commands()]


@hookimpl
def markco_services(ctx: PluginContext) -> list[ServiceSpec]:
    """The compute service: reconciliation (before `/readyz`), then the users' actors."""
    service = _own(ctx)
    return [ServiceSpec("compute", service.run)] if service is not None else []


@hookimpl
def markco_event_observers(ctx: PluginContext) -> list[EventObserver]:
    """Start a user's workloads in the background on `auth.login`; apply plan changes."""
    service = _own(ctx)
    if service is None:
        return []

    async def on_login(event: Event) -> None:
        if not service.options.start_on_login or ctx.backend is None or not event.user_id:
            return
        try:
            service.request_start(event.user_id, reason="login")
        except (MarkcoError, ValueError) as exc:
            log.warning("compute: cannot start the workloads of %s on login: %s",
                        event.user_id, exc)

    async def on_user_change(event: Event) -> None:
        if event.user_id and ctx.backend is not None:
            await service.apply_plan(event.user_id)

    return [EventObserver("compute-login", on_login, types=frozenset({"auth.login"})),
            EventObserver("compute-plans", on_user_change, types=PLAN_EVENTS)]
