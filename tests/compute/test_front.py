"""The runtime front: forwards to wherever the runtime is, streams server-sent events event by
event, holds requests (bounded) while the runtime is not ready, wakes a stopped runtime on
execute, counts executions in flight, and is reachable only through its 0600 socket."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from markco_trio.builtin.compute.front import NotReady, RuntimeFront
from markco_trio.testing.network import free_port

from .polling import eventually


@pytest.fixture(scope="module")
def runtime_address() -> Iterator[tuple[str, int]]:
    """A real mrmd-python for the whole module (killed at the end: it ignores SIGTERM)."""
    port = free_port()
    mrmd = str(Path(sys.executable).parent / "mrmd-python")
    proc = subprocess.Popen([mrmd, "--foreground", "--managed", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/mrp/v1/capabilities").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    yield "127.0.0.1", port
    proc.kill()
    proc.wait()


class Switch:
    """A stand-in for the actor's `locate_runtime`: ready or not, under the test's control."""

    def __init__(self, address: tuple[str, int] | None) -> None:
        self.address = address
        self.changed = trio.Event()
        self.wakes = 0
        self.stopped = False

    def set(self, address: tuple[str, int] | None) -> None:
        self.address = address
        self.changed.set()
        self.changed = trio.Event()

    async def __call__(self, *, wake: bool) -> tuple[str, int]:
        while self.address is None:
            if self.stopped:
                if not wake:
                    raise NotReady("the runtime is stopped")
                self.wakes += 1
                self.stopped = False
            await self.changed.wait()
        return self.address


@pytest.fixture
async def serve_front(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RuntimeFront]]]:
    async with trio.open_nursery() as nursery:

        async def serve(locate: Any, **kwargs: Any) -> RuntimeFront:
            front = RuntimeFront("u1", tmp_path / "fronts" / "u1" / "runtime.sock", locate,
                                 **kwargs)
            await nursery.start(front.serve)
            return front

        yield serve
        nursery.cancel_scope.cancel()


def client(front: RuntimeFront) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(front.socket_path)),
                             base_url="http://runtime", timeout=30, trust_env=False)


async def test_requests_are_forwarded_to_the_runtime(serve_front: Any,
                                                     runtime_address: tuple[str, int]) -> None:
    front = await serve_front(Switch(runtime_address))
    async with client(front) as http:
        caps = await http.get("/mrp/v1/capabilities")
        result = await http.post("/mrp/v1/execute", json={"code": "print(6 * 7)"})
        again = await http.get("/mrp/v1/capabilities")  # the same keep-alive connection
    assert caps.status_code == 200 and "mrmd-python" in caps.text
    assert result.status_code == 200 and result.json()["stdout"] == "42\n"
    assert again.status_code == 200
    assert front.statistics().requests == 3
    assert front.statistics().executions == 1


async def test_server_sent_events_arrive_one_by_one(serve_front: Any,
                                                    runtime_address: tuple[str, int]) -> None:
    front = await serve_front(Switch(runtime_address))
    code = "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.4)"
    arrivals: list[tuple[float, str]] = []
    async with client(front) as http, http.stream(
            "POST", "/mrp/v1/execute/stream", json={"code": code}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                arrivals.append((trio.current_time(), line.removeprefix("event: ")))
    ticks = [t for t, name in arrivals if name == "stdout"]
    assert len(ticks) == 3
    assert ticks[1] - ticks[0] > 0.25 and ticks[2] - ticks[1] > 0.25  # not buffered
    assert arrivals[-1][1] == "done"


async def test_executions_in_flight_are_counted(serve_front: Any,
                                                runtime_address: tuple[str, int]) -> None:
    executions: list[float] = []
    front = await serve_front(Switch(runtime_address),
                              on_execution=lambda: executions.append(1.0))
    async with client(front) as http, trio.open_nursery() as nursery:
        nursery.start_soon(partial(http.post, "/mrp/v1/execute",
                                   json={"code": "import time; time.sleep(0.6)"}))
        await eventually(lambda: front.statistics().executions_in_flight == 1)
        assert front.statistics().executions_in_flight == 1
    assert front.statistics().executions_in_flight == 0
    assert executions == [1.0]


async def test_requests_are_held_until_the_runtime_is_ready(
        serve_front: Any, runtime_address: tuple[str, int]) -> None:
    switch = Switch(None)
    front = await serve_front(switch, hold_seconds=10)
    async with client(front) as http, trio.open_nursery() as nursery:
        answers: list[int] = []

        async def ask() -> None:
            answers.append((await http.get("/mrp/v1/capabilities")).status_code)

        nursery.start_soon(ask)
        await eventually(lambda: front.statistics().held == 1)
        await trio.sleep(0.2)
        assert answers == []  # still held
        switch.set(runtime_address)
    assert answers == [200]


async def test_a_held_request_gets_503_after_the_hold_time(serve_front: Any) -> None:
    front = await serve_front(Switch(None), hold_seconds=0.3)
    async with client(front) as http:
        response = await http.get("/mrp/v1/capabilities")
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["error"]["code"] == "runtime_not_ready"
    assert front.statistics().rejected == 1


async def test_held_requests_are_bounded_in_number(serve_front: Any) -> None:
    front = await serve_front(Switch(None), hold_seconds=5, hold_max=2)
    async with client(front) as http, trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(http.get, "/mrp/v1/capabilities")
        await eventually(lambda: front.statistics().held == 2)
        third = await http.get("/mrp/v1/capabilities")
        assert third.status_code == 503
        nursery.cancel_scope.cancel()


async def test_only_an_execute_wakes_a_stopped_runtime(serve_front: Any,
                                                       runtime_address: tuple[str, int]) -> None:
    switch = Switch(None)
    switch.stopped = True
    front = await serve_front(switch, hold_seconds=10)
    async with client(front) as http:
        refused = await http.get("/mrp/v1/capabilities")
        assert refused.status_code == 503 and switch.wakes == 0
        async with trio.open_nursery() as nursery:
            results: list[httpx.Response] = []

            async def execute() -> None:
                results.append(await http.post("/mrp/v1/execute", json={"code": "1+1"}))

            nursery.start_soon(execute)
            await eventually(lambda: switch.wakes == 1)
            switch.set(runtime_address)  # the started runtime became ready
    assert results[0].status_code == 200
    assert switch.wakes == 1


async def test_the_runtime_can_move_without_the_editor_noticing(
        serve_front: Any, runtime_address: tuple[str, int]) -> None:
    switch = Switch(("127.0.0.1", free_port()))  # nothing listens there yet
    front = await serve_front(switch, hold_seconds=5)
    async with client(front) as http, trio.open_nursery() as nursery:
        answers: list[int] = []

        async def ask() -> None:
            answers.append((await http.get("/mrp/v1/capabilities")).status_code)

        nursery.start_soon(ask)
        await trio.sleep(0.3)
        switch.set(runtime_address)  # "moved" to where a runtime answers
    assert answers == [200]


async def test_the_socket_is_private_to_the_editors_account(serve_front: Any,
                                                            runtime_address: tuple[str, int]
                                                            ) -> None:
    owner = (65534, 65534) if os.geteuid() == 0 else None
    front = await serve_front(Switch(runtime_address), owner=owner)
    st = front.socket_path.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    if owner is not None:
        assert (st.st_uid, st.st_gid) == owner
    directory = front.socket_path.parent.lstat()
    assert stat.S_IMODE(directory.st_mode) == 0o711 and directory.st_uid == os.geteuid()


async def test_binding_leaves_the_process_umask_alone(serve_front: Any,
                                                     runtime_address: tuple[str, int],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker threads create files while the front binds: a umask flip would leak to them."""
    def no_umask(mask: int) -> int:
        raise AssertionError("the process umask was changed")

    monkeypatch.setattr(os, "umask", no_umask)
    front = await serve_front(Switch(runtime_address))
    assert stat.S_IMODE(front.socket_path.lstat().st_mode) == 0o600
    assert sorted(p.name for p in front.socket_path.parent.iterdir()) == ["runtime.sock"]
    async with client(front) as http:
        assert (await http.get("/mrp/v1/capabilities")).status_code == 200


async def test_a_stale_socket_of_a_previous_daemon_is_replaced(
        serve_front: Any, tmp_path: Path, runtime_address: tuple[str, int]) -> None:
    stale = tmp_path / "fronts" / "u1" / "runtime.sock"
    stale.parent.mkdir(parents=True)
    stale.write_text("left behind")
    front = await serve_front(Switch(runtime_address))
    async with client(front) as http:
        assert (await http.get("/mrp/v1/capabilities")).status_code == 200


async def test_the_tcp_forwarder_reaches_the_same_runtime(serve_front: Any,
                                                          runtime_address: tuple[str, int]
                                                          ) -> None:
    port = free_port()
    front = await serve_front(Switch(runtime_address), tcp_port=port)
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.post(f"http://127.0.0.1:{port}/mrp/v1/execute",
                                   json={"code": "print('via tcp')"})
    assert response.json()["stdout"] == "via tcp\n"
    assert front.statistics().executions == 1


def test_a_socket_path_too_long_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="too long"):
        RuntimeFront("u", tmp_path / ("x" * 120) / "runtime.sock", Switch(None))


class Untouchable:
    """A `locate` that must never be called: the runtime is asleep and must stay so."""

    calls = 0

    async def __call__(self, *, wake: bool) -> tuple[str, int]:
        self.calls += 1
        raise AssertionError("the notice must not touch the runtime")


async def test_the_notice_is_answered_by_the_front_itself(serve_front: Any) -> None:
    locate = Untouchable()
    current: dict[str, str | None] = {"text": None, "id": None}
    front = await serve_front(locate, notice=lambda: (current["text"], current["id"]))
    async with client(front) as http:
        quiet = await http.get("/markco/v1/notice")
        current.update(text="Your runtime could not be restored (x), so a fresh one was "
                            "started", id="op-1")
        told = await http.get("/markco/v1/notice?t=1")  # the same keep-alive connection
        head = await http.head("/markco/v1/notice")
        posted = await http.post("/markco/v1/notice", json={})
        browser = await http.get("/markco/v1/notice", headers={"Origin": "https://evil"})
    assert quiet.status_code == 200 and quiet.json() == {"notice": None, "id": None}
    assert told.status_code == 200
    assert told.json() == {"notice": current["text"], "id": "op-1"}
    assert told.headers["cache-control"] == "no-store"
    assert head.status_code == 200 and head.content == b""
    assert posted.status_code == 405
    assert browser.status_code == 403
    assert locate.calls == 0


async def test_without_a_notice_source_the_notice_is_null(serve_front: Any) -> None:
    locate = Untouchable()
    front = await serve_front(locate)
    async with client(front) as http:
        answer = await http.get("/markco/v1/notice")
    assert answer.json() == {"notice": None, "id": None} and locate.calls == 0
