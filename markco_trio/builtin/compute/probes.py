"""Readiness checks: a runtime is ready when `GET /mrp/v1/capabilities` answers 200, an editor
when `GET /health` does — at the address where the daemon reaches it, dialled with
`markco_trio.dial` (inside the workload's network namespace on the process backend), one small
HTTP/1.1 GET with h11. While waiting, the workload itself is watched, so one that dies is
reported at once with its last log lines instead of after the whole timeout."""

from __future__ import annotations

from typing import Any

import h11
import trio

from ...dial import http_get
from ...errors import MarkcoError, NotFound
from ...records import WorkloadRole
from ...roles import STATUS_RUNNING, ContainerBackend, ContainerInfo

HEALTH_PATHS = {WorkloadRole.RUNTIME: "/mrp/v1/capabilities", WorkloadRole.EDITOR: "/health"}
POLL_SECONDS = 0.05
INSPECT_EVERY = 10  # polls between two checks that the process is still alive
LOG_LINES = 20


class NotReadyError(MarkcoError):
    """A workload did not become ready; the message says why, with its last log lines."""


async def log_tail(backend: ContainerBackend, handle: str, lines: int = LOG_LINES) -> str:
    """The workload's last log lines ('' when there are none)."""
    try:
        return (await backend.logs(handle, tail=lines)).strip()
    except (NotFound, MarkcoError):
        return ""


async def answers(address: str, path: str) -> bool:
    """Whether `GET path` at `address` answers 200 within 2 s."""
    with trio.move_on_after(2.0):
        try:
            status, _ = await http_get(address, path, host_header="localhost")
        except (OSError, ValueError, h11.ProtocolError):
            return False
        return status == 200
    return False


async def wait_ready(http: Any, backend: ContainerBackend, handle: str,
                     role: WorkloadRole, address: str, *, within: float) -> None:
    """Poll the health endpoint until 200; `NotReadyError` if the workload dies or `within`
    seconds pass. (`http` is unused: kept for callers; the dial is `markco_trio.dial`.)"""
    polls = 0
    with trio.move_on_after(within):
        while True:
            if await answers(address, HEALTH_PATHS[role]):
                return
            polls += 1
            if polls % INSPECT_EVERY == 0:
                try:
                    info = await backend.inspect(handle)
                except NotFound:
                    raise NotReadyError(f"the {role.value} disappeared while starting") from None
                if info.status != STATUS_RUNNING:
                    tail = await log_tail(backend, handle)
                    raise NotReadyError(
                        f"the {role.value} ended while starting ({info.status}, exit code "
                        f"{info.exit_code})" + (f"; its last output:\n{tail}" if tail else ""))
            await trio.sleep(POLL_SECONDS)
    tail = await log_tail(backend, handle)
    raise NotReadyError(f"the {role.value} did not answer {HEALTH_PATHS[role]} within "
                        f"{within:g} s" + (f"; its last output:\n{tail}" if tail else ""))


async def without_address(backend: ContainerBackend, info: ContainerInfo,
                          role: WorkloadRole) -> NotReadyError:
    """The error for a workload the backend started but gives no address for: almost always
    one that ended at once (its command not found, a mount missing) — then its status, exit
    code and last output, which say why."""
    try:
        info = await backend.inspect(info.handle)
    except NotFound:
        return NotReadyError(f"the {role.value} disappeared while starting")
    tail = await log_tail(backend, info.handle)
    output = f"; its last output:\n{tail}" if tail else "; it wrote no output"
    if info.status != STATUS_RUNNING:
        return NotReadyError(f"the {role.value} ended as it started ({info.status}, exit code "
                             f"{info.exit_code}){output}")
    return NotReadyError(f"the {role.value} runs, but the {backend.name} backend gives no "
                         f"address to reach it{output}")
