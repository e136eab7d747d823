"""What the runtime front feeds the monitor: the code of each execution (for the hints) and the
editor's reports of user input (`POST /markco/v1/activity`, answered by the front itself)."""

from __future__ import annotations

from typing import Any

from tests.compute.test_front import Switch, client


async def test_executed_code_reaches_the_hints(serve_front: Any,
                                               runtime_address: tuple[str, int]) -> None:
    seen: list[str] = []
    front = await serve_front(Switch(runtime_address), on_code=seen.append)
    async with client(front) as http:
        ran = await http.post("/mrp/v1/execute", json={"code": "import json\nprint(6 * 7)"})
        await http.get("/mrp/v1/capabilities")
        await http.post("/mrp/v1/execute", content=b"not json")
    assert ran.json()["stdout"] == "42\n"
    assert seen == ["import json\nprint(6 * 7)"]  # the GET and the broken body: nothing


async def test_reported_input_is_activity_and_never_reaches_the_runtime(
        serve_front: Any) -> None:
    inputs: list[int] = []
    switch = Switch(None)
    switch.stopped = True  # a runtime asleep stays asleep
    front = await serve_front(switch, on_input=lambda: inputs.append(1))
    async with client(front) as http:
        answer = await http.post("/markco/v1/activity", json={"kind": "keydown"})
        wrong = await http.get("/markco/v1/activity")
        big = await http.post("/markco/v1/activity", content=b"x" * 10_000)
    assert answer.status_code == 204
    assert wrong.status_code == 405 and big.status_code == 413
    assert inputs == [1] and switch.wakes == 0


async def test_a_web_page_cannot_report_activity(serve_front: Any) -> None:
    inputs: list[int] = []
    front = await serve_front(Switch(None), on_input=lambda: inputs.append(1))
    async with client(front) as http:
        answer = await http.post("/markco/v1/activity",
                                 headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403 and inputs == []


