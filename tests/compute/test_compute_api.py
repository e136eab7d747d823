"""Compute through the daemon: a console-link login starts the runtime then the editor in the
background, a python block runs through the editor (which reaches the runtime only through the
runtime front); the `/api/v1` routes start, stop, restart, list and stream progress, for the
owner or an admin only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from markco_trio.builtin.auth.login_links import issue_login_link
from markco_trio.builtin.auth.tokens import hash_token, new_api_token
from markco_trio.builtin.compute import ComputeService
from markco_trio.config import load_config
from markco_trio.daemon import Daemon
from markco_trio.records import User
from markco_trio.testing.dialing import workload_client
from markco_trio.testing.network import free_port
from markco_trio.testing.workload_python import WorkloadPython

from .harness import config_text, plugin_modules
from .polling import eventually

pytestmark = pytest.mark.usefixtures("cleanup_workloads")


class Running:
    """An in-process daemon with auth and compute, and ways in."""

    def __init__(self, daemon: Daemon, port: int) -> None:
        self.daemon = daemon
        self.base = f"http://127.0.0.1:{port}"

    @property
    def compute(self) -> ComputeService:
        service = self.daemon.ctx.compute
        assert isinstance(service, ComputeService)
        return service

    async def user(self, username: str, *, admin: bool = False) -> User:
        storage = self.daemon.ctx.require_storage()
        return await storage.create_user(username=username, email=f"{username}@example.org",
                                         name=username.title(), avatar_url=None,
                                         is_admin=admin, now=self.daemon.ctx.clock.now())

    async def token(self, user: User) -> dict[str, str]:
        token = new_api_token()
        await self.daemon.ctx.require_storage().create_api_token(
            user_id=user.id, name="test", token_hash=hash_token(token),
            scopes=("user", "admin") if user.is_admin else ("user",), expires_at=None,
            now=self.daemon.ctx.clock.now())
        return {"Authorization": f"Bearer {token}"}

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, trust_env=False, timeout=30, **kwargs)


@pytest.fixture
async def running(data_dir: Path, wpython: WorkloadPython,
                  deployment_ids: Callable[[str], str]) -> AsyncIterator[Running]:
    port = free_port()
    path = data_dir.parent / f"{data_dir.name}-daemon.toml"
    path.write_text(config_text(
        data_dir, deployment_ids("api"), wpython, listen=f"127.0.0.1:{port}",
        modules=plugin_modules("markco_trio.builtin.auth"),
        extra='\n[auth]\nlogin_link = "never"\n'))
    config, pm = load_config(path, entry_points=False)
    daemon = Daemon(config, pm)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(
            lambda task_status: daemon.run(task_status=task_status, handle_signals=False))
        running = Running(daemon, bound)
        async with running.client() as http:
            await eventually(lambda: daemon.readiness.snapshot().ready, what="/readyz")
            assert (await http.get("/readyz")).status_code == 200
        yield running
        nursery.cancel_scope.cancel()


async def execute_in_editor(editor: tuple[str, int], code: str) -> str:
    """Run `code` as a python block through the editor's own API; return its stdout."""
    out = []
    async with workload_client(f"{editor[0]}:{editor[1]}") as http, http.stream(
            "POST", "/api/execute", json={"code": code}) as response:
        assert response.status_code == 200
        event = ""
        # Read to the end (the editor ends the stream after `done`): breaking out would leave
        # httpx's inner generators to the garbage collector.
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "stdout":
                out.append(json.loads(line.removeprefix("data: "))["content"])
    return "".join(out)


async def test_a_console_link_login_starts_compute_and_code_runs_through_the_editor(
        running: Running) -> None:
    user = await running.user("ada")
    storage = running.daemon.ctx.require_storage()
    link = await issue_login_link(storage, running.daemon.ctx.clock, user,
                                  public_url=running.base, minutes=5)
    async with running.client() as browser:
        started = trio.current_time()
        response = await browser.get(link.removeprefix(running.base))
        redirect_took = trio.current_time() - started
        assert response.status_code in (302, 303) and browser.cookies
        # The redirect did not wait for anything to start.
        assert redirect_took < 1.0
        assert not running.compute.state_nowait(user.id).ready
        # The dashboard's view of it: follow the progress until ready.
        events = []
        async with browser.stream("GET", f"/api/v1/users/{user.id}/progress?until=done",
                                  timeout=30) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
    assert events[-1]["phase"] == "ready"
    editor = running.compute.editor_address_nowait(user.id)
    assert editor is not None
    before = running.compute.front_statistics_nowait(user.id)
    assert before is not None and before.executions == 0
    stdout = await execute_in_editor(editor, "answer = 6 * 7\nprint('the answer is', answer)")
    assert stdout.replace("\r\n", "\n") == "the answer is 42\n"
    after = running.compute.front_statistics_nowait(user.id)
    assert after is not None and after.executions >= 1  # it went through the runtime front


async def test_two_concurrent_logins_start_one_runtime_and_one_editor(
        running: Running) -> None:
    user = await running.user("twice")
    ctx = running.daemon.ctx
    links = [await issue_login_link(ctx.require_storage(), ctx.clock, user,
                                    public_url=running.base, minutes=5) for _ in range(2)]
    async with running.client() as phone, running.client() as laptop, \
            trio.open_nursery() as nursery:
        for browser, link in zip((phone, laptop), links, strict=True):
            nursery.start_soon(browser.get, link.removeprefix(running.base))
    await eventually(lambda: running.compute.state_nowait(user.id).ready, within=20)
    assert ctx.backend is not None
    workloads = await ctx.backend.list(user_id=user.id)
    assert sorted(w.role.value for w in workloads) == ["editor", "runtime"]
    records = await ctx.require_storage().list_runtimes(user_id=user.id, live_only=False)
    assert len(records) == 2
    logins = await ctx.require_storage().list_events(user_id=user.id, type="auth.login")
    assert len(logins) == 2
    started = await ctx.require_storage().list_events(user_id=user.id, type="runtime.started")
    assert len(started) == 1


async def test_the_api_starts_lists_restarts_and_stops(running: Running) -> None:
    user = await running.user("grace")
    async with running.client(headers=await running.token(user)) as api:
        started = await api.post(f"/api/v1/users/{user.id}/runtimes/start?wait=1")
        assert started.status_code == 200, started.text
        assert started.json()["state"]["ready"] is True
        mine = (await api.get("/api/v1/runtimes")).json()["items"]
        assert sorted(r["role"] for r in mine) == ["editor", "runtime"]
        assert all(r["state"] == "running" and r["ready"] for r in mine)
        assert mine[0]["created_at"].endswith("Z")
        restarted = await api.post(f"/api/v1/users/{user.id}/runtimes/restart?wait=1")
        assert restarted.status_code == 200 and restarted.json()["state"]["ready"]
        logs = await api.get(f"/api/v1/users/{user.id}/runtimes/logs?role=runtime&tail=5")
        assert logs.status_code == 200
        stopped = await api.post(f"/api/v1/users/{user.id}/runtimes/stop")
        assert stopped.status_code == 200
        assert (await api.get("/api/v1/runtimes")).json()["items"] == []
        history = (await api.get(f"/api/v1/users/{user.id}/runtimes?all=1")).json()["items"]
        assert {r["state"] for r in history} == {"stopped"}


async def test_a_start_without_wait_answers_at_once_with_where_to_follow(
        running: Running) -> None:
    user = await running.user("hopper")
    async with running.client(headers=await running.token(user)) as api:
        response = await api.post(f"/api/v1/users/{user.id}/runtimes/start")
        assert response.status_code == 202
        assert response.json()["progress"] == f"/api/v1/users/{user.id}/progress"
        await eventually(lambda: running.compute.state_nowait(user.id).ready, within=20)


async def test_only_the_owner_or_an_admin_may_act(running: Running) -> None:
    owner, other = await running.user("owner"), await running.user("other")
    admin = await running.user("root", admin=True)
    path = f"/api/v1/users/{owner.id}/runtimes"
    async with running.client(headers={"Origin": running.base}) as anonymous:
        assert (await anonymous.get("/api/v1/runtimes")).status_code == 401
        assert (await anonymous.post(f"{path}/start")).status_code == 401
    async with running.client(headers=await running.token(other)) as api:
        assert (await api.post(f"{path}/start")).status_code == 403
        assert (await api.get(path)).status_code == 403
        assert (await api.get(f"/api/v1/users/{owner.id}/progress")).status_code == 403
    async with running.client(headers=await running.token(admin)) as api:
        assert (await api.get(path)).status_code == 200
        assert (await api.get("/api/v1/users/" + "f" * 32 + "/runtimes")).status_code == 404
        stopped = await api.post(f"{path}/stop")
        assert stopped.status_code == 200


async def test_without_a_backend_compute_stays_out_of_the_way(
        data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    path = data_dir.parent / f"{data_dir.name}-nobackend.toml"
    modules = plugin_modules()
    path.write_text(f"""[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
data_dir = "{data_dir}"

[plugins]
modules = {json.dumps(modules)}
""")
    config, pm = load_config(path, entry_points=False)
    daemon = Daemon(config, pm)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: daemon.run(task_status=task_status, handle_signals=False))
        running = Running(daemon, port)
        await eventually(lambda: daemon.readiness.snapshot().ready, what="/readyz")
        user = await running.user("nobackend")
        async with running.client(headers=await running.token(user)) as api:
            response = await api.post(f"/api/v1/users/{user.id}/runtimes/start")
            assert response.status_code == 503
            assert "backend" in response.json()["error"]["message"]
        nursery.cancel_scope.cancel()


async def test_the_dashboard_shows_the_workspace_and_starts_it(running: Running) -> None:
    """The dashboard's workspace section: its state, an Open link, and a Start button that
    queues the same operation as the API (a plain form POST, checked for its Origin)."""
    user = await running.user("lovelace")
    storage = running.daemon.ctx.require_storage()
    link = await issue_login_link(storage, running.daemon.ctx.clock, user,
                                  public_url=running.base, minutes=5)
    async with running.client() as browser:
        await browser.get(link.removeprefix(running.base))
        # Let the start on login finish, then stop, so the page offers Start.
        await eventually(lambda: running.compute.state_nowait(user.id).ready,
                         what="the start on login", within=30)
        await running.compute.stop(user.id, reason="test")
        page = (await browser.get("/dashboard")).text
        assert "Your workspace" in page and f'href="/u/{user.id}/"' in page
        assert 'action="/dashboard/workspace/start"' in page
        started = await browser.post("/dashboard/workspace/start",
                                     headers={"Origin": running.base})
        assert started.status_code == 303 and started.headers["location"].endswith("/dashboard")
        # `ready` turns true a moment before the start operation is closed; the page's word
        # follows the operation, so wait for the workspace as the page describes it.
        await eventually(lambda: running.compute.state_nowait(user.id).summary == "running",
                         what="the workspace started from the dashboard", within=30)
        page = (await browser.get("/dashboard")).text
        assert "<strong>running</strong>" in page
        assert 'action="/dashboard/workspace/stop"' in page


async def test_a_dashboard_action_without_the_origin_is_refused(running: Running) -> None:
    user = await running.user("mallory")
    storage = running.daemon.ctx.require_storage()
    link = await issue_login_link(storage, running.daemon.ctx.clock, user,
                                  public_url=running.base, minutes=5)
    async with running.client() as browser:
        await browser.get(link.removeprefix(running.base))
        answer = await browser.post("/dashboard/workspace/stop",
                                    headers={"Origin": "https://evil.example"})
        assert answer.status_code == 403
