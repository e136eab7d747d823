"""The real thing, for the data plane's end-to-end tests: the Daemon with the built-in compute
plugin and the process backend, starting real `mrmd-python` runtimes and the built-in editor
(`markco-editor`) per user, each with its runtime front. Headless Chromium is
`markco_trio.testing.chromium`.

The process backend runs workloads as `nobody` when the tests run as root, so everything lives
under a directory in /tmp that account can traverse (`markco_trio.testing.workload_python`
makes a Python it can run). Workloads are detached from the daemon by design: `RealMarkco.stop`
stops every user it started through compute itself, and `kill_leftovers` kills, by pid, any
workload process still running from the test's own directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from markco_trio.builtin.auth.authority import SessionAuthority
from markco_trio.builtin.auth.login_links import ensure_user
from markco_trio.builtin.compute.service import ComputeService
from markco_trio.builtin.process_backend.cgroups import CGROUP_MOUNT, CONTROLLERS
from markco_trio.config import load_config
from markco_trio.daemon import Daemon
from markco_trio.records import User
from markco_trio.testing.workload_python import WorkloadPython, workload_python

from .conftest import eventually, free_port


@dataclass
class RealMarkco:
    """A running daemon with real compute."""

    daemon: Daemon
    port: int
    root: Path
    started: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def compute(self) -> ComputeService:
        compute = self.daemon.ctx.compute
        assert isinstance(compute, ComputeService)
        return compute

    @property
    def authority(self) -> SessionAuthority:
        authority = self.daemon.ctx.sessions
        assert isinstance(authority, SessionAuthority)
        return authority

    async def user(self, name: str, *, admin: bool = False) -> User:
        storage = self.daemon.ctx.require_storage()
        user, _ = await ensure_user(storage, self.daemon.ctx.clock, name, admin=admin)
        self.started.append(user.id)
        return user

    async def cookie(self, user: User) -> dict[str, str]:
        token, _ = await self.authority.open_session(user)
        return {"Cookie": f"{self.authority.cookie_name}={token}"}

    async def stop(self) -> None:
        """Stop the workloads of every user this test made (they outlive the daemon)."""
        for user_id in self.started:
            if self.compute.state_nowait(user_id).editor.state is not None:
                with trio.move_on_after(15):
                    await self.compute.stop(user_id, reason="test teardown")


def compute_root() -> Path:
    """A directory under /tmp that the workloads' account can traverse."""
    root = Path("/tmp") / f"markco-dataplane-{uuid.uuid4().hex[:10]}"
    root.mkdir(mode=0o711)
    os.chmod(root, 0o711)
    return root


@asynccontextmanager
async def real_markco(nursery: trio.Nursery) -> AsyncIterator[RealMarkco]:
    """Start the daemon with compute on the process backend; stop everything afterwards."""
    root = compute_root()
    deployment = f"dp-{uuid.uuid4().hex[:10]}"
    try:
        wpython = workload_python(root)
        port = free_port()
        data_dir = root / "data"
        data_dir.mkdir(mode=0o711)
        config = root / "markco.toml"
        config.write_text(config_text(port, data_dir, deployment, wpython))
        loaded, pm = load_config(config, entry_points=False)
        daemon = Daemon(loaded, pm)
        with trio.fail_after(30):
            await nursery.start(partial(daemon.run, handle_signals=False))
            await eventually(lambda: daemon.readiness.snapshot().ready, within=30)
        markco = RealMarkco(daemon, port, root)
        try:
            yield markco
        finally:
            await markco.stop()
    finally:
        kill_leftovers(root)
        remove_cgroups(deployment)
        shutil.rmtree(root, ignore_errors=True)


def config_text(port: int, data_dir: Path, deployment: str, wpython: WorkloadPython) -> str:
    workloads = {
        "runtime_command": [wpython.script("mrmd-python"), "--foreground", "--managed",
                            "--host", "{host}", "--port", "{port}", "--cwd", "{user_dir}"],
        "editor_command": [wpython.script("markco-editor")],
        "start_on_login": False,
        "watch_interval": 0.2,
        "ready_timeout": 30.0,
        "stop_timeout": 2.0,
    }
    lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in workloads.items())
    return textwrap.dedent(f"""\
        [server]
        listen = "127.0.0.1:{port}"
        public_url = "http://127.0.0.1:{port}"
        data_dir = "{data_dir}"
        deployment_id = "{deployment}"
        drain_seconds = 1

        [compute]
        backend = "process"

        [auth]
        login_link = "never"

        [workloads]
        """) + lines + "\n"


def kill_leftovers(root: Path) -> None:
    """SIGKILL, by pid, the workload session leaders still running from `root`."""
    marker = os.fsencode(str(root)) + b"/"
    killed = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if marker in argv and int(fields[3]) == pid:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in killed):
        time.sleep(0.02)


def remove_cgroups(deployment: str) -> None:
    """Remove the cgroups the process backend made for `deployment` (empty by now)."""
    deadline = time.monotonic() + 2
    for controller in CONTROLLERS:
        path = CGROUP_MOUNT / controller / "markco" / deployment
        while path.is_dir():
            for child in [c for c in path.iterdir() if c.is_dir()]:
                try:
                    child.rmdir()
                except OSError:
                    pass
            try:
                path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
