"""A stand-in for compute's `ctx.compute` (the `ComputeControl` role), for tests that are about
the data plane rather than about starting processes.

It has the interface the proxy uses, with the same meanings: `editor_address_nowait` answers
only for a user whose editor is "ready", `request_start` records the start (and, with
`start_delay`, makes the editor ready after that long, publishing progress on compute's own
`ProgressHub`), `record_activity` records. Tests of the real thing (compute with the process
backend, mrmd-python and the built-in editor) are in `test_wait_page.py` and
`test_runtime_front.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

from markco_trio.builtin.compute.progress import ProgressHub
from markco_trio.builtin.compute.status import Progress


@dataclass
class FakeState:
    """The fields of compute's `UserComputeState` the wait page reads."""

    phase: str = "idle"
    message: str = ""
    operation: str | None = None
    ready: bool = False


@dataclass
class FakeCompute:
    """Editors at fixed addresses, "ready" or not."""

    addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    ready: set[str] = field(default_factory=set)
    starts: list[tuple[str, str]] = field(default_factory=list)
    activity: list[tuple[str, str]] = field(default_factory=list)
    start_delay: float | None = None  # None: a start never finishes by itself
    fail_with: str | None = None  # a start fails with this message
    hub: ProgressHub = field(default_factory=ProgressHub)
    states: dict[str, FakeState] = field(default_factory=dict)
    nursery: trio.Nursery | None = None

    def editor_address_nowait(self, user_id: str) -> tuple[str, int] | None:
        return self.addresses.get(user_id) if user_id in self.ready else None

    def state_nowait(self, user_id: str) -> FakeState:
        return self.states.setdefault(user_id, FakeState())

    def request_start(self, user_id: str, *, reason: str) -> None:
        self.starts.append((user_id, reason))
        state = self.state_nowait(user_id)
        if state.operation is not None:
            return
        state.operation, state.phase, state.message = "start", "queued", "Waiting to start"
        if self.nursery is not None and (self.start_delay is not None or self.fail_with):
            self.nursery.start_soon(self._start, user_id)

    async def _start(self, user_id: str) -> None:
        state = self.state_nowait(user_id)
        self._publish(user_id, "runtime.starting", "Starting your runtime")
        await trio.sleep(self.start_delay or 0.05)
        state.operation = None
        if self.fail_with:
            state.phase, state.message = "failed", self.fail_with
            self._publish(user_id, "failed", self.fail_with, failed=True, done=True)
            return
        self.ready.add(user_id)
        state.phase, state.message, state.ready = "ready", "Ready", True
        self._publish(user_id, "ready", "Ready", ready=True, done=True)

    def _publish(self, user_id: str, phase: str, message: str, **flags: bool) -> None:
        state = self.state_nowait(user_id)
        state.phase, state.message = phase, message
        self.hub.publish(Progress(user_id=user_id, phase=phase, message=message,
                                  at=trio.current_time(), **flags))

    def record_activity(self, user_id: str, kind: str) -> None:
        self.activity.append((user_id, kind))

    @contextmanager
    def subscribe_progress(self, user_id: str) -> Iterator[trio.MemoryReceiveChannel[Progress]]:
        with self.hub.subscribe(user_id) as receive:
            yield receive
