"""The Caddyfile at the root is valid for the Caddy we deploy with, formatted as `caddy fmt`
writes it, adapts without a warning, and takes every deployment setting from the environment
(its admin and bind addresses and ports included). `tests/ops/test_edge.py` runs it for real."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from markco_trio.testing.edge import CADDYFILE, caddy_tool


def adapt(tmp_path: Path, **settings: str) -> tuple[dict[str, Any], str]:
    result = caddy_tool("adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile",
                        state_dir=tmp_path, **settings)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_the_caddyfile_validates(tmp_path: Path) -> None:
    result = caddy_tool("validate", "--config", str(CADDYFILE), "--adapter", "caddyfile",
                        state_dir=tmp_path, DOMAIN="notebooks.example.org")
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


def test_the_caddyfile_is_formatted_as_caddy_fmt_writes_it(tmp_path: Path) -> None:
    result = caddy_tool("fmt", str(CADDYFILE), state_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == CADDYFILE.read_text()


def test_the_caddyfile_adapts_without_a_warning(tmp_path: Path) -> None:
    _, log = adapt(tmp_path, DOMAIN="notebooks.example.org")
    assert '"warn"' not in log and '"error"' not in log, log


def test_the_caddyfile_serves_the_editor_origins_wildcard(tmp_path: Path) -> None:
    config, _ = adapt(tmp_path, DOMAIN="notebooks.example.org", EDITOR_DOMAIN="u.example.org")
    text = json.dumps(config)
    assert '"*.u.example.org"' in text
    assert '"notebooks.example.org"' in text


def test_the_admin_address_bind_addresses_and_ports_come_from_the_environment(
        tmp_path: Path) -> None:
    config, _ = adapt(tmp_path, DOMAIN="notebooks.example.org", CADDY_ADMIN="127.0.0.1:2999",
                      CADDY_BIND="10.1.2.3", HTTP_PORT="8080", HTTPS_PORT="8443",
                      UPSTREAM="127.0.0.1:3999")
    assert config["admin"]["listen"] == "127.0.0.1:2999"
    http = config["apps"]["http"]
    assert (http["http_port"], http["https_port"]) == (8080, 8443)
    listens = {address for server in http["servers"].values() for address in server["listen"]}
    assert listens == {"10.1.2.3:8443"}
    assert '"dial": "127.0.0.1:3999"' in json.dumps(config)


def test_the_defaults_listen_everywhere_with_the_admin_api_on_loopback(tmp_path: Path) -> None:
    config, _ = adapt(tmp_path, DOMAIN="notebooks.example.org")
    assert config["admin"]["listen"] == "localhost:2019"
    listens = {address for server in config["apps"]["http"]["servers"].values()
               for address in server["listen"]}
    assert listens == {"0.0.0.0:443", "[::]:443"}


def test_the_admin_api_can_be_turned_off(tmp_path: Path) -> None:
    config, _ = adapt(tmp_path, DOMAIN="notebooks.example.org", CADDY_ADMIN="off")
    assert config["admin"]["disabled"] is True
