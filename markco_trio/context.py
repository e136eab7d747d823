"""`PluginContext`: what a provider factory, a blueprint or a service is given.

It is filled in as the daemon starts: storage first (everything else needs it), then the event
bus, then the other providers. A factory sees what was entered before it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .authz import Principal, Resource, authorize
from .clock import Clock, SystemClock
from .metrics import Registry
from .options import SecretResolver

if TYPE_CHECKING:
    from .config import Config
    from .events import EventBus
    from .plugins import MarkcoPluginManager
    from .readiness import Readiness
    from .roles import Checkpointer, ContainerBackend, OAuthProvider, Storage


@dataclass
class PluginContext:
    """The daemon's shared parts, handed to plugins.

    `storage`, `events` and the providers are None until the daemon has entered them; a factory
    for storage sees neither (storage comes first).
    """

    config: Config
    plugins: MarkcoPluginManager
    secrets: SecretResolver = field(default_factory=SecretResolver)
    clock: Clock = field(default_factory=SystemClock)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("markco"))
    readiness: Readiness | None = None
    storage: Storage | None = None
    events: EventBus | None = None
    backend: ContainerBackend | None = None
    checkpointer: Checkpointer | None = None
    oauth: dict[str, OAuthProvider] = field(default_factory=dict)
    runtime_dir: Path | None = None
    # The daemon's Prometheus metrics (see `markco_trio.metrics`): record or add collectors.
    metrics: Registry = field(default_factory=Registry)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        """The deployment's data directory (absolute)."""
        return self.config.data_dir

    def require_storage(self) -> Storage:
        """Storage, or a clear error when asked for before the daemon entered it."""
        if self.storage is None:
            raise RuntimeError("storage is not open yet: ask for it in __aenter__ or a service, "
                               "not in a provider factory")
        return self.storage

    def authorize(self, principal: Principal | None, action: str, resource: Resource) -> bool:
        """The one authorisation decision (see `markco_trio.authz`)."""
        return authorize(self.plugins, principal, action, resource)
