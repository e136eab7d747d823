"""Moves between hosts, end to end: the markco daemon on two podman hosts of this machine (two
`podman system service`s with their own storage, networks and sockets — see `hosts.py`), the
real `criu` checkpointer, a user reached through the front door.

- A move keeps `x = 42` (through the proxy) and the source container is gone.
- A failure at each step (dump, transfer, restore, switch, cleanup) leaves exactly one working
  runtime that still has `x`; the operation log and the daemon's log say what happened.
- `kill -9` of the daemon at each step: after a restart the move is finished or rolled back,
  never two runtimes, never none.
- A drain moves three users (one asleep) off a host with their state.

Failures are injected through `MARKCO_FAULT_MOVE` (moves.py: raise as a step begins, or kill
the daemon there), since a real engine cannot be made to fail at one exact step on demand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from markco_criu.podman import criu_version
from markco_docker import localimage
from markco_docker.testing import (
    PodmanUnavailable,
    local_images_fixture,
    purge_deployment,
    running_podman_service,
)

from markco_trio.builtin.auth.tokens import hash_token, new_api_token
from markco_trio.storage.sqlite import SqliteStorage
from markco_trio.testing.network import free_port
from markco_trio.testing.system import missing_system
from tests.compute.harness import plugin_modules
from tests.compute.test_daemon_restart import DaemonProcess
from tests.lifecycle.test_checkpoint_e2e import Markco

from .hosts import ROOT, second_podman_host

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def podman_engine_url() -> Iterator[str]:
    """Host `a`: a podman service on the machine's default storage (the local images)."""
    if criu_version() is None:
        missing_system("CRIU", "run `scripts/setup-criu` as root")
    try:
        with running_podman_service(containers_conf=ROOT / "config" / "containers.conf") as url:
            yield url
    except PodmanUnavailable as exc:
        missing_system("podman", str(exc))


local_image_mounts = local_images_fixture(scope="module")


@pytest.fixture(scope="module")
def host_b(local_image_mounts: list[str]) -> Iterator[str]:
    """Host `b`: a second podman service, storage and networks of its own."""
    try:
        with second_podman_host() as url:
            yield url
    except PodmanUnavailable as exc:
        missing_system("podman", str(exc))


def config_text(port: int, data_dir: Path, deployment: str, a: str, b: str,
                mounts: list[str]) -> str:
    return textwrap.dedent(f"""\
        [server]
        listen = "127.0.0.1:{port}"
        public_url = "http://127.0.0.1:{port}"
        data_dir = "{data_dir}"
        deployment_id = "{deployment}"
        drain_seconds = 1

        [plugins]
        modules = {json.dumps(plugin_modules("markco_trio.builtin.auth"))}

        [auth]
        login_link = "never"

        [compute]
        backend = "docker"

        [compute.docker]
        engine_url = "{a}"
        host_name = "a"
        runtime_image = "{localimage.RUNTIME_TAG}"
        editor_image = "{localimage.EDITOR_TAG}"
        mounts = {json.dumps(mounts)}

        [[compute.docker.hosts]]
        name = "b"
        engine_url = "{b}"

        [checkpoint]
        provider = "criu"

        [workloads]
        start_on_login = false
        ready_timeout = 60.0
        stop_timeout = 2.0
        on_shutdown = "keep"

        [workloads.plans.free]
        memory_mib = 512
        cpus = 1.0
        """)


class Deployment:
    """A markco daemon over hosts `a` and `b`, users with API tokens, an admin token."""

    def __init__(self, daemon: DaemonProcess, data_dir: Path, hosts: dict[str, str]) -> None:
        self.daemon, self.data_dir, self.hosts = daemon, data_dir, hosts
        self.admin: dict[str, str] = {}

    async def user(self, username: str, *, admin: bool = False) -> Markco:
        token = new_api_token()
        async with SqliteStorage(self.data_dir / "markco.db") as storage:
            user = await storage.create_user(username=username, email=None, name=username,
                                             avatar_url=None, now=1.0)
            if admin:
                user = await storage.update_user(user.id, is_admin=True)
            await storage.create_api_token(
                user_id=user.id, name="t", token_hash=hash_token(token),
                scopes=("user", "admin") if admin else ("user",), expires_at=None, now=1.0)
        who = Markco(self.daemon, self.data_dir)
        who.user_id, who.headers = user.id, {"Authorization": f"Bearer {token}"}
        return who

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.daemon.base, trust_env=False, timeout=180,
                                     headers=self.admin) as http:
            return await http.request(method, f"/api/v1{path}", **kwargs)

    async def move(self, user: Markco, to: str) -> httpx.Response:
        return await self.call("POST", f"/users/{user.user_id}/runtimes/move", json={"to": to})

    async def runtimes_on(self, host: str, user: Markco, *, running: bool) -> list[str]:
        """The user's runtime containers on `host` (`running`: only running ones)."""
        filters: dict[str, list[str]] = {"label": [
            f"markco.deployment={self.daemon.deployment}", f"markco.user={user.user_id}",
            "markco.role=runtime"]}
        if running:
            filters["status"] = ["running"]
        transport = httpx.AsyncHTTPTransport(uds=self.hosts[host].removeprefix("unix://"))
        async with httpx.AsyncClient(transport=transport, base_url="http://podman",
                                     trust_env=False) as engine:
            answer = await engine.get("/containers/json", params={
                "filters": json.dumps(filters), "all": str(not running).lower()})
        return sorted(c["Id"] for c in answer.json())

    async def where(self, user: Markco) -> dict[str, list[str]]:
        """Host → the user's runtime containers there (any state)."""
        return {host: await self.runtimes_on(host, user, running=False) for host in self.hosts}

    async def record(self, user: Markco) -> dict[str, Any]:
        return (await user.records())["runtime"]

    async def migrations(self) -> list[dict[str, Any]]:
        answer = await self.call("GET", "/migrations")
        assert answer.status_code == 200, answer.text
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    async def operations(self, user: Markco) -> list[tuple[str, str, str, str | None]]:
        async with SqliteStorage(self.data_dir / "markco.db") as storage:
            ops = await storage.list_operations(user_id=user.user_id)
        return [(op.kind, op.step, op.state.value, op.error) for op in ops]

    async def restart(self) -> None:
        if self.daemon.process is not None and self.daemon.process.returncode is None:
            await self.daemon.kill9()
        await self.daemon.start()


@pytest.fixture
async def deployment(data_dir: Path, podman_engine_url: str, host_b: str,
                     local_image_mounts: list[str],
                     deployment_ids: Callable[[str], str]) -> AsyncIterator[Deployment]:
    port = free_port()
    name = deployment_ids("mv")
    config = data_dir.parent / f"{data_dir.name}-moves.toml"
    config.write_text(config_text(port, data_dir, name, podman_engine_url, host_b,
                                  local_image_mounts))
    daemon = DaemonProcess(config, port, data_dir.parent / f"{data_dir.name}-moves.log", name)
    await daemon.start()
    running = Deployment(daemon, data_dir, {"a": podman_engine_url, "b": host_b})
    running.admin = (await running.user("root", admin=True)).headers
    try:
        yield running
    finally:
        with trio.CancelScope(shield=True):
            if daemon.process is not None and daemon.process.returncode is None:
                await daemon.kill9()
            for url in running.hosts.values():
                await trio.to_thread.run_sync(purge_deployment, url, name)


HISTORY_NOTICE = "The history saving thread hit an unexpected error"


async def x_of(user: Markco) -> str:
    """`print(x)` through the proxy. IPython's notice that its history database became
    read-only (the restored process's handle on it, see the README) is not the runtime's
    state: it is dropped."""
    out = await user.execute("print(x)")
    return "".join(line for line in out.splitlines(keepends=True)
                   if not line.startswith(HISTORY_NOTICE))


async def started_with_x(d: Deployment, username: str = "ada") -> Markco:
    user = await d.user(username)
    await user.navigate_until_ready()
    assert await user.execute("x = 42\nprint('set')") == "set\n"
    assert (await d.record(user))["host"] == "a"
    return user


async def markco_cli(d: Deployment, *argv: str) -> subprocess.CompletedProcess[bytes]:
    """The `markco` command against the deployment's config (the daemon running)."""
    return await trio.run_process(
        [sys.executable, "-m", "markco_trio", *argv, "--config", str(d.daemon.config)],
        capture_stdout=True, capture_stderr=True, check=False, cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)})


def log_text(d: Deployment) -> str:
    return d.daemon.log.read_text(errors="replace")


# ------------------------------------------------------------------------------ the move


async def test_a_move_keeps_x_through_the_proxy_and_the_source_is_gone(
        deployment: Deployment) -> None:
    d = deployment
    ada = await started_with_x(d)
    [source] = await d.runtimes_on("a", ada, running=True)
    moved = await d.move(ada, "b")
    assert moved.status_code == 200, moved.text
    assert await x_of(ada) == "42\n"
    assert await d.where(ada) == {"a": [], "b": await d.runtimes_on("b", ada, running=True)}
    assert source not in (await d.where(ada))["b"]
    record = await d.record(ada)
    assert record["host"] == "b" and record["state"] == "running"
    [migration] = await d.migrations()
    assert migration["status"] == "done" and migration["error"] is None
    assert migration["from_host"] == "a" and migration["to_host"] == "b"
    for key in ("checkpoint_ms", "transfer_ms", "restore_ms", "switch_ms"):
        assert isinstance(migration[key], int) and migration[key] >= 0, (key, migration)
    assert migration["bytes"] > 1 << 20  # a Python process's memory, not an empty stream
    # And back, by the operator's command: nothing was special about `a`.
    back = await markco_cli(d, "runtimes", "move", "ada", "--to", "a")
    assert back.returncode == 0, back.stderr
    assert b"ada: moved to a" in back.stdout
    assert await x_of(ada) == "42\n"
    assert (await d.where(ada))["b"] == []
    listed = await markco_cli(d, "hosts", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.decode().split()[:2] == ["a", "up"]


async def test_a_request_to_the_runtime_during_a_move_is_held_and_answered_by_the_target(
        deployment: Deployment) -> None:
    """Straight to the user's runtime front (the daemon's socket the editor uses), so that
    what is measured is the front's hold, not the editor's own restart on the target."""
    d = deployment
    ada = await started_with_x(d)
    front = d.data_dir / "fronts" / ada.user_id / "runtime.sock"
    answers: list[httpx.Response] = []

    async def move() -> None:
        answers.append(await d.move(ada, "b"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(move)
        with trio.fail_after(30):  # the move has begun: the front holds the runtime's requests
            while True:
                state = (await ada.api("GET", "/runtimes")).json()["state"]
                if state["operation"] == "move":
                    break
                await trio.sleep(0.02)
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(front)),
                                     base_url="http://runtime", timeout=60) as http:
            held = await http.post("/mrp/v1/execute", json={"code": "print(x + 1)"})
    assert answers[0].status_code == 200, answers[0].text
    assert held.status_code == 200, held.text
    lines = held.json()["stdout"].splitlines()
    assert [line for line in lines if not line.startswith(HISTORY_NOTICE)] == ["43"]
    assert (await d.where(ada))["a"] == []


async def test_a_move_needs_an_administrator_and_a_known_host(deployment: Deployment) -> None:
    d = deployment
    ada = await started_with_x(d)
    async with ada.client() as http:
        refused = await http.post(f"/api/v1/users/{ada.user_id}/runtimes/move",
                                  json={"to": "b"})
    assert refused.status_code == 403
    unknown = await d.move(ada, "nowhere")
    assert unknown.status_code == 404 and "a, b" in unknown.json()["error"]["message"]
    assert (await d.call("POST", f"/users/{ada.user_id}/runtimes/move",
                         json={})).status_code == 400
    assert (await d.record(ada))["host"] == "a"


# ------------------------------------------------------------------------------ failures


@pytest.mark.parametrize("step", ["dump", "transfer", "restore", "switch"])
async def test_a_failure_before_the_switch_leaves_the_source_working_with_x(
        deployment: Deployment, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d = deployment
    monkeypatch.setenv("MARKCO_FAULT_MOVE", step)
    await d.restart()
    ada = await started_with_x(d)
    [source] = await d.runtimes_on("a", ada, running=True)
    failed = await d.move(ada, "b")
    assert failed.status_code == 409, failed.text
    assert f"failed at {step}" in failed.json()["error"]["message"]
    assert await x_of(ada) == "42\n"
    assert await d.where(ada) == {"a": [source], "b": []}
    assert (await d.record(ada))["host"] == "a"
    moves = [op for op in await d.operations(ada) if op[0] == "move"]
    assert moves[-1][2] == "rolled_back" and f"failed at {step}" in (moves[-1][3] or "")
    assert f"failed at {step}" in log_text(d)
    assert (await d.migrations())[0]["status"] == "rolled_back"


async def test_a_failed_cleanup_keeps_the_target_and_the_next_start_removes_the_source(
        deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    d = deployment
    monkeypatch.setenv("MARKCO_FAULT_MOVE", "cleanup")
    await d.restart()
    ada = await started_with_x(d)
    moved = await d.move(ada, "b")
    assert moved.status_code == 200, moved.text
    assert await x_of(ada) == "42\n"
    # The source is stopped (frozen by the dump, never resumed): one WORKING runtime.
    assert await d.runtimes_on("a", ada, running=True) == []
    assert len(await d.runtimes_on("b", ada, running=True)) == 1
    assert "could not be removed yet" in log_text(d)
    monkeypatch.delenv("MARKCO_FAULT_MOVE")
    await d.restart()
    assert (await d.where(ada))["a"] == []
    assert await x_of(ada) == "42\n"


@pytest.mark.parametrize("step", ["dump", "transfer", "restore", "switch", "cleanup"])
async def test_a_daemon_killed_during_a_move_ends_with_exactly_one_runtime_with_x(
        deployment: Deployment, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d = deployment
    monkeypatch.setenv("MARKCO_FAULT_MOVE", f"kill:{step}")
    await d.restart()
    ada = await started_with_x(d)
    with pytest.raises(httpx.TransportError):
        await d.move(ada, "b")
    assert d.daemon.process is not None
    await d.daemon.process.wait()
    monkeypatch.delenv("MARKCO_FAULT_MOVE")
    await d.daemon.start()
    running = {host: await d.runtimes_on(host, ada, running=True) for host in d.hosts}
    assert sorted(len(found) for found in running.values()) == [0, 1], running
    record = await d.record(ada)
    [host] = [h for h, found in running.items() if found]
    assert record["host"] == host
    # Rolled back before the switch; at cleanup it had committed.
    assert host == ("b" if step == "cleanup" else "a") or step == "switch"
    assert await x_of(ada) == "42\n"
    assert all(found == [] for h, found in (await d.where(ada)).items() if h != host)


# ------------------------------------------------------------------------------ drain


async def test_draining_a_host_moves_three_users_one_asleep_with_their_state(
        deployment: Deployment) -> None:
    d = deployment
    users = [await started_with_x(d, name) for name in ("ann", "bob", "cy")]
    asleep = users[2]
    assert (await asleep.api("POST", "/runtimes/sleep")).status_code == 200
    drained = await d.call("POST", "/hosts/a/drain")
    assert drained.status_code == 200, drained.text
    assert set(drained.json()["users"].values()) == {"moved to b"}
    for user in users:
        assert (await d.record(user))["host"] == "b"
    hosts = {h["name"]: h for h in (await d.call("GET", "/hosts")).json()["items"]}
    assert hosts["a"]["state"] == "draining"
    await asleep.navigate_until_ready()  # the wake lands on b
    for user in users:
        assert await x_of(user) == "42\n"
        assert (await d.where(user))["a"] == []
        assert len(await d.runtimes_on("b", user, running=True)) == 1

