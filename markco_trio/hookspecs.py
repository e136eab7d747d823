"""The plugin contract of markco: every hook a plugin may implement.

This module is the single source of the contract. Hooks are SYNCHRONOUS (pluggy is): an
`async def` hookimpl would silently return a coroutine, so the plugin manager refuses one at
registration. Hooks that fill a role RETURN NAMED PROVIDER FACTORIES; the configuration chooses a
provider by name (`[storage] provider = "postgres"`), and two providers with one name are an
error. A provider is an async context manager that the daemon enters inside its nursery.

Every hook here has a docstring (arguments, return value, when it is called) and at least one
test; `tests/test_hookspecs.py` fails when one of them lacks either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from .authz import Principal, Resource
    from .context import PluginContext
    from .roles import EventObserver, ServiceSpec

PROJECT_NAME = "markco"

# The version of this contract (the hooks, `roles`, the records, `PluginContext`'s fields):
# "MAJOR.MINOR". A new hook, role method with a default or context field is a minor change; a
# removed or changed one is a major change. A plugin may declare the major version it was
# written for as a module attribute, `MARKCO_CONTRACT = "1"`; one that declares another major
# version is refused at load with one line saying so.
CONTRACT_VERSION = "1.0"
CONTRACT_ATTRIBUTE = "MARKCO_CONTRACT"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ------------------------------------------------------------------ what hooks return


@dataclass(frozen=True)
class ProviderSpec:
    """A named factory for one role (storage, container backend, checkpointer, OAuth provider,
    session authority, compute control).

    `options` is a dataclass: the schema of the provider's config table (`[storage.<name>]`),
    validated by the core before `factory(options, ctx)` is called. The factory returns the
    provider (an async context manager); it must not do I/O itself — that belongs in
    `__aenter__`, which the daemon awaits inside its nursery.
    """

    name: str
    factory: Callable[[Any, PluginContext], Any]
    options: type[Any] | None = None
    description: str = ""


@dataclass(frozen=True)
class ConfigSection:
    """A top-level config section a plugin owns (`[publish]`, `[auth]`...). `options` is its
    schema dataclass; the validated instance is `ctx.config.section(name)`."""

    name: str
    options: type[Any]
    description: str = ""


@dataclass(frozen=True)
class CliCommand:
    """A `markco <name>` sub-command. `configure(parser)` adds its arguments; `run(args)`
    returns the exit code (it may call `trio.run` itself). A command taking `--config` gets it
    from its own arguments: the CLI core does not load a config for it."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    aliases: tuple[str, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------------------- configuration


@hookspec
def markco_config_sections() -> list[ConfigSection]:
    """Declare the top-level config sections this plugin owns.

    Called once, after plugins are loaded and before the configuration is validated (phase two
    of loading). A section that no loaded plugin declares is an error naming the section, so a
    missing or disabled plugin is found at start-up, not at first use.
    """


# ------------------------------------------------------------------------------------ roles


@hookspec
def markco_storage_providers() -> list[ProviderSpec]:
    """Register `Storage` providers (`markco_trio.roles.Storage`).

    Called once at configuration time. `[storage] provider = "<name>"` picks one; its options
    come from `[storage.<name>]`. The built-in `sqlite` provider is the embedded default.
    """


@hookspec
def markco_container_backends() -> list[ProviderSpec]:
    """Register `ContainerBackend` providers (`markco_trio.roles.ContainerBackend`).

    Called once at configuration time. `[compute] backend = "<name>"` picks one; its options
    come from `[compute.<name>]`.
    """


@hookspec
def markco_checkpointers() -> list[ProviderSpec]:
    """Register `Checkpointer` providers (`markco_trio.roles.Checkpointer`).

    Called once at configuration time. `[checkpoint] provider = "<name>"` picks one (none by
    default); its options come from `[checkpoint.<name>]`.
    """


@hookspec
def markco_oauth_providers() -> list[ProviderSpec]:
    """Register `OAuthProvider` providers (`markco_trio.roles.OAuthProvider`).

    Called once at configuration time. `[oauth] providers = ["github", ...]` enables any number
    of them; each one's options come from `[oauth.<name>]`.
    """


@hookspec
def markco_session_authorities() -> list[ProviderSpec]:
    """Register `SessionAuthority` providers (`markco_trio.roles.SessionAuthority`).

    Called once at configuration time. `[sessions] provider = "<name>"` picks one (default:
    `builtin`, the auth plugin's, when that plugin is loaded); its options come from
    `[sessions.<name>]`. The daemon enters it after the OAuth providers and sets
    `ctx.sessions`, before the front door is built.
    """


@hookspec
def markco_compute_controls() -> list[ProviderSpec]:
    """Register `ComputeControl` providers (`markco_trio.roles.ComputeControl`).

    Called once at configuration time. `[compute_control] provider = "<name>"` picks one
    (default: `builtin`, the compute plugin's, when that plugin is loaded); its options come
    from `[compute_control.<name>]`. The daemon enters it after the session authority and
    sets `ctx.compute`, before the front door is built.
    """


# ----------------------------------------------------------------------- the running daemon


@hookspec
def markco_web_routes(ctx: PluginContext) -> list[Any]:
    """Return Quart blueprints to mount on the API app.

    Called once when the API app is built, after every provider has been entered, so `ctx`
    carries storage, the event bus and the providers. Routes follow the API conventions of
    `markco_trio.api.conventions` (JSON errors, cursor paging, ISO-8601 times).
    """


@hookspec
def markco_services(ctx: PluginContext) -> list[ServiceSpec]:
    """Return long-running services for the daemon to supervise (`markco_trio.roles.ServiceSpec`).

    Called once at start-up. Each runs in the daemon's nursery; a crash is logged with its
    traceback and the service restarts with backoff; too many crashes in a window stop the
    daemon. `/readyz` waits until every critical service has called `task_status.started()`.
    Start-up reconciliation belongs before that call.
    """


@hookspec
def markco_event_observers(ctx: PluginContext) -> list[EventObserver]:
    """Return observers of the event log (`markco_trio.roles.EventObserver`).

    Called once at start-up. Each observer gets events after they are persisted, through a
    bounded channel of its own: a slow observer drops (and counts) events, never blocking the
    producer.
    """


@hookspec
def markco_cli_commands() -> list[CliCommand]:
    """Return extra `markco` sub-commands.

    Called when the CLI builds its argument parser, before any configuration is loaded.
    """


@hookspec
def markco_authorize(principal: Principal | None, action: str, resource: Resource) -> bool | None:
    """Vote on whether `principal` (None: anonymous) may do `action` on `resource`.

    Called synchronously on hot paths (every proxied request), so implementations must be pure
    and fast over cached data: no I/O. Return True to allow, False to deny, None to abstain.
    Deny by default: access needs at least one True and no False.
    """
