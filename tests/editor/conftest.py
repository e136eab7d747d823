"""Fixtures for the built-in editor: the editor in-process and as a real subprocess, a real
`mrmd-python`, and in front of it the TEST-ONLY stand-in for the daemon's runtime front (a
unix-socket -> TCP forwarder, `editor_testing.RuntimeFront`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from editor_testing import (
    EDITOR_COMMAND,
    VENV_BIN,
    EditorProcess,
    RawRequest,
    RuntimeFront,
    StartEditor,
    contract_env,
    free_port,
)
from markco_editor import EditorSettings, serve_editor

from markco_trio.testing.system import missing_system

# -- a real runtime --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mrmd_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real `mrmd-python` for the whole session (it takes a second to start); its port.

    It ignores SIGTERM in `--managed` mode, so teardown kills its process group with SIGKILL.
    """
    exe = shutil.which("mrmd-python", path=str(VENV_BIN))
    if exe is None:
        missing_system("mrmd-python", "scripts/bootstrap installs it with markco")
    cwd = tmp_path_factory.mktemp("runtime")
    port = free_port()
    log = (cwd / "mrmd-python.log").open("wb")
    proc = subprocess.Popen(
        [exe, "--foreground", "--managed", "--host", "127.0.0.1", "--port", str(port),
         "--cwd", str(cwd)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/mrp/v1/capabilities", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mrmd-python did not start: {(cwd / 'mrmd-python.log').read_text()}"
                    ) from None
                time.sleep(0.1)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


# -- the runtime front stand-in ---------------------------------------------------------------


@pytest.fixture
async def runtime_front(
    tmp_path: Path, mrmd_port: int, nursery: trio.Nursery
) -> RuntimeFront:
    """A runtime front in front of the session's `mrmd-python`."""
    front = RuntimeFront(tmp_path / "runtime.sock", mrmd_port)
    await nursery.start(front.serve)
    return front


# -- the editor ------------------------------------------------------------------------------


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """The user's files: empty to start with."""
    path = tmp_path / "users" / "alice"
    path.mkdir(parents=True)
    return path


@pytest.fixture
async def serve_in_process(
    user_dir: Path, nursery: trio.Nursery
) -> Callable[..., Awaitable[str]]:
    """`base_url = await serve(**env)`: the editor served in this test's trio run, on a free
    port, from the contract's environment plus `env` — quicker than a subprocess."""

    async def serve(**env: str) -> str:
        settings = EditorSettings.from_environ({**contract_env(user_dir, 0), **env})
        port = await nursery.start(serve_editor, settings)
        return f"http://127.0.0.1:{port}"

    return serve


@pytest.fixture
async def editor(
    serve_in_process: Callable[..., Awaitable[str]],
) -> AsyncIterator[httpx.AsyncClient]:
    """The editor in-process without a runtime, and a client for it."""
    base_url = await serve_in_process()
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        yield client


@pytest.fixture
async def start_editor(
    user_dir: Path, tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[StartEditor]:
    """Start `markco-editor` as a real subprocess with the contract's environment (plus
    `extra`); it is stopped with SIGTERM at teardown."""
    started: list[trio.Process] = []

    async def start(**extra: str) -> EditorProcess:
        port = free_port()
        log_path = tmp_path / f"editor-{port}.log"
        with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    [EDITOR_COMMAND],
                    env=contract_env(user_dir, port, **extra),
                    cwd=str(user_dir),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            )
        started.append(process)
        base_url = f"http://127.0.0.1:{port}"
        with trio.fail_after(10):
            while True:
                try:
                    async with httpx.AsyncClient() as client:
                        if (await client.get(base_url + "/health")).status_code == 200:
                            break
                except httpx.HTTPError:
                    pass
                if process.returncode is not None:
                    raise RuntimeError(f"the editor exited: {log_path.read_text()}")
                await trio.sleep(0.05)
        return EditorProcess(process, port, base_url)

    yield start
    for process in started:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with trio.fail_after(5):
            await process.wait()


@pytest.fixture
def raw_request() -> RawRequest:
    """`await raw_request(port, head)`: send a hand-written HTTP/1.1 request (so no client
    normalises its path); the status and body."""
    return _raw_request


async def _raw_request(port: int, head: str) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head.encode("latin-1"))
        data = b""
        with trio.fail_after(5):
            async for chunk in stream:
                data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), body
