"""markco: self-hosted personal notebook computing, as one trio daemon.

The public face of the plugin contract. Plugin authors import from here, and only what is
listed in `__all__` is promised (for `CONTRACT_VERSION`'s major version):

    from markco_trio import CONTRACT_VERSION, ComputeControl, ProviderSpec, hookimpl

- hooks and what they return: `hookimpl`, `ProviderSpec`, `ConfigSection`, `CliCommand`,
  `ServiceSpec`, `EventObserver`;
- the roles a provider fills (`Storage`, `ContainerBackend`, `Checkpointer`, `OAuthProvider`,
  `SessionAuthority`, `ComputeControl`, with `ComputeSnapshots` optional) and the records and
  values they take and return;
- `PluginContext`, what factories, routes and services are given;
- the errors (`MarkcoError` and its kinds) and authorisation (`Principal`, `Resource`,
  `Action`);
- the contract kits (`ComputeControlContract`, `SessionAuthorityContract`) and their in-memory
  references (`MemoryCompute`, `MemorySessions`): imported on first use, since they need
  pytest (`markco_trio.testing.compute_kit`, `markco_trio.testing.session_kit`).

`CONTRACT_VERSION` is "MAJOR.MINOR"; a plugin declaring `MARKCO_CONTRACT = "<major>"` for
another major version is refused at load. The mechanism lives in the modules named for it
(`hookspecs`, `roles`, `plugins`, `config`, `daemon`, `proxy`, `api`, `storage`): not promised.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import Any

from .authz import Action, Principal, Resource
from .context import PluginContext
from .errors import (
    BackendError,
    CheckpointError,
    CheckpointUnavailable,
    ConfigError,
    Conflict,
    MarkcoError,
    NotFound,
    PluginError,
    RestoreIncompatible,
    StorageError,
)
from .hookspecs import (
    CONTRACT_VERSION,
    CliCommand,
    ConfigSection,
    ProviderSpec,
    hookimpl,
)
from .options import Secret
from .records import (
    ApiToken,
    Event,
    Grant,
    GrantRole,
    Identity,
    Invite,
    LoginLink,
    Migration,
    Operation,
    OperationState,
    Page,
    Runtime,
    RuntimeState,
    Session,
    Snapshot,
    User,
    WebhookDelivery,
    WorkloadAccount,
    WorkloadRole,
)
from .roles import (
    COMPUTE_REQUESTS,
    AuthorizationRequest,
    BackendCapabilities,
    CheckpointCapabilities,
    Checkpointer,
    CheckpointResult,
    ComputeControl,
    ComputeSnapshots,
    ComputeStateView,
    ContainerBackend,
    ContainerInfo,
    ContainerSpec,
    ContainerStats,
    EventObserver,
    OAuthProvider,
    ProgressView,
    ServiceSpec,
    SessionAuthority,
    Storage,
    VerifiedIdentity,
)

# The kits import pytest: loaded when a plugin's tests ask for them, never by the daemon.
_KITS = {
    "ComputeControlContract": "markco_trio.testing.compute_kit",
    "MemoryCompute": "markco_trio.testing.compute_kit",
    "SessionAuthorityContract": "markco_trio.testing.session_kit",
    "MemorySessions": "markco_trio.testing.session_kit",
}


def __getattr__(name: str) -> Any:
    """The contract kits, imported on first use."""
    module = _KITS.get(name)
    if module is None:
        raise AttributeError(f"module 'markco_trio' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "COMPUTE_REQUESTS",
    "CONTRACT_VERSION",
    "Action",
    "ApiToken",
    "AuthorizationRequest",
    "BackendCapabilities",
    "BackendError",
    "CheckpointCapabilities",
    "CheckpointError",
    "CheckpointResult",
    "CheckpointUnavailable",
    "Checkpointer",
    "CliCommand",
    "ComputeControl",
    "ComputeControlContract",
    "ComputeSnapshots",
    "ComputeStateView",
    "ConfigError",
    "ConfigSection",
    "Conflict",
    "ContainerBackend",
    "ContainerInfo",
    "ContainerSpec",
    "ContainerStats",
    "Event",
    "EventObserver",
    "Grant",
    "GrantRole",
    "Identity",
    "Invite",
    "LoginLink",
    "MarkcoError",
    "MemoryCompute",
    "MemorySessions",
    "Migration",
    "NotFound",
    "OAuthProvider",
    "Operation",
    "OperationState",
    "Page",
    "PluginContext",
    "PluginError",
    "Principal",
    "ProgressView",
    "ProviderSpec",
    "Resource",
    "RestoreIncompatible",
    "Runtime",
    "RuntimeState",
    "Secret",
    "ServiceSpec",
    "Session",
    "SessionAuthority",
    "SessionAuthorityContract",
    "Snapshot",
    "Storage",
    "StorageError",
    "User",
    "VerifiedIdentity",
    "WebhookDelivery",
    "WorkloadAccount",
    "WorkloadRole",
    "__version__",
    "hookimpl",
]
