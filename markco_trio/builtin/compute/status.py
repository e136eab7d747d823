"""What the compute plugin tells the rest of markco about a user: typed, immutable snapshots.

These are the values of the `ctx.compute` interface (`service.ComputeService`): the
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
PHASE_SLEEPING = "sleeping"   # a checkpoint before the runtime stops
PHASE_ASLEEP = "asleep"       # the runtime is an archive; a navigation or an execution wakes it
PHASE_WAKING = "waking"
PHASE_SNAPSHOT = "snapshot"

# What the words of `UserComputeState.summary` are, for an operation in progress.
OPERATION_SUMMARY = {"start": "starting", "restart": "restarting", "recover": "restarting",
                     "stop": "stopping", "sleep": "going to sleep", "wake": "waking",
                     "snapshot": "taking a snapshot", "restore": "restoring a snapshot",
                     "fork": "forking", "unfork": "removing a fork",
                     "snapshot.delete": "deleting a snapshot"}


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

    `ready`: BOTH the editor and the runtime answer (a workspace with a crashed or failed
    runtime is not ready, whatever its editor says). `summary`: one word (or two) for
    people — running, starting, sleeping, waking, failed, stopped... — from both workloads and
    the operation in progress. `notice`: something the user must be told that outlives the
    progress (a wake that had to start a fresh runtime). `forks`: names of the user's forks.
    `operation`: the kind of operation in progress (`start`, `stop`, `restart`, `recover`,
    `sleep`, `wake`, `snapshot`, `restore`, `fork`...), or None.
    `phase`/`message`: the latest progress, for a "starting..." page.
    `last_activity_at`: wall-clock time of the last recorded activity (navigation, execution).
    `executions_in_flight`: at the runtime front.
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
    notice: str | None = None
    forks: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        """The state of the workspace as a whole (both workloads)."""
        runtime, editor = self.runtime, self.editor
        if self.operation is not None and self.operation in OPERATION_SUMMARY and \
                self.operation not in ("snapshot", "fork", "unfork", "snapshot.delete"):
            return OPERATION_SUMMARY[self.operation]
        if self.phase == "unavailable":  # actor.PHASE_UNAVAILABLE: its host does not answer
            return "unavailable"
        if RuntimeState.FAILED in (runtime.state, editor.state):
            return "failed"
        if runtime.state == RuntimeState.SLEEPING:
            return "sleeping"
        if runtime.state == RuntimeState.WAKING:
            return "waking"
        if runtime.ready and editor.ready:
            return "running"
        if runtime.state is None and editor.state is None:
            return "not started"
        live = {RuntimeState.STARTING, RuntimeState.RUNNING}
        if runtime.state in live or editor.state in live:
            return "starting" if self.operation is None else "busy"
        return (runtime.state or editor.state or RuntimeState.STOPPED).value


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
