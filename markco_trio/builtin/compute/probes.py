"""Readiness checks: a runtime is ready when `GET /mrp/v1/capabilities` answers 200, an editor
when `GET /health` does — at the address where the daemon reaches it. While waiting, the
workload itself is watched, so one that dies is reported at once with its last log lines instead
of after the whole timeout."""

from __future__ import annotations

import httpx
import trio

from ...errors import MarkcoError, NotFound
from ...records import WorkloadRole
from ...roles import STATUS_RUNNING, ContainerBackend

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


async def wait_ready(http: httpx.AsyncClient, backend: ContainerBackend, handle: str,
                     role: WorkloadRole, address: str, *, within: float) -> None:
    """Poll the health endpoint until 200; `NotReadyError` if the workload dies or `within`
    seconds pass."""
    url = f"http://{address}{HEALTH_PATHS[role]}"
    polls = 0
    with trio.move_on_after(within):
        while True:
            try:
                response = await http.get(url, timeout=2.0)
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
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
