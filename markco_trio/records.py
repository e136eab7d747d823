"""The records that cross the plugin contract.

Plain frozen dataclasses: storage returns them, the services pass them around, the API serialises
them. Ids are opaque strings; times are POSIX seconds (float, UTC) inside the daemon and ISO-8601
UTC at the API edge (see `markco_trio.api.conventions`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing. `next_cursor` is opaque; None means this is the last page."""

    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class User:
    """A person. `username` is Linux-safe and unique; `id` is what `/u/<id>/` uses."""

    id: str
    username: str
    email: str | None
    name: str | None
    avatar_url: str | None
    plan: str
    is_admin: bool
    created_at: float
    disabled: bool = False


@dataclass(frozen=True)
class Identity:
    """A login identity of a user at an OAuth provider."""

    provider: str
    provider_user_id: str
    user_id: str
    email: str | None
    email_verified: bool
    created_at: float


@dataclass(frozen=True)
class Session:
    """A browser session. Only the SHA-256 hash of its token is ever stored."""

    id: str
    user_id: str
    token_hash: str
    created_at: float
    expires_at: float
    last_seen_at: float
    revoked_at: float | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class ApiToken:
    """A scoped API token (`Authorization: Bearer`). Only its hash is stored."""

    id: str
    user_id: str
    name: str
    token_hash: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None


@dataclass(frozen=True)
class LoginLink:
    """A one-time console login link (the embedded default's only URL token)."""

    id: str
    user_id: str
    token_hash: str
    created_at: float
    expires_at: float
    used_at: float | None = None


class GrantRole(str, enum.Enum):
    """What an invite grants. `editor`: full collaborator in the owner's editor (runs code as the
    owner). `viewer`: reads the project's rendered pages, never enters the editor."""

    EDITOR = "editor"
    VIEWER = "viewer"


@dataclass(frozen=True)
class Invite:
    """An invitation to a project of `owner_id`, with a role, an expiry and a use limit."""

    id: str
    owner_id: str
    project: str
    role: GrantRole
    token_hash: str
    created_at: float
    expires_at: float | None
    max_uses: int
    uses: int = 0
    revoked_at: float | None = None


@dataclass(frozen=True)
class Grant:
    """What accepting an invite records: `user_id` holds `role` on `owner_id`'s `project`."""

    id: str
    owner_id: str
    project: str
    user_id: str
    role: GrantRole
    created_at: float
    invite_id: str | None = None
    revoked_at: float | None = None


class WorkloadRole(str, enum.Enum):
    """The two workloads of a user."""

    EDITOR = "editor"
    RUNTIME = "runtime"


class RuntimeState(str, enum.Enum):
    """Lifecycle states of a workload (DESIGN §4). `stopped` and `failed` are not live."""

    STARTING = "starting"
    RUNNING = "running"
    SLEEPING = "sleeping"
    WAKING = "waking"
    MOVING = "moving"
    STOPPED = "stopped"
    FAILED = "failed"


LIVE_STATES = frozenset(
    {RuntimeState.STARTING, RuntimeState.RUNNING, RuntimeState.SLEEPING, RuntimeState.WAKING,
     RuntimeState.MOVING}
)


@dataclass(frozen=True)
class Runtime:
    """A workload record: one editor or runtime of a user, where it runs and in what state.

    At most one live record exists per (user, role): the schema enforces it.
    """

    id: str
    user_id: str
    role: WorkloadRole
    backend: str
    host: str
    handle: str | None
    address: str | None
    state: RuntimeState
    limits: dict[str, Any]
    created_at: float
    updated_at: float
    operation_id: str | None = None
    reason: str | None = None
    restarts: int = 0
    oom_kills: int = 0


class OperationState(str, enum.Enum):
    """An operation is `open` until it ends `done`, `failed` or `rolled_back`."""

    OPEN = "open"
    DONE = "done"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class Operation:
    """One entry of a user's operation log (start, stop, sleep, wake, move...).

    `targets` (container names and the like) is fixed when the operation is created, before
    anything exists, so reconciliation after a crash knows what to look for.
    """

    id: str
    user_id: str
    kind: str
    step: str
    state: OperationState
    targets: dict[str, Any]
    created_at: float
    updated_at: float
    error: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint archive of a user's runtime."""

    id: str
    user_id: str
    runtime_id: str | None
    name: str
    path: str
    size_bytes: int
    sha256: str | None
    created_at: float
    depends_on: dict[str, Any] = field(default_factory=dict)
    kind: str = "named"


SNAPSHOT_KINDS = frozenset({"named", "sleep", "fork"})


@dataclass(frozen=True)
class Migration:
    """A move of a runtime between hosts, with its timings in milliseconds."""

    id: str
    runtime_id: str
    user_id: str
    from_host: str
    to_host: str
    strategy: str
    status: str
    started_at: float
    completed_at: float | None = None
    checkpoint_ms: int | None = None
    transfer_ms: int | None = None
    restore_ms: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Event:
    """An entry of the event log. `seq` increases strictly; it is the paging cursor."""

    seq: int
    id: str
    type: str
    user_id: str | None
    data: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class WebhookDelivery:
    """One attempt to POST an event to a configured webhook. `outcome` is `delivered` (a 2xx),
    `retrying` (failed; another attempt follows) or `failed` (failed; no attempt follows).
    `status_code` is None when no HTTP answer came (`error` says why)."""

    seq: int
    id: str
    webhook: str
    url: str
    event_id: str
    event_seq: int
    event_type: str
    user_id: str | None
    attempt: int
    outcome: str
    status_code: int | None
    error: str | None
    duration_ms: int
    created_at: float


@dataclass(frozen=True)
class WorkloadAccount:
    """The host account a user's workloads run as on a backend that runs them as host processes
    (`process`): a uid/gid of their own, allocated once from the configured range and never
    given to anyone else, even after the user is deleted (their files may remain)."""

    user_id: str
    uid: int
    gid: int
    created_at: float
