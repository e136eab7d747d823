"""The editor shows what compute has to tell the user (a wake that could not restore the
runtime and started a fresh one): `GET /api/notice` asks the daemon's runtime front, which
answers `GET /markco/v1/notice` itself — the runtime is never reached, so polling it never
wakes a sleeping runtime."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

from markco_trio.builtin.compute.front import RuntimeFront

NOTICE = ("Your runtime could not be restored (its image is damaged), so a fresh one was "
          "started: your files are intact, your variables are not.")


class Asleep:
    """The front's `locate`: the runtime is asleep, and nothing here may wake it."""

    calls = 0

    async def __call__(self, *, wake: bool) -> tuple[str, int]:
        self.calls += 1
        raise AssertionError("the notice must not reach the runtime")


async def test_the_editor_shows_the_fronts_notice_without_touching_the_runtime(
    serve_in_process: Callable[..., Awaitable[str]], tmp_path: Path, nursery: trio.Nursery
) -> None:
    current: dict[str, str | None] = {"notice": None, "id": None}
    locate = Asleep()
    front = RuntimeFront("alice", tmp_path / "fronts" / "alice" / "runtime.sock", locate,
                         notice=lambda: (current["notice"], current["id"]))
    await nursery.start(front.serve)
    base_url = await serve_in_process(MARKCO_RUNTIME_SOCKET=str(front.socket_path))
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        quiet = await client.get("/api/notice")
        current.update(notice=NOTICE, id="op-7")
        told = await client.get("/api/notice")
        page = await client.get("/basic")
        posted = await client.post("/api/notice", json={})
    assert quiet.status_code == 200 and quiet.json() == {"notice": None, "id": None}
    assert told.status_code == 200 and told.json() == {"notice": NOTICE, "id": "op-7"}
    assert told.headers["cache-control"] == "no-store"
    assert posted.status_code == 405
    assert 'id="notice"' in page.text and 'id="notice-dismiss"' in page.text
    assert locate.calls == 0


async def test_the_notice_is_null_without_a_runtime(
    serve_in_process: Callable[..., Awaitable[str]],
) -> None:
    base_url = await serve_in_process()
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        answer = await client.get("/api/notice")
    assert answer.status_code == 200 and answer.json() == {"notice": None, "id": None}


async def test_an_unreachable_front_is_a_503_json(
    serve_in_process: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    base_url = await serve_in_process(MARKCO_RUNTIME_SOCKET=str(tmp_path / "no-such.sock"))
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        answer = await client.get("/api/notice")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "runtime_unavailable"
