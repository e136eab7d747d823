"""The built-in `monitor` plugin: samples every running runtime and raises the original's
events — `pre-provision`, `migrate`, `urgent-migrate`, `critical` (memory pressure),
`idle-sleep`, `idle-wake` (idleness by intent), `gpu-hint`, `big-ram-hint` (executed code) —
on the daemon's event bus, and hands them to compute's elasticity policy (DESIGN §1, §3.3, §4).

Registered as `("monitor", "markco_trio.builtin.monitor")`; configured by `[monitor]`
(`options.py`). Modules: `pressure` (thresholds, hysteresis, cooldown; CPU from deltas),
`idleness` (idle by intent), `hints` (imports and calls of executed code), `service` (the
poller), `api` (`GET /api/v1/monitor`), `options`.
"""

from __future__ import annotations

import logging
from typing import Any

from ...context import PluginContext
from ...hookspecs import ConfigSection, hookimpl
from ...roles import ServiceSpec
from .options import MONITOR_EVENTS, MonitorOptions
from .service import Monitor, MonitorStatistics

__all__ = ["MONITOR_EVENTS", "Monitor", "MonitorOptions", "MonitorStatistics",
           "markco_config_sections", "markco_services", "markco_web_routes", "monitor_for"]

log = logging.getLogger("markco.monitor")



@hookimpl
def markco_config_sections() -> list[ConfigSection]:
    """Declare `[monitor]`."""
    return [ConfigSection("monitor", MonitorOptions,
                          "sampling of running runtimes: memory pressure, idleness, hints")]


def monitor_for(ctx: PluginContext) -> Monitor | None:
    """The daemon's `Monitor` (set as `ctx.monitor`), None without the built-in compute."""
    existing = ctx.monitor
    if existing is not None:
        return existing
    from ..compute.elasticity import ElasticityPolicy, PolicySettings
    from ..compute.service import ComputeService, service_for

    compute: object = ctx.compute
    if compute is None and ctx.plugins.get_plugin("compute") is not None:
        compute = service_for(ctx)  # hooks run in any order: compute may not have asked yet
    if not isinstance(compute, ComputeService):
        return None
    options: MonitorOptions = ctx.config.section("monitor")
    unknown = sorted(set(options.idle_timeout_by_plan) - set(compute.options.all_plans))
    if unknown:
        log.warning("monitor: idle_timeout_by_plan names plans that do not exist: %s (known: "
                    "%s)", ", ".join(unknown), ", ".join(sorted(compute.options.all_plans)))
    policy = ElasticityPolicy(compute, PolicySettings(
        raise_factor=options.raise_factor, raise_min_mib=options.raise_min_mib,
        host_reserve_mib=options.host_reserve_mib,
        decision_interval=options.decision_interval))
    monitor = Monitor(options, compute=compute, backend=lambda: ctx.backend, policy=policy,
                      publish=compute.publish, now=ctx.clock.now,
                      metrics=getattr(ctx, "metrics", None), user_dir=compute.user_dir)
    ctx.monitor = monitor
    return monitor


@hookimpl
def markco_services(ctx: PluginContext) -> list[ServiceSpec]:
    """The monitor (not critical: `/readyz` does not wait for it)."""
    monitor = monitor_for(ctx)
    if monitor is None:
        log.warning("monitor: the compute plugin is not loaded; runtimes are not monitored")
        return []
    return [ServiceSpec("monitor", monitor.run, critical=False)]


@hookimpl
def markco_web_routes(ctx: PluginContext) -> list[Any]:
    """`GET /api/v1/monitor` (see `api.py`)."""
    from .api import monitor_blueprint

    monitor = monitor_for(ctx)
    return [monitor_blueprint(ctx, monitor)] if monitor is not None else []
