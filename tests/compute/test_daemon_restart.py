"""The daemon is killed with -9 while two users run: their workloads live on, and the daemon,
started again, finds them — no duplicates, editors still answering, runtimes still holding
their variables. A runtime killed afterwards is restarted and the event recorded."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from markco_trio.builtin.auth.tokens import hash_token, new_api_token
from markco_trio.builtin.process_backend import ProcessBackend, ProcessOptions
from markco_trio.storage.sqlite import SqliteStorage
from markco_trio.testing.dialing import workload_client
from markco_trio.testing.network import free_port
from markco_trio.testing.workload_python import WorkloadPython

from .harness import config_text, plugin_modules
from .polling import eventually_async

pytestmark = pytest.mark.usefixtures("cleanup_workloads")
ROOT = Path(__file__).resolve().parents[2]


class DaemonProcess:
    """`markco run` as a real process of its own (so it can be killed with -9)."""

    def __init__(self, config: Path, port: int, log: Path, deployment: str) -> None:
        self.config, self.port, self.log = config, port, log
        self.deployment = deployment
        self.process: trio.Process | None = None
        self.base = f"http://127.0.0.1:{port}"

    async def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as log:  # noqa: ASYNC230 - opening a log file, instantly
            self.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "markco_trio", "run", "--config", str(self.config)],
                stdin=None, stdout=log, stderr=log, env=env, cwd=str(ROOT),
                start_new_session=True)
        async with httpx.AsyncClient(trust_env=False) as http:

            async def ready() -> bool:
                try:
                    return (await http.get(f"{self.base}/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            with trio.fail_after(30):
                while not await ready():
                    assert self.process.returncode is None, self.log.read_text()[-3000:]
                    await trio.sleep(0.05)

    async def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


@pytest.fixture
async def daemon_process(data_dir: Path, wpython: WorkloadPython,
                         deployment_ids: Callable[[str], str]) -> AsyncIterator[DaemonProcess]:
    port = free_port()
    deployment = deployment_ids("k9")
    config = data_dir.parent / f"{data_dir.name}-daemon.toml"
    config.write_text(config_text(
        data_dir, deployment, wpython, listen=f"127.0.0.1:{port}",
        modules=plugin_modules("markco_trio.builtin.auth"),
        extra='\n[auth]\nlogin_link = "never"\n'))
    daemon = DaemonProcess(config, port, data_dir.parent / f"{data_dir.name}-daemon.log",
                           deployment)
    try:
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.returncode is None:
            with trio.CancelScope(shield=True):
                await daemon.kill9()


async def test_a_killed_daemon_finds_both_users_workloads_again(
        daemon_process: DaemonProcess, data_dir: Path) -> None:
    await daemon_process.start()
    headers: dict[str, dict[str, str]] = {}
    async with SqliteStorage(data_dir / "markco.db") as storage:
        users = [await storage.create_user(username=name, email=None, name=name,
                                           avatar_url=None, now=1.0) for name in ("ann", "ben")]
        for user in users:
            token = new_api_token()
            await storage.create_api_token(user_id=user.id, name="t", token_hash=hash_token(token),
                                           scopes=("user",), expires_at=None, now=1.0)
            headers[user.id] = {"Authorization": f"Bearer {token}"}

    async def records(user_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=daemon_process.base, trust_env=False,
                                     timeout=30, headers=headers[user_id]) as api:
            items = (await api.get(f"/api/v1/users/{user_id}/runtimes")).json()["items"]
        return {r["role"]: r for r in items}

    async def execute(user_id: str, code: str) -> str:
        socket = data_dir / "fronts" / user_id / "runtime.sock"
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(socket)),
                                     base_url="http://runtime", timeout=30,
                                     trust_env=False) as front:
            stdout: str = (await front.post("/mrp/v1/execute", json={"code": code})
                           ).json()["stdout"]
        return stdout

    async with httpx.AsyncClient(base_url=daemon_process.base, trust_env=False,
                                 timeout=30) as api:
        for user in users:
            started = await api.post(f"/api/v1/users/{user.id}/runtimes/start?wait=1",
                                     headers=headers[user.id])
            assert started.status_code == 200, started.text
    before = {user.id: await records(user.id) for user in users}
    await execute(users[0].id, "note = 'still here'")

    await daemon_process.kill9()
    for user in users:  # nobody watches, all still serve
        async with workload_client(before[user.id]["editor"]["address"]) as http:
            assert (await http.get("/health")).status_code == 200

    await daemon_process.start()
    after = {user.id: await records(user.id) for user in users}
    for user in users:
        for role in ("runtime", "editor"):
            assert after[user.id][role]["id"] == before[user.id][role]["id"]
            assert after[user.id][role]["address"] == before[user.id][role]["address"]
    async with ProcessBackend(ProcessOptions(), deployment_id=daemon_process.deployment,
                              data_dir=data_dir) as backend:
        found = await backend.list()
    assert len(found) == 4 and all(i.status == "running" for i in found)
    for user in users:
        async with workload_client(after[user.id]["editor"]["address"]) as http:
            assert (await http.get("/health")).status_code == 200
    assert await execute(users[0].id, "print(note)") == "still here\n"

    # A runtime killed now is noticed, restarted, and the events are in the log.
    runtime_pid = find_payload(data_dir, before[users[1].id]["runtime"]["handle"])
    os.kill(runtime_pid, signal.SIGKILL)
    async with SqliteStorage(data_dir / "markco.db") as storage:

        async def kinds() -> list[str]:
            events = await storage.list_events(user_id=users[1].id, limit=100)
            return [e.type for e in events]

        async def restarted() -> bool:
            return "runtime.restarted" in await kinds()

        await eventually_async(restarted, within=20, what="runtime.restarted in the event log")
        assert "runtime.crashed" in await kinds()
    assert await execute(users[1].id, "print('back')") == "back\n"


def find_payload(data_dir: Path, handle: str) -> int:
    """The mrmd-python process of a workload (by its cgroup or session)."""
    import json

    state = json.loads((data_dir / "workloads" / handle / "workload.json").read_text())
    parents: dict[int, int] = {}
    argvs: dict[int, list[bytes]] = {}
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            argvs[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])

    def descends(pid: int) -> bool:  # from the workload's root process
        while pid > 1:
            if pid == state["pid"]:
                return True
            pid = parents.get(pid, 0)
        return False

    for pid, argv in argvs.items():
        if descends(pid) and not argv[0].endswith((b"sh", b"unshare", b"setpriv", b"setsid")) \
                and any(b"mrmd-python" in a for a in argv):
            return pid
    raise AssertionError(f"no mrmd-python process for {handle}")
