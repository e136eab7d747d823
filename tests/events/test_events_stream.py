"""The live event stream: server-sent events fed by the bus and refilled from the log — a slow
reader never blocks the producer and misses nothing, events come in log order, heartbeats
keep it open, `Last-Event-ID` resumes it, and it shows a user only their own events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
import trio
import trio.testing

from markco_trio.builtin.events.query import EventQuery
from markco_trio.builtin.events.stream import event_stream
from markco_trio.clock import ManualClock
from markco_trio.events import EventBus
from markco_trio.storage.sqlite import SqliteStorage
from tests.auth.conftest import StartMarkco

from .test_events_api import QUIET, publish, token


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    async with SqliteStorage(tmp_path / "stream.db") as s:
        await s.upgrade()
        yield s


def parse(chunk: bytes) -> dict[str, str]:
    """An SSE message's fields (`id`, `event`, `data`); {} for a comment."""
    fields: dict[str, str] = {}
    for line in chunk.decode().splitlines():
        if line and not line.startswith(":"):
            key, _, value = line.partition(": ")
            fields[key] = value
    return fields


async def messages(stream: AsyncIterator[bytes], count: int) -> list[dict[str, Any]]:
    """The data of the next `count` event messages (comments skipped)."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        fields = parse(await stream.__anext__())
        if "data" in fields:
            out.append(json.loads(fields["data"]))
    return out


async def test_a_slow_reader_never_blocks_the_producer_and_misses_nothing(
        storage: SqliteStorage) -> None:
    bus = EventBus(storage, ManualClock())
    stream = event_stream(bus, storage, EventQuery(), after_seq=None, heartbeat=30, buffer=2)
    await stream.__anext__()  # the preamble: subscribed from here on
    with trio.fail_after(5):  # the reader reads nothing meanwhile: publishing goes on
        for n in range(50):
            await bus.publish("tick", data={"n": n})
    (name,) = [s for s in bus.statistics().subscribers if s.startswith("events-stream-")]
    delivered, dropped = bus.statistics().subscribers[name]
    assert (delivered, dropped) == (2, 48)
    got = await messages(stream, 50)
    assert [m["data"]["n"] for m in got] == list(range(50))  # refilled from the log, in order
    await stream.aclose()


async def test_a_stream_without_a_cursor_starts_at_the_newest_event(
        storage: SqliteStorage) -> None:
    await storage.append_event(type="old", user_id=None, data={}, now=0.0)  # before this bus
    bus = EventBus(storage, ManualClock())
    stream = event_stream(bus, storage, EventQuery(), after_seq=None, heartbeat=30, buffer=8)
    await stream.__anext__()
    await bus.publish("new")
    assert [m["type"] for m in await messages(stream, 1)] == ["new"]
    await stream.aclose()


async def test_the_stream_shows_only_the_queried_users_events(storage: SqliteStorage) -> None:
    bus = EventBus(storage, ManualClock())
    stream = event_stream(bus, storage, EventQuery(user_id="alice"), after_seq=None,
                          heartbeat=30, buffer=8)
    await stream.__anext__()
    await bus.publish("critical", user_id="bob", data={"n": 1})
    await bus.publish("critical", user_id="alice", data={"n": 2})
    await bus.publish("critical", user_id=None, data={"n": 3})
    await bus.publish("idle-sleep", user_id="alice", data={"n": 4})
    assert [m["data"]["n"] for m in await messages(stream, 2)] == [2, 4]
    await stream.aclose()


async def test_a_stream_resumes_after_a_cursor_with_what_was_missed(
        storage: SqliteStorage) -> None:
    bus = EventBus(storage, ManualClock())
    query = EventQuery(types=("critical",))
    first = await bus.publish("critical", data={"n": 1})
    await bus.publish("idle-sleep", data={"n": 2})
    await bus.publish("critical", data={"n": 3})
    stream = event_stream(bus, storage, query, after_seq=query.position(query.cursor(first.seq)),
                          heartbeat=30, buffer=8)
    await stream.__anext__()
    assert [m["data"]["n"] for m in await messages(stream, 1)] == [3]
    await bus.publish("critical", data={"n": 4})
    assert [m["data"]["n"] for m in await messages(stream, 1)] == [4]
    await stream.aclose()


async def test_each_message_id_is_the_cursor_after_that_event(storage: SqliteStorage) -> None:
    bus = EventBus(storage, ManualClock())
    query = EventQuery()
    stream = event_stream(bus, storage, query, after_seq=None, heartbeat=30, buffer=8)
    await stream.__anext__()
    event = await bus.publish("critical")
    fields = parse(await stream.__anext__())
    assert fields["event"] == "critical"
    assert query.position(fields["id"]) == event.seq
    await stream.aclose()


async def test_an_idle_stream_sends_a_heartbeat_every_interval(
        storage: SqliteStorage, mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    bus = EventBus(storage, ManualClock())
    stream = event_stream(bus, storage, EventQuery(), after_seq=None, heartbeat=15, buffer=8)
    await stream.__anext__()
    started = trio.current_time()
    assert await stream.__anext__() == b": heartbeat\n\n"
    assert trio.current_time() - started == pytest.approx(15)
    assert await stream.__anext__() == b": heartbeat\n\n"
    assert trio.current_time() - started == pytest.approx(30)
    await stream.aclose()


# ------------------------------------------------------------------ over HTTP


class RawSse:
    """An SSE client on a raw socket with h11: httpx cannot be stopped in the middle of an
    endless stream without leaving its inner generators to the garbage collector."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)
        self.status = 0
        self.buffer = b""

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, path: str, headers: dict[str, str]
                   ) -> AsyncIterator[RawSse]:
        host, _, port = url.removeprefix("http://").partition(":")
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            client = cls(stream)
            request = h11.Request(method="GET", target=path, headers=[
                ("Host", f"{host}:{port}"), ("Accept", "text/event-stream"),
                *headers.items()])
            await stream.send_all(client.conn.send(request) + client.conn.send(
                h11.EndOfMessage()))
            while not client.status:
                event = await client._next()
                if isinstance(event, h11.Response):
                    client.status = event.status_code
            yield client

    async def _next(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
                continue
            return event

    async def block(self) -> bytes:
        """The next block (message or comment) of the stream."""
        while b"\n\n" not in self.buffer:
            event = await self._next()
            assert isinstance(event, h11.Data), event
            self.buffer += bytes(event.data)
        raw, _, self.buffer = self.buffer.partition(b"\n\n")
        return raw + b"\n"

    async def messages(self, count: int) -> list[dict[str, str]]:
        """The next `count` messages with data (comments skipped)."""
        out: list[dict[str, str]] = []
        while len(out) < count:
            fields = parse(await self.block())
            if "data" in fields:
                out.append(fields)
        return out


async def test_the_http_stream_is_live_filtered_and_resumable(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(auth=QUIET)
    alice, bob = await markco.user("alice"), await markco.user("bob")
    headers = await token(markco, alice, "events:read")
    with trio.fail_after(10):
        async with RawSse.open(markco.url, "/api/v1/events/stream", headers) as sse:
            assert sse.status == 200
            assert (await sse.block()).startswith(b": markco events")  # subscribed now
            await publish(markco, "critical", bob, n=0)
            await publish(markco, "critical", alice, n=1)
            await publish(markco, "idle-sleep", alice, n=2)
            got = await sse.messages(2)
        assert [json.loads(m["data"])["data"]["n"] for m in got] == [1, 2]
        await publish(markco, "critical", alice, n=3)  # while disconnected
        resume = {**headers, "Last-Event-ID": got[-1]["id"]}
        async with RawSse.open(markco.url, "/api/v1/events/stream", resume) as sse:
            (missed,) = await sse.messages(1)
        assert json.loads(missed["data"])["data"]["n"] == 3


async def test_a_bad_last_event_id_is_a_400(start_markco: StartMarkco) -> None:
    markco = await start_markco(auth=QUIET)
    alice, bob = await markco.user("alice"), await markco.user("bob")
    forged = EventQuery(user_id=bob.id).cursor(0)
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        for bad in ("garbage", forged):
            response = await http.get("/api/v1/events/stream", headers={
                **await token(markco, alice, "events:read"), "Last-Event-ID": bad})
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "bad_cursor"


async def test_the_stream_refuses_another_users_events_and_anonymous_callers(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(auth=QUIET)
    alice, bob = await markco.user("alice"), await markco.user("bob")
    async with httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        other = await http.get("/api/v1/events/stream", params={"user_id": bob.id},
                               headers=await token(markco, alice, "events:read"))
        assert other.status_code == 403
        scope = await http.get("/api/v1/events/stream",
                               headers=await token(markco, alice, "user"))
        assert scope.status_code == 403
        anonymous = await http.get("/api/v1/events/stream")
        assert anonymous.status_code == 401


async def test_a_user_has_a_limited_number_of_streams(start_markco: StartMarkco) -> None:
    markco = await start_markco(auth=QUIET + "\n[events]\nmax_streams_per_user = 1\n")
    alice = await markco.user("alice")
    headers = await token(markco, alice, "events:read")
    async with RawSse.open(markco.url, "/api/v1/events/stream", headers) as first, \
            httpx.AsyncClient(base_url=markco.url, trust_env=False, timeout=10) as http:
        assert first.status == 200
        await first.block()  # its body has begun: it counts
        second = await http.get("/api/v1/events/stream", headers=headers)
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "too_many_streams"
