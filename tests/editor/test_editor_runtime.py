"""Python blocks run through the editor's API on a real `mrmd-python` behind a stand-in runtime
front. The first tests start the editor as a real subprocess with the contract's environment
(end to end); the rest serve it in-process, which is quicker and reaches the runtime the same way.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from editor_testing import RuntimeFront, StartEditor, free_port
from markco_editor.sse import SSEDecoder
from trio_websocket import open_websocket_url

Event = tuple[str, dict[str, Any], float]

STREAMING_CODE = "import time\nprint('first', flush=True)\ntime.sleep(0.5)\nprint('second')\n"


async def execute_sse(base_url: str, code: str, **extra: Any) -> list[Event]:
    """POST /api/execute and collect (event, data, arrival time) until `done`."""
    events: list[Event] = []
    decoder = SSEDecoder()
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream(
            "POST", base_url + "/api/execute", json={"code": code, **extra}
        ) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            # Read to the end: the editor closes the stream after `done`.
            async for line in resp.aiter_lines():
                event = decoder.feed_line(line)
                if event is not None:
                    events.append((event.name, json.loads(event.data), trio.current_time()))
    assert events[-1][0] == "done"
    return events


def stdout_of(events: list[Event]) -> str:
    return "".join(d.get("content", "") for name, d, _ in events if name == "stdout")


@pytest.fixture
async def fronted_editor(
    serve_in_process: Callable[..., Awaitable[str]], runtime_front: RuntimeFront
) -> str:
    """The editor in-process, its runtime behind the front; its base URL."""
    return await serve_in_process(MARKCO_RUNTIME_SOCKET=str(runtime_front.socket_path))


async def test_a_python_block_runs_through_the_runtime_front_and_returns_its_output(
    start_editor: StartEditor, runtime_front: RuntimeFront
) -> None:
    editor = await start_editor(MARKCO_RUNTIME_SOCKET=str(runtime_front.socket_path))
    events = await execute_sse(editor.base_url, "print(6*7)")
    names = [name for name, _, _ in events]
    assert names[0] == "queued" and names[-1] == "done"
    assert "result" in names
    assert "42" in stdout_of(events)
    # The editor had no other address for the runtime than the front's socket.
    assert runtime_front.connections >= 1


async def test_a_variable_persists_between_two_executions(
    start_editor: StartEditor, runtime_front: RuntimeFront
) -> None:
    editor = await start_editor(MARKCO_RUNTIME_SOCKET=str(runtime_front.socket_path))
    await execute_sse(editor.base_url, "persisted_answer = 41")
    events = await execute_sse(editor.base_url, "print(persisted_answer + 1)")
    assert "42" in stdout_of(events)


async def test_output_streams_over_sse_before_the_block_finishes(fronted_editor: str) -> None:
    events = await execute_sse(fronted_editor, STREAMING_CODE)
    chunks = [(d["content"], t) for name, d, t in events if name == "stdout"]
    first_at = next(t for text, t in chunks if "first" in text)
    second_at = next(t for text, t in chunks if "second" in text)
    assert not any("second" in text for text, t in chunks if t <= first_at)
    assert second_at - first_at >= 0.3  # the first line arrived before the sleep ended


async def test_output_streams_over_the_websocket_before_the_block_finishes(
    fronted_editor: str,
) -> None:
    chunks: list[tuple[str, float]] = []
    async with open_websocket_url(fronted_editor.replace("http:", "ws:") + "/ws") as ws:
        assert json.loads(await ws.get_message())["type"] == "hello"
        await ws.send_message(
            json.dumps({"type": "execute", "code": STREAMING_CODE, "execId": "ws-stream"})
        )
        with trio.fail_after(20):
            while True:
                message = json.loads(await ws.get_message())
                if message.get("type") != "exec" or message["execId"] != "ws-stream":
                    continue
                if message["event"] == "stdout":
                    chunks.append((message["data"]["content"], trio.current_time()))
                if message["event"] == "done":
                    break
    first_at = next(t for text, t in chunks if "first" in text)
    second_at = next(t for text, t in chunks if "second" in text)
    assert not any("second" in text for text, t in chunks if t <= first_at)
    assert second_at - first_at >= 0.3


async def test_an_error_in_a_block_ends_with_an_error_event(fronted_editor: str) -> None:
    events = await execute_sse(fronted_editor, "1/0")
    errors = [d for name, d, _ in events if name == "error"]
    assert errors and errors[0]["type"] == "ZeroDivisionError"
    assert events[-1][0] == "done"


async def test_input_fails_at_once_instead_of_blocking_the_runtime(fronted_editor: str) -> None:
    with trio.fail_after(10):  # mrmd-python itself would wait 5 minutes for an answer
        events = await execute_sse(fronted_editor, "answer = input('name? ')")
    assert [d["type"] for name, d, _ in events if name == "error"] == ["InputCancelledError"]


async def test_runtime_port_is_used_when_there_is_no_socket(
    serve_in_process: Callable[..., Awaitable[str]], mrmd_port: int
) -> None:
    base_url = await serve_in_process(RUNTIME_PORT=str(mrmd_port))
    events = await execute_sse(base_url, "print('over tcp')")
    assert "over tcp" in stdout_of(events)


async def test_an_unreachable_runtime_front_gives_an_error_event_not_a_hang(
    serve_in_process: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    base_url = await serve_in_process(MARKCO_RUNTIME_SOCKET=str(tmp_path / "no-such.sock"))
    with trio.fail_after(15):
        events = await execute_sse(base_url, "print(1)")
    errors = [d for name, d, _ in events if name == "error"]
    assert errors[0]["type"] == "RuntimeUnavailable"
    assert "runtime front" in errors[0]["message"]
    assert events[-1][0] == "done"


async def test_a_runtime_that_went_away_gives_an_error_event(
    serve_in_process: Callable[..., Awaitable[str]], tmp_path: Path, nursery: trio.Nursery
) -> None:
    front = RuntimeFront(tmp_path / "dead.sock", free_port())  # nothing listens behind it
    await nursery.start(front.serve)
    base_url = await serve_in_process(MARKCO_RUNTIME_SOCKET=str(front.socket_path))
    events = await execute_sse(base_url, "print(1)")
    assert [name for name, _, _ in events][-2:] == ["error", "done"]
    assert events[-2][1]["type"] == "RuntimeUnavailable"


async def test_execute_without_a_runtime_is_503_json(editor: httpx.AsyncClient) -> None:
    resp = await editor.post("/api/execute", json={"code": "print(1)"})
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "no_runtime"


async def test_health_and_the_page_never_touch_the_runtime(
    fronted_editor: str, runtime_front: RuntimeFront
) -> None:
    # Each request through the front is activity and may wake a sleeping runtime.
    async with httpx.AsyncClient() as client:
        assert (await client.get(fronted_editor + "/health")).status_code == 200
        assert (await client.get(fronted_editor + "/")).status_code == 200
    assert runtime_front.connections == 0


async def test_interrupt_with_nothing_running_does_not_reach_the_runtime(
    fronted_editor: str, runtime_front: RuntimeFront
) -> None:
    async with httpx.AsyncClient() as client:
        resp = await client.post(fronted_editor + "/api/interrupt")
    assert resp.json() == {"interrupted": False}
    assert runtime_front.connections == 0


async def test_interrupt_during_a_block_is_passed_to_the_runtime(
    fronted_editor: str, nursery: trio.Nursery
) -> None:
    # mrmd-python 0.4 acknowledges an interrupt but its in-process worker does not act on it
    # (see editor/README.md), so the block is short and finishes on its own.
    finished = trio.Event()

    async def run_block() -> None:
        await execute_sse(fronted_editor, "import time\ntime.sleep(1)")
        finished.set()

    nursery.start_soon(run_block)
    async with httpx.AsyncClient() as client:
        with trio.fail_after(5):
            while True:
                await trio.sleep(0.1)
                resp = await client.post(fronted_editor + "/api/interrupt")
                if resp.json()["interrupted"]:
                    break
    with trio.fail_after(10):
        await finished.wait()
