"""`PluginContext`: what a provider factory, a blueprint or a service is given.

It is filled in as the daemon starts: storage first (everything else needs it), then the event
bus, the container backend, the checkpointer, the OAuth providers, the session authority
(`sessions`) and compute control (`compute`). A factory sees what was entered before it. The
other fields (`publisher`, `monitor`, `activity`) are set by the built-in plugins that own them
when the daemon builds its app and services; a plugin reads them, never replaces them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .authz import Principal, Resource, authorize
from .clock import Clock, SystemClock
from .metrics import Registry
from .options import SecretResolver

if TYPE_CHECKING:
    from .builtin.monitor.service import Monitor
    from .builtin.publish.publisher import Publisher
    from .config import Config
    from .events import EventBus
    from .plugins import MarkcoPluginManager
    from .proxy.activity import ActivityRecord
    from .readiness import Readiness
    from .roles import (
        Checkpointer,
        ComputeControl,
        ContainerBackend,
        OAuthProvider,
        SessionAuthority,
        Storage,
    )


@dataclass(eq=False)  # compared (and hashed) by identity: plugins key their state on it
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
    # The session authority (role `sessions`) and compute control (role `compute_control`):
    # None when no provider is chosen (their plugin disabled) or before the daemon entered them.
    sessions: SessionAuthority | None = None
    compute: ComputeControl | None = None
    # Set by the publish plugin when it serves (the dashboard lists a user's projects).
    publisher: Publisher | None = None
    # Set by the monitor plugin when compute runs (the admin page reads memory pressure).
    monitor: Monitor | None = None
    # Set by the daemon with the front door: the last activity per user (`proxy.activity`).
    activity: ActivityRecord | None = None

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
