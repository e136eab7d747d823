"""markco-docker: the `ContainerBackend` role over the Docker Engine API (Docker >= 20.10,
Podman >= 4).

The face of the distribution; the mechanism lives in `backend` (the role), `engine` (the API
connection and version negotiation), `translation` (specs to engine requests and back),
`naming` (networks, bridges, label filters), `multiplex` (log streams), `cgroups` and `oom`
(what the engine's host says when the engine is vague), `ledger` (what the engine forgets),
`options` (`[compute.docker]`), `localimage` (the local development images), `testing`
(a throw-away podman service for tests) and `plugin` (the hook).
"""

from __future__ import annotations

from .backend import DockerBackend
from .engine import Engine, EngineVersion
from .options import DockerOptions

__version__ = "0.1.0"

__all__ = ["DockerBackend", "DockerOptions", "Engine", "EngineVersion", "__version__"]
