"""The built-in `process` container backend (`[compute] backend = "process"`).

Runs users' editors and runtimes as detached local processes: the embedded default. As root,
each user gets a uid/gid and network namespaces of their own (see `ProcessOptions` and
docs/compute.md for what that isolates and what not). Options: `[compute.process]`.
"""

from __future__ import annotations

from typing import Any

from ...hookspecs import ProviderSpec, hookimpl
from .backend import ProcessBackend, ProcessOptions

__all__ = ["ProcessBackend", "ProcessOptions", "markco_container_backends"]


def _factory(options: ProcessOptions, ctx: Any) -> ProcessBackend:
    return ProcessBackend(options, deployment_id=ctx.config.server.deployment_id,
                          data_dir=ctx.data_dir, accounts=ctx.storage)


@hookimpl
def markco_container_backends() -> list[ProviderSpec]:
    """The `process` backend."""
    return [ProviderSpec("process", _factory, ProcessOptions,
                         "local processes (a uid and network namespaces per user when root)")]
