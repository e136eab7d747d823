"""`markco run` refuses a busy port and a bad data dir at once, with one line naming what is
wrong and how to fix it, and a non-zero exit (issue 11, defects 6 and 7) — before storage,
compute or any service starts."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from markco_trio.testing.fault_injection import small_tmpfs
from markco_trio.testing.network import free_port

ROOT = Path(__file__).resolve().parent.parent


def run(config: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "markco_trio", "run", "--config",
                             str(config)], capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    return result, time.monotonic() - started


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    port = free_port()
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        yield port


def test_a_busy_port_ends_the_start_at_once_with_one_line(
        write_config: Callable[[str], Path], busy_port: int, tmp_path: Path) -> None:
    config = write_config(f'[server]\nlisten = "127.0.0.1:{busy_port}"\ndata_dir = "data"\n')
    result, took = run(config)
    assert result.returncode == 1 and took < 10
    line = one_line(result.stderr)
    assert f"cannot listen on 127.0.0.1:{busy_port}: the address is already in use" in line
    assert "set [server] listen to a free port" in line
    assert not (config.parent / "data" / "markco.db").exists()  # storage was never opened


def test_a_data_dir_that_is_a_file_is_refused_with_one_line(
        write_config: Callable[[str], Path], tmp_path: Path) -> None:
    config = write_config(f'[server]\nlisten = "127.0.0.1:{free_port()}"\n'
                          f'data_dir = "data"\n')
    (config.parent / "data").write_text("not a directory")
    result, _ = run(config)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"data_dir {config.parent / 'data'} is a file, not a directory" in line


@pytest.mark.system
def test_a_data_dir_that_cannot_be_created_is_refused_with_one_line(
        write_config: Callable[[str], Path], tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "ro", read_only=True) as parent:
        config = write_config(f'[server]\nlisten = "127.0.0.1:{free_port()}"\n'
                              f'data_dir = "{parent / "data"}"\n')
        result, _ = run(config)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"cannot create data_dir {parent / 'data'}: {parent} is on a read-only" in line
    assert "set [server] data_dir to another directory" in line


@pytest.mark.system
def test_a_data_dir_that_is_not_writable_is_refused_with_one_line(
        write_config: Callable[[str], Path], tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "ro", read_only=True, make=("data",)) as parent:
        config = write_config(f'[server]\nlisten = "127.0.0.1:{free_port()}"\n'
                              f'data_dir = "{parent / "data"}"\n')
        result, _ = run(config)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"data_dir {parent / 'data'} is on a read-only file system" in line


@pytest.mark.system
def test_a_database_on_a_read_only_file_system_is_refused_with_one_line(
        write_config: Callable[[str], Path], tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "db", read_only=True) as db:
        config = write_config(f'[server]\nlisten = "127.0.0.1:{free_port()}"\n'
                              f'data_dir = "data"\n\n[storage.sqlite]\n'
                              f'path = "{db / "markco.db"}"\n')
        result, took = run(config)
    assert result.returncode == 1 and took < 15
    line = one_line(result.stderr)
    assert "database is read-only" in line and str(db / "markco.db") in line
