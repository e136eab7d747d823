"""markco-static-compute: a `ComputeControl` provider whose editors run at fixed addresses.

The example of a plugin that REPLACES one of markco's services: it registers a provider of the
compute control role under the name `static` (hook `markco_compute_controls`); a deployment
chooses it with `[compute_control] provider = "static"`. Its options are `[compute_control.
static]` (`StaticOptions`). It imports only the public face, `markco_trio`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from markco_trio import (
    COMPUTE_REQUESTS,
    MarkcoError,
    PluginContext,
    ProviderSpec,
    hookimpl,
)

# The major version of markco's plugin contract this plugin is written for.
MARKCO_CONTRACT = "1"

_USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _address(text: str, where: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{where}: {text!r} is not host:port (e.g. \"127.0.0.1:8888\")")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class StaticOptions:
    """`[compute_control.static]`: where editors run."""

    editor: str = "127.0.0.1:8888"  # every user's editor, unless `editors` names theirs
    editors: dict[str, str] = field(default_factory=dict)  # user id -> host:port
    start_seconds: float = 0.2  # how long a start (waiting for the editor) takes

    def __post_init__(self) -> None:
        _address(self.editor, "editor")
        for user_id, text in self.editors.items():
            _address(text, f"editors.{user_id}")
        if not 0 <= self.start_seconds <= 600:
            raise ValueError("start_seconds: between 0 and 600")


@dataclass
class _User:
    ready: bool = False
    phase: str = "idle"
    message: str = ""
    operation: str | None = None
    last_activity: float | None = None
    starting: trio.Event | None = None


@dataclass(frozen=True)
class StaticProgress:
    """A progress event (what the wait page reads: phase, message, failed, done)."""

    phase: str
    message: str
    failed: bool = False
    done: bool = False


class StaticCompute:
    """The provider: an async context manager (its nursery runs the background starts)."""

    def __init__(self, options: StaticOptions) -> None:
        self.options = options
        self._users: dict[str, _User] = {}
        self._followers: dict[str, list[trio.MemorySendChannel[StaticProgress]]] = {}
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None

    async def __aenter__(self) -> StaticCompute:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        self._nursery = None
        result: bool | None = await self._nursery_cm.__aexit__(*exc_info)
        return result

    def _user(self, user_id: str) -> _User:
        if not _USER_ID.match(user_id):
            raise ValueError(f"not a valid user id: {user_id!r}")
        return self._users.setdefault(user_id, _User())

    def editor_address_nowait(self, user_id: str) -> tuple[str, int] | None:
        """The configured address, once the user's editor was "started"."""
        user = self._users.get(user_id)
        if user is None or not user.ready:
            return None
        text = self.options.editors.get(user_id, self.options.editor)
        return _address(text, "editor")

    def state_nowait(self, user_id: str) -> _User:
        """The user's state (ready, phase, message, operation)."""
        return self._user(user_id)

    def request_start(self, user_id: str, *, reason: str) -> None:
        """Start in the background; joins a start under way."""
        self.request(user_id, "start", reason=reason)

    def request(self, user_id: str, kind: str, *, reason: str) -> None:
        """start/wake start; stop/sleep stop; restart does both."""
        user = self._user(user_id)
        if kind not in COMPUTE_REQUESTS:
            raise ValueError(f"unknown operation {kind!r}")
        if self._nursery is None:
            raise MarkcoError("static compute is not running")
        if kind in ("stop", "sleep", "restart"):
            self._stop(user_id, user)
        if kind in ("start", "wake", "restart") and not user.ready and user.starting is None:
            user.starting = trio.Event()
            self._nursery.start_soon(self._start, user_id, user)

    async def ensure_started(self, user_id: str, *, reason: str) -> _User:
        """Start and wait until ready."""
        self.request_start(user_id, reason=reason)
        user = self._user(user_id)
        if user.starting is not None:
            await user.starting.wait()
        return user

    async def stop(self, user_id: str, *, reason: str) -> _User:
        """Stop forwarding to the user's editor."""
        user = self._user(user_id)
        self._stop(user_id, user)
        await trio.lowlevel.checkpoint()
        return user

    def record_activity(self, user_id: str, kind: str) -> None:
        """Remember when."""
        if user_id in self._users:
            self._users[user_id].last_activity = trio.current_time()

    def last_activity_nowait(self, user_id: str) -> float | None:
        """When activity was last recorded."""
        user = self._users.get(user_id)
        return user.last_activity if user is not None else None

    @contextmanager
    def subscribe_progress(self, user_id: str) -> Iterator[trio.MemoryReceiveChannel[Any]]:
        """The user's progress events while the block runs (a slow reader loses some)."""
        send, receive = trio.open_memory_channel[StaticProgress](32)
        followers = self._followers.setdefault(user_id, [])
        followers.append(send)
        try:
            with receive:
                yield receive
        finally:
            followers.remove(send)
            send.close()

    def host_names(self) -> list[str]:
        """No hosts to move runtimes between."""
        return []

    def request_move(self, user_id: str, to_host: str, *, reason: str) -> None:
        """Refused: editors run where the config says."""
        self._user(user_id)
        raise MarkcoError(f"cannot move to {to_host!r}: static compute runs no runtimes")

    def _publish(self, user_id: str, user: _User, event: StaticProgress) -> None:
        user.phase, user.message = event.phase, event.message
        for send in self._followers.get(user_id, ()):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                pass

    async def _start(self, user_id: str, user: _User) -> None:
        user.operation = "start"
        try:
            self._publish(user_id, user, StaticProgress("editor.starting",
                                                        "Waiting for your editor"))
            await trio.sleep(self.options.start_seconds)
            user.ready = True
            self._publish(user_id, user, StaticProgress("ready", "Ready", done=True))
        finally:
            user.operation = None
            starting, user.starting = user.starting, None
            if starting is not None:
                starting.set()

    def _stop(self, user_id: str, user: _User) -> None:
        if user.ready:
            user.ready = False
            self._publish(user_id, user, StaticProgress("stopped", "Stopped", done=True))


def _make(options: StaticOptions, ctx: PluginContext) -> StaticCompute:
    # A factory does no I/O: the daemon enters the provider (its __aenter__) in its nursery.
    return StaticCompute(options)


@hookimpl
def markco_compute_controls() -> list[ProviderSpec]:
    """Register the `static` compute control provider."""
    return [ProviderSpec("static", _make, options=StaticOptions,
                         description="editors that run elsewhere, at fixed addresses")]
