"""The built-in `compute` plugin: each user's runtime and editor, their lifecycle, and the
runtime front (DESIGN §3.4, §4).

Registered as `("compute", "markco_trio.builtin.compute")`. It runs on whichever container
backend `[compute] backend` names; its own options are `[workloads]` (`options.py`).

What other parts of markco use: `ctx.compute`, the `builtin` provider of the `ComputeControl`
role (`[compute_control] provider`), a `ComputeService` (see `service.py`
for the interface: editor address, state, start in the background or wait, progress, activity).

Modules: `options` ([workloads], plans), `specs` (what runs, with the editor contract's
environment), `workspace` (the user's scaffold), `front` (the runtime front), `probes`
(readiness), `actor` (one user's serialised operations, crash handling), `reconcile` (start-up),
`service` (the actors, the interface), `progress` (progress fan-out), `status` (snapshots),
`api` (routes), `plugin` (hooks).
"""

from __future__ import annotations

from .actor import OperationFailed
from .front import FrontStatistics, RuntimeFront
from .options import PlanLimits, WorkloadsOptions
from .plugin import (
    markco_cli_commands,
    markco_compute_controls,
    markco_config_sections,
    markco_event_observers,
    markco_services,
    markco_web_routes,
)
from .service import ComputeService, ComputeUnavailable, StartFailed, service_for
from .status import Progress, UserComputeState, WorkloadStatus

__all__ = [
    "ComputeService",
    "ComputeUnavailable",
    "FrontStatistics",
    "OperationFailed",
    "PlanLimits",
    "Progress",
    "RuntimeFront",
    "StartFailed",
    "UserComputeState",
    "WorkloadStatus",
    "WorkloadsOptions",
    "markco_cli_commands",
    "markco_compute_controls",
    "markco_config_sections",
    "markco_event_observers",
    "markco_services",
    "markco_web_routes",
    "service_for",
]
