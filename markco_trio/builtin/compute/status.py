"""What the compute plugin tells the rest of markco about a user: typed, immutable snapshots.

These are the values of the `ctx.extras["compute"]` interface (`service.ComputeService`): the
proxy, the dashboard and the API read them without awaiting anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...records import RuntimeState, WorkloadRole

# Progress phases, in the order a start goes through them.
PHASE_IDLE = "idle"
PHASE_QUEUED = "queued"
PHASE_WORKSPACE = "workspace"
PHASE_RUNTIME_STARTING = "runtime.starting"
PHASE_EDITOR_STARTING = "editor.starting"
PHASE_WAITING = "waiting"
PHASE_READY = "ready"
PHASE_STOPPING = "stopping"
PHASE_STOPPED = "stopped"
PHASE_CRASHED = "crashed"
PHASE_RESTARTING = "restarting"
PHASE_FAILED = "failed"


@dataclass(frozen=True)
class WorkloadStatus:
    """One workload (editor or runtime) of a user, as compute sees it now.

    `state` is None when the user never had one. `ready` means it answered its health check
    (`/health` for an editor, `/mrp/v1/capabilities` for a runtime) and has not died since.
    `address` is `host:port` where the DAEMON reaches it (never hand it to an editor).
    """

    role: WorkloadRole
    state: RuntimeState | None = None
    ready: bool = False
    address: str | None = None
    reason: str | None = None
    restarts: int = 0
    oom_kills: int = 0
    limits: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UserComputeState:
    """A user's compute, as a snapshot.

    `ready`: the editor answers (what a navigation needs; the runtime front holds runtime
    requests until the runtime is ready too). `operation`: the kind of operation in progress
    (`start`, `stop`, `restart`, `recover`), or None. `phase`/`message`: the latest progress,
    for a "starting..." page. `last_activity_at`: wall-clock time of the last recorded
    activity (navigation, execution...). `executions_in_flight`: at the runtime front.
    """

    user_id: str
    runtime: WorkloadStatus
    editor: WorkloadStatus
    ready: bool = False
    operation: str | None = None
    phase: str = PHASE_IDLE
    message: str = ""
    last_activity_at: float | None = None
    executions_in_flight: int = 0


@dataclass(frozen=True)
class Progress:
    """One step of a user's start/stop/restart, for progress streams (server-sent events).
    `done` is True on the last event of an operation (ready, stopped or failed)."""

    user_id: str
    phase: str
    message: str
    at: float
    ready: bool = False
    failed: bool = False
    done: bool = False

    def as_json(self) -> dict[str, Any]:
        """The event's JSON body."""
        return {"user_id": self.user_id, "phase": self.phase, "message": self.message,
                "at": self.at, "ready": self.ready, "failed": self.failed, "done": self.done}
