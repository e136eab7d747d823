"""The plugin manager: discovery, the contract's guards, and the provider registry.

Discovery order (DESIGN §2): built-in plugins, then the `markco` entry-point group (installed
distributions such as `markco-postgres`), then modules named in `[plugins] modules`. Any of them
can be blocked by name with `[plugins] disable`. After loading, `check_pending()` makes a
misspelt hook name an error instead of a silent no-op.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .hookspecs import ProviderSpec

# Built-in plugins: (name, module). They are registered through the same hooks as third-party
# plugins, so a deployment can disable one and provide its own.
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("policy", "markco_trio.builtin.policy"),
    ("sqlite", "markco_trio.builtin.sqlite_storage"),
    ("core-cli", "markco_trio.builtin.core_cli"),
    ("publish", "markco_trio.builtin.publish"),
    ("auth", "markco_trio.builtin.auth"),
    ("process", "markco_trio.builtin.process_backend"),
    ("compute", "markco_trio.builtin.compute"),
    ("monitor", "markco_trio.builtin.monitor"),
    ("events", "markco_trio.builtin.events"),
)

# The hooks that fill a role, and the config section that picks the provider.
ROLE_HOOKS: dict[str, str] = {
    "storage": "markco_storage_providers",
    "compute": "markco_container_backends",
    "checkpoint": "markco_checkpointers",
    "oauth": "markco_oauth_providers",
    "sessions": "markco_session_authorities",
    "compute_control": "markco_compute_controls",
}


class MarkcoPluginManager(pluggy.PluginManager):
    """A pluggy manager that refuses `async def` hookimpls and remembers where plugins came
    from (built-in, entry point, config)."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}
        self.versions: dict[str, str] = {}

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """Register `plugin`, refusing it whole when any of its hookimpls is async or it
        declares another major version of the contract (`MARKCO_CONTRACT`)."""
        check_contract(plugin, name)
        for attr in dir(plugin):
            try:
                fn = getattr(plugin, attr)
            except Exception:
                continue
            if self.parse_hookimpl_opts(plugin, attr) is None:
                continue
            if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
                label = name or getattr(plugin, "__name__", repr(plugin))
                raise PluginError(
                    f"plugin {label!r}: hook {attr} is 'async def'; hooks are synchronous. "
                    f"Return a provider (an async context manager) or a ServiceSpec instead.")
        return super().register(plugin, name)


def check_contract(plugin: Any, name: str | None = None) -> None:
    """`PluginError` when `plugin` declares (`MARKCO_CONTRACT = "<major>[.<minor>]"`) a
    major version of the plugin contract other than this markco's `CONTRACT_VERSION`."""
    declared = getattr(plugin, hookspecs.CONTRACT_ATTRIBUTE, None)
    if declared is None:
        return
    label = name or getattr(plugin, "__name__", repr(plugin))
    ours = hookspecs.CONTRACT_VERSION.split(".")[0]
    if not isinstance(declared, str | int) or not str(declared).split(".")[0].isdigit():
        raise PluginError(f"plugin {label!r}: {hookspecs.CONTRACT_ATTRIBUTE} = {declared!r} is "
                          f"not a contract version (write \"{ours}\" for this markco)")
    major = str(declared).split(".")[0]
    if major != ours:
        raise PluginError(
            f"plugin {label!r} is written for markco plugin contract {major}.x, and this "
            f"markco implements contract {hookspecs.CONTRACT_VERSION}: install a release of the "
            f"plugin for contract {ours}.x, or a markco for {major}.x, or disable it in "
            f"[plugins] disable")


@dataclass(frozen=True)
class PluginInfo:
    """What `markco plugins` shows for one loaded plugin."""

    name: str
    source: str
    version: str | None
    hooks: tuple[str, ...]


def make_plugin_manager(*, disable: Sequence[str] = (), modules: Sequence[str] = (),
                        entry_points: bool = True,
                        builtins: Iterable[tuple[str, str]] = BUILTIN_PLUGINS,
                        ) -> MarkcoPluginManager:
    """Load built-ins, then entry points, then config modules; block `disable`d names; verify
    every hookimpl names a real hook."""
    pm = MarkcoPluginManager()
    for name in disable:
        pm.set_blocked(name)
    for name, module_name in builtins:
        if pm.is_blocked(name):
            continue
        pm.register(importlib.import_module(module_name), name=name)
        pm.sources[name] = "built-in"
    if entry_points:
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT_NAME):
            if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"entry point {ep.name!r} ({ep.value}) failed to load: "
                                  f"{type(exc).__name__}: {exc}") from exc
            pm.register(plugin, name=ep.name)
            dist = ep.dist.name if ep.dist is not None else "?"
            pm.sources[ep.name] = f"entry point ({dist})"
            if ep.dist is not None:
                pm.versions[ep.name] = ep.dist.version
    for module_name in modules:
        if pm.is_blocked(module_name):
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(f"[plugins] modules: cannot import {module_name!r}: {exc}") from exc
        if pm.is_registered(module):
            continue  # already loaded through its entry point: listing it too is harmless
        pm.register(module, name=module_name)
        pm.sources[module_name] = "config"
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc} (is the hook name misspelt? see markco_trio/hookspecs.py)") \
            from exc
    return pm


def collect_providers(pm: pluggy.PluginManager, role: str) -> dict[str, ProviderSpec]:
    """The providers of `role` by name. Two with one name is an error naming both plugins."""
    hook = getattr(pm.hook, ROLE_HOOKS[role])
    found: dict[str, ProviderSpec] = {}
    owner: dict[str, str] = {}
    for impl in hook.get_hookimpls():
        result = impl.function()
        for spec in result or ():
            if not isinstance(spec, ProviderSpec):
                raise PluginError(f"plugin {impl.plugin_name!r}: {ROLE_HOOKS[role]} must return "
                                  f"ProviderSpec objects, got {type(spec).__name__}")
            if spec.name in found:
                raise PluginError(
                    f"two {role} providers are named {spec.name!r}: from plugins "
                    f"{owner[spec.name]!r} and {impl.plugin_name!r}; disable one in "
                    f"[plugins] disable")
            found[spec.name] = spec
            owner[spec.name] = impl.plugin_name
    return found


def describe_plugins(pm: MarkcoPluginManager) -> list[PluginInfo]:
    """Every loaded plugin with its source, distribution version and implemented hooks."""
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        version = pm.versions.get(name)
        if version is None and pm.sources.get(name) == "built-in":
            from . import __version__
            version = __version__
        infos.append(PluginInfo(name=name, source=pm.sources.get(name, "registered"),
                                version=version, hooks=hooks))
    return sorted(infos, key=lambda i: (i.source != "built-in", i.name))
