"""The plugin manager: discovery order, the contract's guards, the provider registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from markco_trio.config import load_config
from markco_trio.errors import ConfigError, PluginError
from markco_trio.hookspecs import ProviderSpec, hookimpl
from markco_trio.plugins import collect_providers, describe_plugins, make_plugin_manager


def test_builtins_are_loaded_and_named() -> None:
    pm = make_plugin_manager(entry_points=False)
    names = {info.name for info in describe_plugins(pm)}
    assert {"policy", "sqlite", "core-cli"} <= names


def test_an_async_hookimpl_is_refused_at_registration(module_plugin: Callable[..., object]) -> None:
    @hookimpl
    async def markco_storage_providers() -> list[ProviderSpec]:
        return []

    module_plugin("async_plugin", {"markco_storage_providers": markco_storage_providers})
    with pytest.raises(PluginError, match="markco_storage_providers is 'async def'"):
        make_plugin_manager(modules=["async_plugin"], entry_points=False)


def test_a_misspelt_hook_is_an_error(module_plugin: Callable[..., object]) -> None:
    @hookimpl
    def markco_storage_provider() -> list[ProviderSpec]:  # missing the final "s"
        return []

    module_plugin("typo_plugin", {"markco_storage_provider": markco_storage_provider})
    with pytest.raises(PluginError, match="unknown hook 'markco_storage_provider'"):
        make_plugin_manager(modules=["typo_plugin"], entry_points=False)


def test_two_providers_with_one_name_are_an_error(module_plugin: Callable[..., object]) -> None:
    @hookimpl
    def markco_storage_providers() -> list[ProviderSpec]:
        return [ProviderSpec(name="sqlite", factory=lambda options, ctx: None)]

    module_plugin("dup_plugin", {"markco_storage_providers": markco_storage_providers})
    pm = make_plugin_manager(modules=["dup_plugin"], entry_points=False)
    with pytest.raises(PluginError, match="two storage providers are named 'sqlite'.*dup_plugin"):
        collect_providers(pm, "storage")


def test_disable_blocks_a_builtin() -> None:
    pm = make_plugin_manager(disable=["policy"], entry_points=False)
    assert "policy" not in {info.name for info in describe_plugins(pm)}


def test_config_modules_load_after_builtins(module_plugin: Callable[..., object],
                                            write_config: Callable[[str], Path]) -> None:
    @hookimpl
    def markco_storage_providers() -> list[ProviderSpec]:
        return [ProviderSpec(name="memory", factory=lambda options, ctx: None)]

    module_plugin("memory_storage", {"markco_storage_providers": markco_storage_providers})
    config, pm = load_config(write_config('[plugins]\nmodules = ["memory_storage"]\n'
                                          '[storage]\nprovider = "memory"\n'))
    assert config.roles["storage"].names == ("memory",)
    assert pm.sources["memory_storage"] == "config"


def test_a_config_module_that_cannot_be_imported_is_named(
        write_config: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match="cannot import 'no_such_markco_plugin'"):
        load_config(write_config('[plugins]\nmodules = ["no_such_markco_plugin"]\n'))


def test_entry_point_plugins_are_discovered() -> None:
    pm = make_plugin_manager()
    infos = {info.name: info for info in describe_plugins(pm)}
    assert "postgres" in infos, "install plugins/postgres (pip install -e plugins/postgres)"
    assert infos["postgres"].source.startswith("entry point")
    assert "markco_storage_providers" in infos["postgres"].hooks
