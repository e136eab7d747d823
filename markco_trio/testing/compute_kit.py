"""The `ComputeControl` contract kit, and `MemoryCompute`, its in-memory reference.

A compute control provider's author subclasses `ComputeControlContract` in their own tests and
supplies two fixtures: `compute`, their provider entered (an async fixture yielding it), and
`compute_user`, the id of a user it may start (created in its storage if it needs one):

    from markco_trio.testing.compute_kit import ComputeControlContract

    class TestMyCompute(ComputeControlContract):
        @pytest.fixture
        async def compute(self):
            async with MyCompute(...) as provider:
                yield provider

        @pytest.fixture
        async def compute_user(self, compute):
            return "alice"

The kit checks what the front door, the wait page, the dashboard and the admin page rely on
(`markco_trio.roles.ComputeControl`): a user never started is not ready and has no address; a
background start returns at once and is followed by progress events ending in `done`; a start
that was waited for gives a ready state and a (host, port) address; a stop takes the address
away; malformed user ids and unknown operations are refused with ValueError; activity is
remembered; moves to a host that does not exist are refused with `MarkcoError`.

`MemoryCompute` passes the kit: every user's editor "runs" at one address given to it (the
proxy benchmark's upstream, a test's fake editor), a start takes `start_delay` seconds. It is a
provider (an async context manager) for tests and benchmarks that are about the data plane, not
about starting processes; `memory_compute_provider` makes a `ProviderSpec` of it.
"""

from __future__ import annotations

import re
import secrets
import sys
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import (
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from ..errors import MarkcoError
from ..hookspecs import ProviderSpec, hookimpl
from ..roles import COMPUTE_REQUESTS, ComputeControl

_USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_BUFFER = 64


@dataclass
class MemoryState:
    """A user's compute state in `MemoryCompute` (the `ComputeStateView` fields)."""

    ready: bool = False
    phase: str = "idle"
    message: str = ""
    operation: str | None = None


@dataclass(frozen=True)
class MemoryProgress:
    """One progress event of `MemoryCompute` (the `ProgressView` fields, and the user)."""

    user_id: str
    phase: str
    message: str
    ready: bool = False
    failed: bool = False
    done: bool = False


@dataclass
class MemoryCompute:
    """Compute control in memory: every started user's editor is at `address`.

    `start_delay`: how long a start takes (seconds, on trio's clock). `fail_with`: every start
    fails with this message. `requests` records each `request`/`request_start` as
    (user id, kind, reason), for tests.
    """

    address: tuple[str, int] = ("127.0.0.1", 9)
    start_delay: float = 0.01
    fail_with: str | None = None
    hosts: tuple[str, ...] = ()
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    _states: dict[str, MemoryState] = field(default_factory=dict)
    _activity: dict[str, float] = field(default_factory=dict)
    _followers: dict[str, list[trio.MemorySendChannel[MemoryProgress]]] = \
        field(default_factory=dict)
    _starting: dict[str, trio.Event] = field(default_factory=dict)
    _nursery: trio.Nursery | None = None
    _stack: AsyncExitStack | None = None

    async def __aenter__(self) -> MemoryCompute:
        stack = AsyncExitStack()
        self._nursery = await stack.enter_async_context(trio.open_nursery())
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> bool | None:
        assert self._stack is not None and self._nursery is not None
        self._nursery.cancel_scope.cancel()
        stack, self._stack, self._nursery = self._stack, None, None
        return await stack.__aexit__(*exc_info)  # type: ignore[arg-type]

    # -------------------------------------------------------------------- the role

    def editor_address_nowait(self, user_id: str) -> tuple[str, int] | None:
        """`address` once the user's start finished, else None."""
        state = self._states.get(user_id)
        return self.address if state is not None and state.ready else None

    def state_nowait(self, user_id: str) -> MemoryState:
        """The user's state (idle when never started)."""
        return self._states.get(_checked(user_id)) or MemoryState()

    def request_start(self, user_id: str, *, reason: str) -> None:
        """Start in the background (joins a start under way)."""
        self.request(user_id, "start", reason=reason)

    def request(self, user_id: str, kind: str, *, reason: str) -> None:
        """Queue `kind` (start and wake start; stop and sleep stop; restart does both)."""
        _checked(user_id)
        if kind not in COMPUTE_REQUESTS:
            raise ValueError(f"unknown operation {kind!r} (known: "
                             f"{', '.join(sorted(COMPUTE_REQUESTS))})")
        if self._nursery is None:
            raise MarkcoError("compute is not running (enter MemoryCompute first)")
        self.requests.append((user_id, kind, reason))
        if kind in ("start", "wake"):
            if user_id not in self._starting and not self.state_nowait(user_id).ready:
                self._starting[user_id] = trio.Event()
                self._nursery.start_soon(self._start, user_id)
        elif kind in ("stop", "sleep"):
            self._stop(user_id)
        else:
            self._stop(user_id)
            self.request(user_id, "start", reason=reason)

    async def ensure_started(self, user_id: str, *, reason: str) -> MemoryState:
        """Start (or join the start) and wait; `MarkcoError` when it fails."""
        self.request_start(user_id, reason=reason)
        starting = self._starting.get(user_id)
        if starting is not None:
            await starting.wait()
        state = self.state_nowait(user_id)
        if not state.ready:
            raise MarkcoError(f"the start failed: {state.message}")
        return state

    async def stop(self, user_id: str, *, reason: str) -> MemoryState:
        """Stop at once."""
        _checked(user_id)
        self.requests.append((user_id, "stop", reason))
        self._stop(user_id)
        await trio.lowlevel.checkpoint()
        return self.state_nowait(user_id)

    def record_activity(self, user_id: str, kind: str) -> None:
        """Remember when (trio's clock)."""
        self._activity[user_id] = trio.current_time()

    def last_activity_nowait(self, user_id: str) -> float | None:
        """When `record_activity` was last called for the user."""
        return self._activity.get(user_id)

    @contextmanager
    def subscribe_progress(self, user_id: str) -> Iterator[trio.MemoryReceiveChannel[Any]]:
        """The user's progress events while the block runs (bounded: a slow reader loses)."""
        send, receive = trio.open_memory_channel[MemoryProgress](_BUFFER)
        followers = self._followers.setdefault(user_id, [])
        followers.append(send)
        try:
            with receive:
                yield receive
        finally:
            followers.remove(send)
            send.close()

    def host_names(self) -> list[str]:
        """`hosts` (empty: one host, nothing to move to)."""
        return list(self.hosts)

    def request_move(self, user_id: str, to_host: str, *, reason: str) -> None:
        """Refused unless `to_host` is one of `hosts`; then recorded."""
        _checked(user_id)
        if to_host not in self.hosts:
            raise MarkcoError(f"no host named {to_host!r} (known: "
                              f"{', '.join(self.hosts) or 'none: one host'})")
        self.requests.append((user_id, f"move:{to_host}", reason))

    # ------------------------------------------------------------------ internals

    def _publish(self, user_id: str, phase: str, message: str, **flags: bool) -> None:
        state = self._states.setdefault(user_id, MemoryState())
        state.phase, state.message = phase, message
        event = MemoryProgress(user_id, phase, message, **flags)
        for send in self._followers.get(user_id, ()):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                pass  # a slow follower loses events; compute never waits for it

    async def _start(self, user_id: str) -> None:
        state = self._states.setdefault(user_id, MemoryState())
        state.operation = "start"
        try:
            self._publish(user_id, "queued", "Waiting to start")
            await trio.sleep(self.start_delay)
            if self.fail_with:
                self._publish(user_id, "failed", self.fail_with, failed=True, done=True)
            else:
                state.ready = True
                self._publish(user_id, "ready", "Ready", ready=True, done=True)
        finally:
            state.operation = None
            self._starting.pop(user_id).set()

    def _stop(self, user_id: str) -> None:
        state = self._states.get(user_id)
        if state is not None and state.ready:
            state.ready = False
            self._publish(user_id, "stopped", "Stopped", done=True)


def _checked(user_id: str) -> str:
    if not _USER_ID.match(user_id):
        raise ValueError(f"not a valid user id: {user_id!r}")
    return user_id


@asynccontextmanager
async def _entered(instance: Any) -> AsyncIterator[Any]:
    yield instance


@contextmanager
def instance_compute_plugin(instance: Any, *, name: str = "instance") -> Iterator[str]:
    """A plugin module whose `markco_compute_controls` hook provides `instance` (any object
    with the `ComputeControl` methods a test needs; entered as is) as provider `name`. Yields
    the module's name, for `[plugins] modules`, with `[compute_control] provider = "<name>"`:
    how a test hands its own stand-in to a daemon, chosen by name like any provider. The
    module is importable while the block runs."""
    module_name = f"markco_test_compute_{secrets.token_hex(6)}"
    module = types.ModuleType(module_name)

    @hookimpl
    def markco_compute_controls() -> list[ProviderSpec]:
        return [ProviderSpec(name, lambda options, ctx: _entered(instance),
                             description="a test's stand-in for compute")]

    module.markco_compute_controls = markco_compute_controls  # type: ignore[attr-defined]
    sys.modules[module_name] = module
    try:
        yield module_name
    finally:
        sys.modules.pop(module_name, None)


def memory_compute_provider(name: str, make: Any = MemoryCompute) -> ProviderSpec:
    """A `ProviderSpec` named `name` whose factory calls `make()` (a `MemoryCompute` by
    default), for a plugin's `markco_compute_controls` hook."""
    return ProviderSpec(name, lambda options, ctx: make(),
                        description="compute in memory (tests and benchmarks)")


# ------------------------------------------------------------------------------- the kit


async def _next_done(events: trio.MemoryReceiveChannel[Any], within: float = 60) -> Any:
    with trio.fail_after(within):
        async for event in events:
            assert isinstance(event.phase, str) and isinstance(event.message, str)
            if event.done:
                return event
    raise AssertionError("the progress channel closed before an event with done=True")


class ComputeControlContract:
    """The tests every `ComputeControl` provider passes. Subclass it and define the
    `compute` (the provider, entered) and `compute_user` (a startable user id) fixtures."""

    @pytest.fixture
    async def compute(self) -> AsyncIterator[ComputeControl]:
        """Override: yield your provider, entered."""
        raise NotImplementedError("define the `compute` fixture: your provider, entered")
        yield

    @pytest.fixture
    async def compute_user(self, compute: ComputeControl) -> str:
        """Override when your provider needs the user to exist (in its storage)."""
        return "kit-user"

    async def test_it_is_the_role(self, compute: ComputeControl) -> None:
        assert isinstance(compute, ComputeControl)

    async def test_a_user_never_started_is_not_ready(self, compute: ComputeControl,
                                                     compute_user: str) -> None:
        assert compute.editor_address_nowait(compute_user) is None
        state = compute.state_nowait(compute_user)
        assert state.ready is False
        assert isinstance(state.phase, str) and isinstance(state.message, str)

    async def test_a_waited_start_gives_an_address(self, compute: ComputeControl,
                                                   compute_user: str) -> None:
        state = await compute.ensure_started(compute_user, reason="contract kit")
        assert state.ready is True
        address = compute.editor_address_nowait(compute_user)
        assert address is not None
        host, port = address
        assert isinstance(host, str) and host and isinstance(port, int) and 0 < port < 65536

    async def test_a_background_start_returns_at_once_and_reports_progress(
            self, compute: ComputeControl, compute_user: str) -> None:
        with compute.subscribe_progress(compute_user) as events:
            compute.request_start(compute_user, reason="contract kit")  # sync: no waiting
            assert compute.editor_address_nowait(compute_user) is None or \
                compute.state_nowait(compute_user).ready
            last = await _next_done(events)
        assert not last.failed, last.message
        assert compute.state_nowait(compute_user).ready is True

    async def test_starting_twice_is_one_start(self, compute: ComputeControl,
                                               compute_user: str) -> None:
        compute.request_start(compute_user, reason="contract kit")
        compute.request_start(compute_user, reason="contract kit (again)")
        state = await compute.ensure_started(compute_user, reason="contract kit (joined)")
        assert state.ready is True

    async def test_a_stop_takes_the_address_away(self, compute: ComputeControl,
                                                 compute_user: str) -> None:
        await compute.ensure_started(compute_user, reason="contract kit")
        state = await compute.stop(compute_user, reason="contract kit")
        assert state.ready is False
        assert compute.editor_address_nowait(compute_user) is None

    @pytest.mark.parametrize("hostile", ["../etc", "a/b", "", "x" * 65, "al ice", "a\nb"])
    async def test_a_malformed_user_id_is_refused(self, compute: ComputeControl,
                                                  hostile: str) -> None:
        with pytest.raises(ValueError):
            compute.request_start(hostile, reason="contract kit")

    async def test_an_unknown_operation_is_refused(self, compute: ComputeControl,
                                                   compute_user: str) -> None:
        with pytest.raises(ValueError):
            compute.request(compute_user, "format-disk", reason="contract kit")

    async def test_activity_is_remembered(self, compute: ComputeControl,
                                          compute_user: str) -> None:
        await compute.ensure_started(compute_user, reason="contract kit")
        compute.record_activity(compute_user, "navigation")
        assert compute.last_activity_nowait(compute_user) is not None

    async def test_a_move_to_an_unknown_host_is_refused(self, compute: ComputeControl,
                                                        compute_user: str) -> None:
        names = compute.host_names()
        assert isinstance(names, list) and all(isinstance(n, str) for n in names)
        with pytest.raises(MarkcoError):
            compute.request_move(compute_user, "no-such-host-anywhere", reason="contract kit")

    async def test_a_subscription_ends_cleanly(self, compute: ComputeControl,
                                               compute_user: str) -> None:
        subscription: AbstractContextManager[Any] = compute.subscribe_progress(compute_user)
        with subscription as events:
            assert events is not None
        compute.request_start(compute_user, reason="contract kit")  # no one follows: fine
        await compute.ensure_started(compute_user, reason="contract kit")
