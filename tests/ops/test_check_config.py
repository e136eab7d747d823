"""`markco check-config`: `config/production.toml` and `config/local.toml` pass it; `--explain`
covers every section this markco knows (the core's, each role's providers, every plugin's) and
runs where the file's secrets are not set, naming them; without `--explain` a missing secret is
still the configuration error it always was; and the README's configuration table lists every
section `--explain` does (so `[auth]` and `[publish]` among them)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "config" / "production.toml"
LOCAL = ROOT / "config" / "local.toml"
SECRETS = ("MARKCO_DATABASE_URL", "MARKCO_GITHUB_CLIENT_SECRET")


def check_config(*args: str, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([sys.executable, "-m", "markco_trio", "check-config", *args],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**environ, **(env or {})}, cwd=ROOT)


def sections(explained: str) -> list[str]:
    """The section headers `--explain` printed (`server`, `storage.postgres`, ...)."""
    return re.findall(r"^\[([a-z_.]+)\]", explained, re.MULTILINE)


@pytest.fixture(scope="module")
def explained() -> str:
    done = check_config("--explain", str(PRODUCTION))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_production_config_passes_given_its_secrets() -> None:
    done = check_config(str(PRODUCTION), env={
        "MARKCO_DATABASE_URL": "postgresql://markco:dummy@127.0.0.1:5432/markco",
        "MARKCO_GITHUB_CLIENT_SECRET": "dummy"})
    assert done.returncode == 0, done.stderr
    for role in ("storage: postgres", "compute: docker", "checkpoint: criu", "oauth: github"):
        assert role in done.stdout


def test_without_explain_a_missing_secret_is_a_configuration_error_naming_it() -> None:
    done = check_config(str(PRODUCTION))
    assert done.returncode == 2
    assert "MARKCO_DATABASE_URL is not set" in done.stderr and "Traceback" not in done.stderr


def test_explain_runs_without_the_secrets_and_names_them(explained: str) -> None:
    assert ("secrets not set here (the daemon needs them): MARKCO_DATABASE_URL, "
            "MARKCO_GITHUB_CLIENT_SECRET") in explained


def test_explain_covers_every_section_in_the_production_file(explained: str) -> None:
    text = PRODUCTION.read_text()
    in_file = re.findall(r"^\[([a-z_.]+)\]", text, re.MULTILINE)
    assert set(in_file) <= set(sections(explained))


def test_explain_covers_every_section_this_markco_knows(explained: str) -> None:
    from markco_trio.config import _CORE_SECTIONS
    from markco_trio.plugins import ROLE_HOOKS, collect_providers, make_plugin_manager

    pm = make_plugin_manager()
    known = set(_CORE_SECTIONS) | set(ROLE_HOOKS)
    known |= {f"{role}.{name}" for role in ROLE_HOOKS for name in collect_providers(pm, role)}
    for impl in pm.hook.markco_config_sections.get_hookimpls():
        known |= {section.name for section in impl.function() or []}
    assert known <= set(sections(explained))
    assert {"auth", "publish", "workloads", "oauth.github", "checkpoint.criu"} <= known


def test_explain_lists_each_option_with_its_type_and_default(explained: str) -> None:
    server = explained.split("\n[server]", 1)[1].split("\n[", 1)[0]
    assert re.search(r"^  listen +a string +'127\.0\.0\.1:3000'$", server, re.MULTILINE)
    postgres = explained.split("\n[storage.postgres]", 1)[1].split("\n[", 1)[0]
    assert "(in use)" in postgres.splitlines()[0]
    assert re.search(r"^  dsn_env / dsn_file +secret +required$", postgres, re.MULTILINE)


def test_explain_does_not_loosen_validation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "127.0.0.1:3000"\nlissten = "typo"\n')
    done = check_config("--explain", str(bad))
    assert done.returncode == 2 and "lissten" in done.stderr


def test_the_local_config_explains_too() -> None:
    done = check_config("--explain", str(LOCAL))
    assert done.returncode == 0, done.stderr
    assert "secrets not set" not in done.stdout  # it has none


def test_the_readme_configuration_table_lists_every_top_level_section(explained: str) -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `\[([a-z_]+)\]` \|", table, re.MULTILINE))
    top_level = {name for name in sections(explained) if "." not in name}
    assert top_level - rows == set(), "sections missing from the README's configuration table"
    assert {"auth", "publish"} <= rows
