"""Runs code on the runtime one execution at a time, publishing every event to the hub.

The runtime has one namespace and runs one cell at a time, so executions queue here in the order
they were submitted, whoever submitted them (a page over the WebSocket, a script over HTTP).
They belong to the editor, not to the connection that asked: a browser that goes away does not
cut a running cell in half.

Every event is published as `{"type": "exec", "execId": ..., "event": ..., "data": {...}}` with
`event` one of `queued`, `start`, `stdout`, `stderr`, `result`, `error`, `done`; exactly one
`done` ends each execution, even when the runtime could not be reached.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import trio

from markco_editor.hub import Hub, Message
from markco_editor.runtime import MRPEvent, RuntimeClient, RuntimeUnavailable

__all__ = [
    "ExecutionRefused",
    "Executor",
    "MAX_CODE_BYTES",
    "exec_message",
    "new_exec_id",
]

MAX_CODE_BYTES = 1024 * 1024
MAX_QUEUED = 64
_EXEC_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Runtime events passed on; `ping` is a keep-alive and `stdin_request` is answered here.
_FORWARDED = frozenset({"start", "stdout", "stderr", "result", "error", "done"})
_NO_STDIN = "input() is not available in the built-in editor\n"
_INPUT_CANCEL_ATTEMPTS = 40


class ExecutionRefused(Exception):
    """An execution was not accepted: no runtime, a bad request or a full queue."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Execution:
    exec_id: str
    code: str
    user: str | None


def new_exec_id() -> str:
    """A fresh execution id."""
    return uuid.uuid4().hex[:12]


def exec_message(exec_id: str, event: str, data: dict[str, Any]) -> Message:
    """The hub message for one event of one execution."""
    return {"type": "exec", "execId": exec_id, "event": event, "data": data}


class Executor:
    """The queue of executions in front of the runtime; `run` is its worker task."""

    def __init__(self, runtime: RuntimeClient | None, hub: Hub) -> None:
        self._runtime = runtime
        self._hub = hub
        self._send, self._receive = trio.open_memory_channel[_Execution](MAX_QUEUED)
        self._running: str | None = None

    @property
    def runtime(self) -> RuntimeClient | None:
        """The runtime front's client (None when this editor has no runtime)."""
        return self._runtime

    @property
    def running(self) -> str | None:
        """The execId of the execution in progress, if any."""
        return self._running

    def submit(self, code: object, exec_id: object = None, *, user: str | None = None) -> str:
        """Queue `code`; return its execId (the one given, or a new one).

        Raises `ExecutionRefused` (503 without a runtime, 400 for a bad request, 429 when the
        queue is full). Subscribe to the hub before submitting to see every event.
        """
        if self._runtime is None:
            raise ExecutionRefused(
                503, "no_runtime", "this editor was started without a runtime "
                "(neither MARKCO_RUNTIME_SOCKET nor RUNTIME_PORT is set)"
            )
        if not isinstance(code, str):
            raise ExecutionRefused(400, "bad_request", "`code` must be a string")
        if len(code.encode("utf-8")) > MAX_CODE_BYTES:
            raise ExecutionRefused(413, "too_large", f"code is limited to {MAX_CODE_BYTES} bytes")
        if exec_id is None:
            exec_id = new_exec_id()
        if not isinstance(exec_id, str) or not _EXEC_ID.match(exec_id):
            raise ExecutionRefused(
                400, "bad_request", "`execId` must be 1-64 letters, digits, '-' or '_'"
            )
        try:
            self._send.send_nowait(_Execution(exec_id, code, user))
        except trio.WouldBlock:
            raise ExecutionRefused(
                429, "queue_full", f"{MAX_QUEUED} executions are already waiting; "
                "interrupt or wait for them"
            ) from None
        self._hub.publish(exec_message(exec_id, "queued", {"user": user}))
        return exec_id

    async def interrupt(self) -> bool:
        """Interrupt the running cell, if any; raises `RuntimeUnavailable` if unreachable."""
        if self._runtime is None or self._running is None:
            return False
        return await self._runtime.interrupt()

    async def notice(self) -> dict[str, str | None]:
        """The compute notice from the runtime front (see `RuntimeClient.notice`); none
        without a runtime. Raises `RuntimeUnavailable` if the front cannot be reached."""
        if self._runtime is None:
            return {"notice": None, "id": None}
        return await self._runtime.notice()

    async def run(self) -> None:
        """Run queued executions one after the other, forever."""
        async for execution in self._receive:
            self._running = execution.exec_id
            try:
                await self._execute(execution)
            finally:
                self._running = None

    async def _execute(self, execution: _Execution) -> None:
        assert self._runtime is not None
        runtime = self._runtime
        exec_id = execution.exec_id
        done = ended = False  # `done` seen; `result` or `error` seen

        async def forward(event: MRPEvent) -> None:
            nonlocal done, ended
            if event.name == "stdin_request":
                self._hub.publish(exec_message(exec_id, "stderr", {"content": _NO_STDIN}))
                await _refuse_input(runtime, exec_id)
                return
            if event.name not in _FORWARDED or done:
                return
            data = dict(event.data)
            # `accumulated` repeats all output so far with every chunk: quadratic traffic.
            data.pop("accumulated", None)
            done = event.name == "done"
            ended = ended or event.name in ("result", "error")
            self._hub.publish(exec_message(exec_id, event.name, data))

        problem = None
        try:
            await runtime.execute_stream(execution.code, exec_id, forward)
        except RuntimeUnavailable as exc:
            problem = str(exc)
        if problem is None and not ended:
            problem = "the runtime closed the stream before the execution finished (did it stop?)"
        if problem is not None and not ended:
            self._hub.publish(
                exec_message(exec_id, "error", {"type": "RuntimeUnavailable", "message": problem})
            )
        if not done:
            self._hub.publish(exec_message(exec_id, "done", {}))


async def _refuse_input(runtime: RuntimeClient, exec_id: str) -> None:
    # mrmd-python announces the request before it registers it: a refusal arriving in between
    # finds nothing to cancel, and the cell would then wait 5 minutes. So try again, briefly.
    for _ in range(_INPUT_CANCEL_ATTEMPTS):
        try:
            if await runtime.cancel_input(exec_id):
                return
        except RuntimeUnavailable:
            return  # the stream itself reports the broken runtime
        await trio.sleep(0.05)
