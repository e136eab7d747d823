"""The tunnel guard on its own, on MockClock: when open WebSockets are decided again, which are
closed, and what a failing authority does. (End to end, with the real auth plugin: the data
plane's `test_tunnel_revocation.py`.)"""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
import trio
import trio.testing

from markco_trio.proxy.gate import Credential, EditorGate
from markco_trio.proxy.guard import TunnelGuard


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class FakeGate:
    """The part of `EditorGate` the guard uses: a revision, and a verdict per credential."""

    def __init__(self) -> None:
        self.revision = 0
        self._moved = trio.Event()
        self.allowed: dict[str, bool] = {}
        self.asked: list[tuple[str, str | None]] = []
        self.broken = False

    async def wait_revision(self, seen: int) -> int:
        while self.revision == seen:
            await self._moved.wait()
        return self.revision

    def revoke(self) -> None:
        self.revision += 1
        self._moved.set()
        self._moved = trio.Event()

    async def still_admitted(self, owner: str, credential: Credential) -> bool:
        self.asked.append((owner, credential.cookie))
        if self.broken:
            raise OSError("the database is down")
        return self.allowed.get(credential.cookie or "", False)


class FakeConnection:
    def __init__(self) -> None:
        self.expired: str | None = None

    def expire(self, reason: str) -> None:
        self.expired = reason


def credential(name: str) -> Credential:
    return Credential(cookie=name, token=None)


async def started(nursery: trio.Nursery, gate: FakeGate) -> TunnelGuard:
    guard = TunnelGuard(cast(EditorGate, gate))
    nursery.start_soon(guard.run)
    await trio.testing.wait_all_tasks_blocked()
    return guard


async def test_a_revocation_closes_the_tunnels_no_longer_admitted_and_keeps_the_rest(
        nursery: trio.Nursery) -> None:
    gate = FakeGate()
    gate.allowed = {"alice": True, "bob": True}
    guard = await started(nursery, gate)
    alices, bobs = FakeConnection(), FakeConnection()
    guard.watch(alices, "alice", credential("alice"))
    guard.watch(bobs, "alice", credential("bob"))
    gate.allowed["bob"] = False
    gate.revoke()
    await trio.sleep(0.01)
    assert bobs.expired == "tunnel_revoked" and alices.expired is None
    assert len(guard) == 1 and guard.closed == 1


async def test_nothing_is_decided_again_between_revocations(
        nursery: trio.Nursery, mock_clock: trio.testing.MockClock) -> None:
    gate = FakeGate()
    guard = await started(nursery, gate)
    conn = FakeConnection()
    guard.watch(conn, "alice", credential("bob"))  # (denied, were it asked)
    await trio.sleep(30)
    assert gate.asked == [] and conn.expired is None


async def test_every_tunnel_is_decided_again_each_minute(
        nursery: trio.Nursery, mock_clock: trio.testing.MockClock) -> None:
    gate = FakeGate()
    guard = await started(nursery, gate)
    conn = FakeConnection()
    guard.watch(conn, "alice", credential("expired token"))
    await trio.sleep(61)
    assert conn.expired == "tunnel_revoked"


async def test_a_timed_admission_is_decided_again_within_a_quarter_second(
        nursery: trio.Nursery, mock_clock: trio.testing.MockClock) -> None:
    gate = FakeGate()
    gate.allowed = {"root": True}
    guard = await started(nursery, gate)
    conn = FakeConnection()
    guard.watch(conn, "alice", credential("root"), timed=True)
    await trio.sleep(10)
    assert conn.expired is None
    gate.allowed["root"] = False  # the admin's entry expired
    await trio.sleep(0.26)
    assert conn.expired == "tunnel_revoked"


async def test_one_credential_is_asked_about_once_per_revocation(
        nursery: trio.Nursery) -> None:
    gate = FakeGate()
    gate.allowed = {"alice": True}
    guard = await started(nursery, gate)
    for _ in range(5):
        guard.watch(FakeConnection(), "alice", credential("alice"))
    gate.revoke()
    await trio.sleep(0.01)
    assert gate.asked == [("alice", "alice")]


async def test_an_authority_that_cannot_answer_keeps_tunnels_and_is_asked_again(
        nursery: trio.Nursery, mock_clock: trio.testing.MockClock,
        caplog: pytest.LogCaptureFixture) -> None:
    gate = FakeGate()
    guard = await started(nursery, gate)
    conn = FakeConnection()
    guard.watch(conn, "alice", credential("bob"))
    gate.broken = True
    with caplog.at_level(logging.WARNING, logger="markco.proxy"):
        gate.revoke()
        await trio.sleep(2)
    assert conn.expired is None
    assert len(gate.asked) > 1  # tried again, every quarter second
    assert len([r for r in caplog.records if "cannot decide" in r.getMessage()]) == 1
    gate.broken = False
    await trio.sleep(0.3)
    assert conn.expired == "tunnel_revoked"


def test_forgetting_an_unknown_connection_is_harmless() -> None:
    guard = TunnelGuard(cast(Any, FakeGate()))
    guard.forget(FakeConnection())
    assert len(guard) == 0


async def test_a_streaming_response_is_ended_with_its_own_reason(
        nursery: trio.Nursery) -> None:
    gate = FakeGate()
    guard = await started(nursery, gate)
    conn = FakeConnection()
    guard.watch(conn, "alice", credential("bob"), reason="stream_revoked")
    gate.revoke()
    await trio.sleep(0.01)
    assert conn.expired == "stream_revoked" and len(guard) == 0


class SlowGate(FakeGate):
    """Answers only when `answer` is set: the connection can move on meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = trio.Event()

    async def still_admitted(self, owner: str, credential: Credential) -> bool:
        await self.answer.wait()
        return await super().still_admitted(owner, credential)


async def test_a_decision_about_an_ended_stream_does_not_end_the_connections_next_one(
        nursery: trio.Nursery) -> None:
    """A kept-alive connection's stream ends while the authority is being asked about it,
    and the connection starts another (another credential): only what was decided is ended."""
    gate = SlowGate()
    gate.allowed = {"alice": True}
    guard = await started(nursery, gate)
    conn = FakeConnection()
    guard.watch(conn, "alice", credential("bob"), reason="stream_revoked")
    gate.revoke()
    await trio.testing.wait_all_tasks_blocked()
    assert gate.asked == []  # (being asked)
    guard.forget(conn)  # the stream ended...
    guard.watch(conn, "alice", credential("alice"), reason="stream_revoked")  # ...another began
    gate.answer.set()
    await trio.sleep(0.01)
    assert gate.asked == [("alice", "bob")]
    assert conn.expired is None and len(guard) == 1
