"""The markco plugin: registers the `docker` container backend (entry point `markco` → `docker`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from markco_trio.hookspecs import ProviderSpec, hookimpl

from .backend import DockerBackend
from .hosts import MultiHostBackend
from .options import DockerOptions

# The major version of markco's plugin contract this plugin is written for (checked at load).
MARKCO_CONTRACT = "1"

if TYPE_CHECKING:
    from markco_trio.context import PluginContext

# Where the backend keeps what the engine does not (see `ledger`), under the data directory.
STATE_SUBDIR = "docker"


def make_docker_backend(options: DockerOptions,
                        ctx: PluginContext) -> DockerBackend | MultiHostBackend:
    """The factory `[compute] backend = "docker"` calls with `[compute.docker]`. No I/O here:
    the engine is contacted when the daemon enters the backend. With `hosts`, a backend over
    every configured engine (see `hosts`)."""
    if options.hosts:
        return MultiHostBackend(options, deployment_id=ctx.config.server.deployment_id,
                                state_dir=ctx.data_dir / STATE_SUBDIR, log=ctx.log,
                                clock=ctx.clock.now)
    return DockerBackend(options, deployment_id=ctx.config.server.deployment_id,
                         state_dir=ctx.data_dir / STATE_SUBDIR, log=ctx.log,
                         clock=ctx.clock.now)


@hookimpl
def markco_container_backends() -> list[ProviderSpec]:
    """Register the `docker` backend."""
    return [ProviderSpec(name="docker", factory=make_docker_backend, options=DockerOptions,
                         description="Containers on a Docker (>= 20.10) or Podman (>= 4) "
                                     "engine: a network per user, unprivileged, limited")]
