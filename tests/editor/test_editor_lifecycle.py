"""The editor as a process: started from the contract's environment, stopped by SIGTERM, and
packaged apart from the daemon."""

from __future__ import annotations

import ast
import signal
import subprocess
import tomllib
from pathlib import Path

import trio
from editor_testing import EDITOR_COMMAND, StartEditor, contract_env, free_port

EDITOR_DIST = Path(__file__).resolve().parents[2] / "editor"


async def test_sigterm_stops_the_editor_promptly_with_status_0(start_editor: StartEditor) -> None:
    editor = await start_editor()
    # An open WebSocket must not hold the exit up. (A hand-made handshake: trio-websocket
    # leaks its socket when the server vanishes under it.)
    async with await trio.open_tcp_stream("127.0.0.1", editor.port) as stream:
        await stream.send_all(
            b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        assert (await stream.receive_some()).startswith(b"HTTP/1.1 101")
        editor.process.send_signal(signal.SIGTERM)
        with trio.fail_after(2):
            await editor.process.wait()
    assert editor.process.returncode == 0


async def test_a_bad_variable_is_named_and_exits_2(user_dir: Path) -> None:
    env = contract_env(user_dir, free_port(), BASE_PATH="/u/<script>/")
    result = await trio.run_process(
        [EDITOR_COMMAND], env=env, capture_stderr=True, check=False,
        stdout=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert b"BASE_PATH=" in result.stderr


def test_the_editor_never_imports_the_daemon() -> None:
    package = EDITOR_DIST / "markco_editor"
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "markco_trio" for n in names), source
    project = tomllib.loads((EDITOR_DIST / "pyproject.toml").read_text())["project"]
    assert project["name"] == "markco-editor"
    assert not any(dep.lower().startswith("markco") for dep in project["dependencies"])
