"""The publish plugin through the plugin contract: its `[publish]` section and its routes."""

from __future__ import annotations

from pathlib import Path

import pytest
from quart import Blueprint

from markco_trio.builtin import publish
from markco_trio.builtin.publish.options import PublishOptions
from markco_trio.config import validate_config
from markco_trio.errors import ConfigError
from markco_trio.options import SecretResolver
from markco_trio.plugins import make_plugin_manager
from markco_trio.storage.sqlite import SqliteStorage

from .conftest import PLUGINS, Site, make_app, make_context, principals


def validate(tmp_path: Path, publish_table: dict[str, object]) -> object:
    pm = make_plugin_manager(entry_points=False, builtins=PLUGINS)
    raw = {"server": {"data_dir": str(tmp_path)}, "publish": publish_table}
    return validate_config(tmp_path / "markco.toml", raw, pm, SecretResolver({}))


def test_the_plugin_declares_the_publish_section() -> None:
    (section,) = publish.markco_config_sections()
    assert section.name == "publish" and section.options is PublishOptions


def test_the_section_defaults_when_absent(tmp_path: Path) -> None:
    pm = make_plugin_manager(entry_points=False, builtins=PLUGINS)
    raw = {"server": {"data_dir": str(tmp_path)}}
    config = validate_config(tmp_path / "markco.toml", raw, pm, SecretResolver({}))
    assert config.section("publish") == PublishOptions()


def test_the_section_is_validated(tmp_path: Path) -> None:
    config = validate(tmp_path, {"host": "pages.example.net", "max_page_bytes": 1000})
    assert config.section("publish").max_page_bytes == 1000  # type: ignore[attr-defined]


def test_an_unknown_key_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[publish\]: unknown key 'max_page_size'"):
        validate(tmp_path, {"max_page_size": 1})


def test_a_bad_value_names_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[publish\]: max_depth"):
        validate(tmp_path, {"max_depth": 0})


async def test_the_routes_are_one_blueprint(site: Site, storage: SqliteStorage) -> None:
    ctx = make_context(site, storage)
    (blueprint,) = publish.markco_web_routes(ctx)
    assert isinstance(blueprint, Blueprint) and blueprint.name == "publish"


async def test_the_api_app_serves_publish_routes_through_the_hook(
        site: Site, storage: SqliteStorage) -> None:
    app = make_app(make_context(site, storage), principals(site))
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/@", "/@<path:rest>"} <= rules


def test_a_disabled_plugin_leaves_its_section_unknown(tmp_path: Path) -> None:
    pm = make_plugin_manager(entry_points=False, builtins=PLUGINS, disable=["publish"])
    raw = {"server": {"data_dir": str(tmp_path)}, "publish": {}}
    with pytest.raises(ConfigError, match=r"unknown section \[publish\]"):
        validate_config(tmp_path / "markco.toml", raw, pm, SecretResolver({}))
