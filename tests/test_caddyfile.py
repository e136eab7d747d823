"""The Caddyfile at the root is valid for the Caddy we deploy with."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from markco_trio.testing.system import missing_system

ROOT = Path(__file__).resolve().parent.parent


def test_the_caddyfile_validates(tmp_path: Path) -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        missing_system("caddy", "apt-get install caddy (scripts/bootstrap --system does)")
    env = {"PATH": "/usr/bin:/bin", "XDG_DATA_HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path), "MARKCO_DOMAIN": "notebooks.example.org"}
    result = subprocess.run([caddy, "validate", "--config", str(ROOT / "Caddyfile"), "--adapter",
                             "caddyfile"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


def test_the_caddyfile_serves_the_editor_origins_wildcard(tmp_path: Path) -> None:
    caddy = shutil.which("caddy")
    if caddy is None:
        missing_system("caddy", "apt-get install caddy (scripts/bootstrap --system does)")
    env = {"PATH": "/usr/bin:/bin", "XDG_DATA_HOME": str(tmp_path),
           "XDG_CONFIG_HOME": str(tmp_path), "MARKCO_DOMAIN": "notebooks.example.org",
           "MARKCO_EDITOR_DOMAIN": "u.example.org"}
    result = subprocess.run([caddy, "adapt", "--config", str(ROOT / "Caddyfile"), "--adapter",
                             "caddyfile"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '"*.u.example.org"' in result.stdout
    assert '"notebooks.example.org"' in result.stdout
