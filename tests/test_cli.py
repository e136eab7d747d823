"""The `markco` command line, run as a real subprocess like a person would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from markco_trio.testing.network import free_port

ROOT = Path(__file__).resolve().parent.parent


def markco(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run `python -m markco_trio ARGS` and capture its output."""
    return subprocess.run([sys.executable, "-m", "markco_trio", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, **kwargs)  # type: ignore[call-overload]


@pytest.fixture
def config_on_free_port(write_config: Callable[..., Path]) -> Path:
    return write_config(f'[server]\nlisten = "127.0.0.1:{free_port()}"\ndata_dir = "data"\n'
                        f'drain_seconds = 2\n')


def wait_for(url: str, timeout: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def running(config_on_free_port: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A `markco run` subprocess and its base URL."""
    text = config_on_free_port.read_text()
    listen = text.split('listen = "')[1].split('"')[0]
    proc = subprocess.Popen([sys.executable, "-m", "markco_trio", "run", "--config",
                             str(config_on_free_port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc, f"http://{listen}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def test_run_answers_healthz_and_exits_0_on_sigterm(
        running: tuple[subprocess.Popen[str], str]) -> None:
    proc, url = running
    assert wait_for(f"{url}/healthz").status_code == 200
    deadline = time.monotonic() + 15
    while wait_for(f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "never became ready"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=2 + 5) == 0  # drain_seconds = 2, plus a margin


def test_run_exits_0_on_sigint(running: tuple[subprocess.Popen[str], str]) -> None:
    proc, url = running
    assert wait_for(f"{url}/healthz").status_code == 200
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=7) == 0


def test_a_second_daemon_on_the_same_data_dir_refuses_to_start(
        running: tuple[subprocess.Popen[str], str], config_on_free_port: Path,
        tmp_path: Path) -> None:
    proc, url = running
    assert wait_for(f"{url}/healthz").status_code == 200
    second = tmp_path / "second.toml"
    second.write_text(config_on_free_port.read_text().replace(
        url.rsplit(":", 1)[1], str(free_port())))
    result = markco("run", "--config", str(second))
    assert result.returncode == 1
    assert "another markco daemon" in result.stderr


def test_a_bad_config_exits_non_zero_naming_the_key(write_config: Callable[..., Path]) -> None:
    path = write_config('[storage.sqlite]\nreaders = "many"\n')
    result = markco("run", "--config", str(path))
    assert result.returncode == 2
    assert "[storage.sqlite] readers: expected an integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_secret_variable_exits_non_zero_naming_the_key(
        write_config: Callable[..., Path]) -> None:
    path = write_config('[storage]\nprovider = "postgres"\n'
                        '[storage.postgres]\ndsn_env = "MARKCO_TEST_NO_SUCH_VAR"\n')
    env = {k: v for k, v in os.environ.items() if k != "MARKCO_TEST_NO_SUCH_VAR"}
    result = markco("check-config", str(path), env=env)
    assert result.returncode == 2
    assert "dsn_env" in result.stderr and "MARKCO_TEST_NO_SUCH_VAR is not set" in result.stderr


def test_check_config_accepts_the_embedded_default() -> None:
    result = markco("check-config", "config/local.toml")
    assert result.returncode == 0, result.stderr
    assert "storage: sqlite" in result.stdout


def test_plugins_lists_builtins_and_entry_points_with_their_hooks() -> None:
    result = markco("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["sqlite"]["source"] == "built-in"
    assert "markco_storage_providers" in plugins["sqlite"]["hooks"]
    assert plugins["postgres"]["source"].startswith("entry point")
    assert "markco_storage_providers" in plugins["postgres"]["hooks"]


def test_db_upgrade_then_users_list(write_config: Callable[..., Path]) -> None:
    path = write_config("")
    first = markco("db", "upgrade", "--config", str(path))
    assert first.returncode == 0, first.stderr
    assert "applied schema migrations" in first.stdout
    again = markco("db", "upgrade", "--config", str(path))
    assert "up to date" in again.stdout
    users = markco("users", "list", "--config", str(path), "--json")
    assert users.returncode == 0, users.stderr
    assert json.loads(users.stdout) == []
