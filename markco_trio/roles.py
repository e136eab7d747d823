"""The roles a plugin can fill: typed Protocols with async methods.

A provider is an async context manager: the daemon enters it inside its nursery, so its pools and
background tasks live inside the task tree, and leaves it on shutdown. Everything here is the
stable plugin contract (see `hookspecs.py` for how providers are registered).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack, runtime_checkable

from .records import (
    ApiToken,
    Event,
    Grant,
    GrantRole,
    Identity,
    Invite,
    LoginLink,
    Migration,
    Operation,
    OperationState,
    Page,
    Runtime,
    RuntimeState,
    Session,
    Snapshot,
    User,
    WebhookDelivery,
    WorkloadAccount,
    WorkloadRole,
)

if TYPE_CHECKING:
    import trio

    from .authz import Principal

# --------------------------------------------------------------------------------------- Storage


class UserChanges(TypedDict, total=False):
    """What `Storage.update_user` may change (any subset)."""

    username: str
    name: str | None
    email: str | None
    avatar_url: str | None
    plan: str
    is_admin: bool
    disabled: bool


class RuntimeChanges(TypedDict, total=False):
    """What `Storage.update_runtime` may change (any subset)."""

    state: RuntimeState | str
    handle: str | None
    address: str | None
    host: str
    limits: dict[str, Any]
    reason: str | None
    restarts: int
    oom_kills: int
    operation_id: str | None



@runtime_checkable
class Storage(Protocol):
    """Durable state. Each method is ONE unit of work: one transaction, run in a worker thread
    behind the storage's own `trio.CapacityLimiter`; no transaction is ever held across awaits.

    Times passed in (`now`, `expires_at`) are POSIX seconds from the daemon's clock, so tests
    control them. Lookups that find nothing return None; writes that break a uniqueness rule raise
    `markco_trio.errors.Conflict`; updates of a missing record raise `NotFound`.
    """

    name: str

    async def __aenter__(self) -> Storage: ...

    async def __aexit__(self, *exc_info: object) -> bool | None: ...

    # schema and process-level concerns
    async def upgrade(self) -> list[int]:
        """Apply pending schema migrations; return the versions applied (empty: up to date)."""
        ...

    async def schema_version(self) -> int:
        """The highest applied schema version (0 for an empty database)."""
        ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached (readiness)."""
        ...

    def instance_lock(self) -> Any:
        """An async context manager holding the single-instance lock of this data dir/database
        for the daemon's life; raises `AlreadyRunning` when another daemon holds it."""
        ...

    # users and identities
    async def create_user(self, *, username: str, email: str | None, name: str | None,
                          avatar_url: str | None, plan: str = "free", is_admin: bool = False,
                          now: float) -> User:
        """Create a user; `Conflict` when the username or the email is taken."""
        ...

    async def get_user(self, user_id: str) -> User | None:
        """The user with this id, or None."""
        ...

    async def get_user_by_username(self, username: str) -> User | None:
        """Case-insensitive lookup (usernames are stored lower-case)."""
        ...

    async def get_user_by_email(self, email: str) -> User | None:
        """Case-insensitive lookup."""
        ...

    async def list_users(self, *, cursor: str | None = None, limit: int = 100) -> Page[User]:
        """Users ordered by username, `limit` at a time. `cursor` is a `next_cursor` from a
        previous page (anything else raises ValueError)."""
        ...

    async def update_user(self, user_id: str, **fields: Unpack[UserChanges]) -> User:
        """Update name, email, avatar_url, plan, is_admin, disabled or username."""
        ...

    async def link_identity(self, *, user_id: str, provider: str, provider_user_id: str,
                            email: str | None, email_verified: bool, now: float) -> Identity:
        """Record a provider identity of a user; `Conflict` if it is linked already."""
        ...

    async def find_identity(self, provider: str, provider_user_id: str) -> Identity | None:
        """The identity, or None."""
        ...

    async def list_identities(self, user_id: str) -> list[Identity]:
        """The user's identities, oldest first."""
        ...

    # sessions
    async def create_session(self, *, user_id: str, token_hash: str, expires_at: float,
                             now: float, user_agent: str | None = None) -> Session:
        """Store a new session (only the hash of its token)."""
        ...

    async def get_session(self, token_hash: str, *, now: float) -> Session | None:
        """The session if it exists, is not revoked and has not expired at `now`."""
        ...

    async def touch_sessions(self, updates: Mapping[str, tuple[float, float]]) -> None:
        """Sliding renewal, coalesced: token_hash -> (last_seen_at, new expires_at)."""
        ...

    async def revoke_session(self, token_hash: str, *, now: float) -> bool:
        """Revoke one session; False if it was unknown or revoked already."""
        ...

    async def revoke_user_sessions(self, user_id: str, *, now: float) -> int:
        """Revoke every live session of a user (logout everywhere); return how many."""
        ...

    async def list_sessions(self, user_id: str, *, now: float) -> list[Session]:
        """The user's live sessions."""
        ...

    async def revocation_epoch(self) -> int:
        """A counter bumped by every revocation (sessions, tokens, grants, users disabled), so a
        daemon's in-memory caches notice revocations made by another process."""
        ...

    async def purge_expired(self, *, now: float) -> int:
        """Delete expired sessions and login links; return how many."""
        ...

    # API tokens and login links
    async def create_api_token(self, *, user_id: str, name: str, token_hash: str,
                               scopes: tuple[str, ...], expires_at: float | None,
                               now: float) -> ApiToken:
        """Store a new API token (only its hash). Scopes may not contain whitespace."""
        ...

    async def get_api_token(self, token_hash: str, *, now: float) -> ApiToken | None:
        """The token if live (not revoked, not expired)."""
        ...

    async def list_api_tokens(self, user_id: str) -> list[ApiToken]:
        """All of the user's tokens, revoked and expired ones included, oldest first."""
        ...

    async def revoke_api_token(self, token_id: str, *, now: float) -> bool:
        """Revoke a token by id; False if it was unknown or revoked already."""
        ...

    async def create_login_link(self, *, user_id: str, token_hash: str, expires_at: float,
                                now: float) -> LoginLink:
        """Store a one-time login link (only its hash)."""
        ...

    async def consume_login_link(self, token_hash: str, *, now: float) -> LoginLink | None:
        """Atomically mark the link used and return it; None if unknown, used or expired."""
        ...

    # invites and grants
    async def create_invite(self, *, owner_id: str, project: str, role: GrantRole,
                            token_hash: str, expires_at: float | None, max_uses: int,
                            now: float) -> Invite:
        """Store an invite to `owner_id`'s project (only the hash of its token)."""
        ...

    async def get_invite(self, token_hash: str) -> Invite | None:
        """The invite, whatever its state, or None."""
        ...

    async def list_invites(self, owner_id: str) -> list[Invite]:
        """All invites of an owner, oldest first."""
        ...

    async def revoke_invite(self, invite_id: str, *, owner_id: str, now: float) -> bool:
        """Revoke an invite of `owner_id`; False if unknown, not theirs or revoked already.
        Grants made from it stay (revoke those with `revoke_grant`)."""
        ...

    async def accept_invite(self, token_hash: str, *, user_id: str, now: float) -> Grant | None:
        """Atomically: check the invite is live (not revoked, not expired, uses < max_uses),
        count a use and record the grant (an existing live grant for the same user and project
        is updated to the invite's role). None if the invite cannot be accepted."""
        ...

    async def list_grants(self, *, user_id: str | None = None,
                          owner_id: str | None = None) -> list[Grant]:
        """Live grants held by `user_id` and/or given by `owner_id`."""
        ...

    async def revoke_grant(self, grant_id: str, *, owner_id: str, now: float) -> bool:
        """Revoke a grant given by `owner_id`; False if unknown, not theirs or revoked."""
        ...

    # workloads
    async def create_runtime(self, *, user_id: str, role: WorkloadRole, backend: str, host: str,
                             state: RuntimeState, limits: Mapping[str, Any], now: float,
                             handle: str | None = None, address: str | None = None,
                             operation_id: str | None = None) -> Runtime:
        """Raises `Conflict` when the user already has a live workload of that role."""
        ...

    async def update_runtime(self, runtime_id: str, *, now: float,
                             **fields: Unpack[RuntimeChanges]) -> Runtime:
        """Update state, handle, address, host, limits, reason, restarts, oom_kills,
        operation_id."""
        ...

    async def get_runtime(self, runtime_id: str) -> Runtime | None:
        """The workload record, or None."""
        ...

    async def get_live_runtime(self, user_id: str, role: WorkloadRole) -> Runtime | None:
        """The user's live workload of `role` (there is at most one), or None."""
        ...

    async def list_runtimes(self, *, user_id: str | None = None,
                            live_only: bool = True) -> list[Runtime]:
        """Workload records, oldest first: of one user or all, live ones or all."""
        ...

    # the operation log
    async def create_operation(self, *, user_id: str, kind: str, targets: Mapping[str, Any],
                               now: float, step: str = "created") -> Operation:
        """Open an operation with its targets fixed up front."""
        ...

    async def update_operation(self, operation_id: str, *, now: float, step: str | None = None,
                               state: OperationState | None = None,
                               error: str | None = None) -> Operation:
        """Advance an operation (fields left None are unchanged); `NotFound` if unknown."""
        ...

    async def get_operation(self, operation_id: str) -> Operation | None:
        """The operation, or None."""
        ...

    async def list_operations(self, *, user_id: str | None = None,
                              open_only: bool = False) -> list[Operation]:
        """Operations, oldest first: of one user or all, open ones or all."""
        ...

    # snapshots and migrations
    async def create_snapshot(self, *, user_id: str, runtime_id: str | None, name: str,
                              path: str, size_bytes: int, sha256: str | None,
                              depends_on: Mapping[str, Any], now: float,
                              kind: str = "named") -> Snapshot:
        """Record a complete archive. `kind`: `named`, `sleep` or `fork`; a second `named`
        snapshot of one name for one user raises `Conflict`."""
        ...

    async def get_snapshot(self, snapshot_id: str) -> Snapshot | None:
        """One snapshot by id."""
        ...

    async def list_snapshots(self, user_id: str | None = None, *,
                             kind: str | None = None) -> list[Snapshot]:
        """Snapshots, oldest first: of one user (or all), of one kind (or all)."""
        ...

    async def delete_snapshot(self, snapshot_id: str) -> bool:
        """Forget a snapshot record; False if unknown. (The archive file is the caller's.)"""
        ...

    async def create_migration(self, *, runtime_id: str, user_id: str, from_host: str,
                               to_host: str, strategy: str, now: float) -> Migration:
        """Record the start of a move of a runtime between hosts."""
        ...

    async def finish_migration(self, migration_id: str, *, status: str, now: float,
                               checkpoint_ms: int | None = None, transfer_ms: int | None = None,
                               restore_ms: int | None = None,
                               error: str | None = None) -> Migration:
        """Record how a move ended and its timings; `NotFound` if unknown."""
        ...

    async def list_migrations(self, *, runtime_id: str | None = None) -> list[Migration]:
        """Moves, oldest first: of one runtime or all."""
        ...

    # host accounts of workloads (the process backend)
    async def allocate_workload_account(self, user_id: str, *, uid_min: int, uid_max: int,
                                        now: float) -> WorkloadAccount:
        """The user's workload account (uid/gid of their own), allocated when they have none:
        the next uid of [uid_min, uid_max] above every uid ever allocated there, gid = uid.
        Uids are never reused, not even after the user is deleted. `Conflict` when the range
        is used up (or, rarely, when another daemon allocated the same uid at once: retry)."""
        ...

    async def get_workload_account(self, user_id: str) -> WorkloadAccount | None:
        """The user's workload account, or None when none was allocated."""
        ...

    async def list_workload_accounts(self) -> list[WorkloadAccount]:
        """Every workload account ever allocated, by uid."""
        ...

    # the event log
    async def append_event(self, *, type: str, user_id: str | None, data: Mapping[str, Any],
                           now: float) -> Event:
        """Persist an event; its `seq` is greater than that of every event before it."""
        ...

    async def list_events(self, *, after_seq: int = 0, limit: int = 100,
                          type: str | None = None, user_id: str | None = None,
                          types: Sequence[str] | None = None, since: float | None = None,
                          until: float | None = None) -> list[Event]:
        """Up to `limit` events with seq > `after_seq`, in seq order. Filters combine: `type`
        (one) and `types` (any of them; an empty sequence matches nothing), `user_id`, and
        `since` <= created_at < `until` (POSIX seconds)."""
        ...

    async def last_event_seq(self) -> int:
        """The `seq` of the newest event in the log (0 when it is empty): where a reader that
        wants only what comes next starts."""
        ...

    # the webhook delivery log
    async def append_webhook_delivery(self, *, webhook: str, url: str, event: Event,
                                      attempt: int, outcome: str, status_code: int | None,
                                      error: str | None, duration_ms: int,
                                      now: float) -> WebhookDelivery:
        """Record one attempt to deliver `event` to the webhook named `webhook` at `url`.
        `outcome` is `delivered`, `retrying` or `failed` (anything else is a ValueError)."""
        ...

    async def list_webhook_deliveries(self, *, after_seq: int = 0, limit: int = 100,
                                      webhook: str | None = None, event_id: str | None = None,
                                      outcome: str | None = None) -> list[WebhookDelivery]:
        """Up to `limit` delivery attempts with seq > `after_seq`, oldest first, optionally
        only those of one webhook, one event or one outcome."""
        ...

    async def purge_webhook_deliveries(self, *, before: float) -> int:
        """Delete the attempts recorded before `before`; return how many."""
        ...


# ----------------------------------------------------------------------------- Container backend

# Labels every workload carries (`ContainerSpec.labels`). A backend stamps `LABEL_DEPLOYMENT` with
# its own deployment id at `create` and `list` returns only workloads carrying it, so two daemons
# sharing one engine (or one state directory) never see, adopt or remove each other's workloads.
LABEL_DEPLOYMENT = "markco.deployment"
LABEL_USER = "markco.user"
LABEL_ROLE = "markco.role"
LABEL_OPERATION = "markco.operation"


def workload_name(deployment_id: str, user_id: str, role: WorkloadRole | str) -> str:
    """The deterministic name of a user's workload: `markco-<deployment>-<user>-<role>`.

    Deterministic so that reconciliation after a crash knows what to look for before anything
    exists (the operation log records it as a target), and so that an engine refuses a second
    workload of the same user and role by name.
    """
    role_name = role.value if isinstance(role, WorkloadRole) else str(role)
    safe_user = "".join(c if c.isalnum() or c in "-_" else "_" for c in user_id)
    return f"markco-{deployment_id}-{safe_user}-{role_name}"


@dataclass(frozen=True)
class ContainerSpec:
    """What to run for one workload of one user. `name` and `labels` are fixed by the caller
    (deterministic: see `workload_name`; labels carry user, role, operation and deployment id).

    Placeholders: `{host}`, `{port}` and `{user_dir}` inside `command` and inside `env` values
    are replaced by the backend with the address the workload must bind (`127.0.0.1` for local
    processes, `0.0.0.0` inside a container's own network namespace), the port it must listen on
    and where the user's directory is as the workload sees it. `port` is that listening port:
    None lets the backend choose (the process backend picks a free one outside the ephemeral
    range; a container backend uses a fixed port of its own). `user_dir` is the HOST path of the
    user's files; a backend whose workloads see other paths (`capabilities().mounts`) mounts it
    and the `mounts` at their container paths. `stop_signal` is what `stop` sends first (the
    runtime, mrmd-python, ignores SIGTERM: its spec says SIGKILL).
    """

    name: str
    user_id: str
    role: WorkloadRole
    command: tuple[str, ...]
    env: Mapping[str, str]
    user_dir: str
    memory_bytes: int
    cpus: float
    labels: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    image: str | None = None
    mounts: tuple[tuple[str, str, bool], ...] = ()  # (host path, container path, read_only)
    stop_signal: str = "SIGTERM"


# `ContainerInfo.status` values. `crashed`: ended with a non-zero status (or vanished) without
# being asked to stop; `oom-killed`: ended because it went over its memory limit.
STATUS_CREATED = "created"
STATUS_RUNNING = "running"
STATUS_EXITED = "exited"
STATUS_CRASHED = "crashed"
STATUS_OOM_KILLED = "oom-killed"


@dataclass(frozen=True)
class ContainerInfo:
    """What a backend reports about one container. `address` is `host:port` where the daemon
    reaches the workload's listening port (None until it is started)."""

    handle: str
    name: str
    user_id: str
    role: WorkloadRole
    status: str  # created | running | exited | crashed | oom-killed
    address: str | None
    labels: Mapping[str, str]
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class ContainerStats:
    """One sample: working-set memory (usage minus inactive file cache), its limit, and the
    cumulative CPU time, so the monitor computes CPU from deltas between samples."""

    memory_working_set: int
    memory_limit: int
    cpu_usage_seconds: float
    sampled_at: float


@dataclass(frozen=True)
class BackendCapabilities:
    """What a backend can do; checkpointers and the monitor ask before they act.

    `update_limits_live`: limits change on a running workload. `enforces_limits`: going over the
    memory limit gets the workload killed (and CPU is throttled). `checkpoint`: a checkpointer can
    work with it. `isolated_network`: each user's workloads have a network of their own.
    `per_user_cgroup`: stats come from a cgroup of the workload's own. `mounts`: workloads see
    their own filesystem, with the user's directory and `ContainerSpec.mounts` mounted in (False:
    they see the host's paths). `pid_namespace`: each workload has a PID namespace of its own.
    """

    update_limits_live: bool
    checkpoint: bool
    isolated_network: bool
    per_user_cgroup: bool
    enforces_limits: bool = True
    mounts: bool = True
    pid_namespace: bool = True
    notes: tuple[str, ...] = ()


@runtime_checkable
class ContainerBackend(Protocol):
    """Runs the editor and runtime of users. Unknown handles raise `NotFound` naming the handle;
    engine failures raise `BackendError` naming the engine and what to do.

    Every method also accepts a workload's `name` where it takes a `handle`. The contract is
    checked by the kit in `markco_trio.testing.backend_kit`.
    """

    name: str

    async def __aenter__(self) -> ContainerBackend: ...

    async def __aexit__(self, *exc_info: object) -> bool | None: ...

    def capabilities(self) -> BackendCapabilities:
        """What this backend can do (networks, limits, checkpointing...); no I/O."""
        ...

    async def prepare_user(self, user_id: str) -> None:
        """Make ready what the user's workloads need before anything is made for them: the
        process backend allocates (once, recorded in storage) the uid/gid they run as. Called
        before `workload_owner` is asked about the user; idempotent and cheap once done."""
        ...

    def workload_owner(self, user_id: str) -> tuple[int, int] | None:
        """The host (uid, gid) the user's workloads run as, so the daemon gives them the files
        and sockets made for them (the runtime front); None: no ownership change is needed.
        Asked only after `prepare_user(user_id)`."""
        ...

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        """Create (not start) a workload; `Conflict` when one with `spec.name` exists."""
        ...

    async def start(self, handle: str) -> ContainerInfo:
        """Start it (again, after a stop or a crash); a running workload is left as it is."""
        ...

    async def stop(self, handle: str, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Send the spec's stop signal, wait up to `timeout` (a grace period, as in Docker's
        API), then kill the whole tree. A workload that is not running is left as it is."""
        ...

    async def remove(self, handle: str) -> None:
        """Stop it if needed and forget it (its logs too)."""
        ...

    async def inspect(self, handle: str) -> ContainerInfo:
        """The workload `handle` as it is now; `NotFound` when it does not exist."""
        ...

    async def list(self, *, user_id: str | None = None) -> list[ContainerInfo]:
        """Containers of this deployment (never another deployment's), optionally of one user."""
        ...

    async def stats(self, handle: str) -> ContainerStats:
        """One sample of a running workload (`BackendError` when it is not running)."""
        ...

    async def logs(self, handle: str, *, tail: int = 200) -> str:
        """The last `tail` lines of its output (stdout and stderr)."""
        ...

    async def update_limits(self, handle: str, *, memory_bytes: int, cpus: float) -> None:
        """Change the limits, of a running workload too when `update_limits_live`."""
        ...


# ---------------------------------------------------------------------------------- Checkpointer


@dataclass(frozen=True)
class CheckpointResult:
    """A finished checkpoint: the archive and what a restore of it depends on.

    `path` is one archive FILE (mode 0600), written under a temporary name and renamed into place
    only once complete, so a half-written archive is never at `path`. `sha256` is of the file's
    bytes (checked before every restore). `depends_on` records what the restore needs to find
    again (e.g. `criu`, `kernel`, `image`, `mrmd_python`); a restore whose dependencies changed
    raises `RestoreIncompatible`, and the caller falls back to a cold start.
    """

    path: str
    size_bytes: int
    sha256: str
    duration_ms: int
    depends_on: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointCapabilities:
    """What a checkpointer can do with one backend's workloads — each flag true only when a test
    of the checkpointer contract kit proves it on that backend.

    `checkpoint`: dump and restore work at all. `leave_running`: a checkpoint can leave the source
    running (snapshots, forks). `restore_as_new`: a restore may use another name (a fork next to
    its source). `established_tcp`: open TCP connections survive a dump/restore. `pre_copy`:
    iterative memory pre-copy (soft-dirty tracking) is available for moves. `notes` say why a
    flag is false.
    """

    checkpoint: bool
    leave_running: bool = False
    restore_as_new: bool = False
    established_tcp: bool = False
    pre_copy: bool = False
    notes: tuple[str, ...] = ()


@runtime_checkable
class Checkpointer(Protocol):
    """Checkpoints and restores users' RUNTIMES (CRIU). It reaches a backend only through the
    typed interfaces the backend exposes for it (declared here, next to this role), never
    through another plugin's internals.

    Errors: `CheckpointUnavailable` (CRIU missing, the kernel refuses, this backend is not
    supported: say how to fix it), `RestoreIncompatible` (the archive depends on something that
    changed: fall back to a cold start), `CheckpointError` for the rest. A failed `checkpoint`
    leaves no file at `archive_path` and the workload as it was (running if it ran). The
    contract is checked by `markco_trio.testing.checkpoint_kit`.
    """

    name: str

    async def __aenter__(self) -> Checkpointer: ...

    async def __aexit__(self, *exc_info: object) -> bool | None: ...

    def capabilities(self, backend: ContainerBackend) -> CheckpointCapabilities:
        """What this checkpointer can do with `backend`'s workloads (checkpoint=False: nothing)."""
        ...

    async def checkpoint(self, backend: ContainerBackend, handle: str, *, archive_path: str,
                         leave_running: bool) -> CheckpointResult:
        """Dump the workload `handle` into ONE archive file at `archive_path`.

        `leave_running=False`: the workload is frozen for the dump and ends stopped (its
        processes gone, its record kept: `inspect` says `exited`), ready to be removed or
        restored; `True`: it keeps running afterwards (a snapshot, or the source of a fork).
        """
        ...

    async def restore(self, backend: ContainerBackend, archive_path: str, *,
                      spec: ContainerSpec, sha256: str | None = None) -> ContainerInfo:
        """Restore the archive as the workload `spec.name` (created by this call; `Conflict`
        when a workload of that name exists), with `spec`'s limits, labels and port, and
        return it running.

        The archive is verified before anything is restored or created: what it records
        about itself (its own checksum), and — when `sha256` is given — the sha256 of the
        whole file, which must equal it (the caller's record, made by `checkpoint` and kept
        outside the archive, so a changed archive cannot vouch for itself). A mismatch is
        `RestoreIncompatible`. The checkpointer hashes the file in the pass that reads it for
        the restore: the caller need not (and should not) hash it first."""
        ...

    def export_archive(self, archive_path: str) -> AsyncIterator[bytes]:
        """An async iterator of the archive's bytes in chunks (streamed, never loaded whole),
        for moving an archive to another host (an `async def` generator implements it)."""
        ...

    async def import_archive(self, chunks: Any, archive_path: str) -> CheckpointResult:
        """Write an archive streamed by `export_archive` (an async iterable of bytes) to
        `archive_path`, atomically, and verify it; returns what it depends on."""
        ...


# ------------------------------------------------ what a container engine backend offers to one


@dataclass(frozen=True)
class EngineFacts:
    """What a container-engine backend says about its engine, for checkpoints to record and
    compare. `kind` is `podman` or `docker`; `checkpoint_api` is True when the engine has a
    checkpoint/restore API the backend speaks (Podman's libpod API: checkpoint with export,
    restore with import); `kernel` is the engine host's kernel release."""

    kind: str
    version: str
    api_version: str
    kernel: str
    oci_runtime: str
    local: bool
    checkpoint_api: bool


@runtime_checkable
class EngineCheckpointing(Protocol):
    """The typed interface a container-engine backend (the `docker` plugin) exposes to a
    checkpointer, so that the checkpointer never reaches into the backend's internals. Every
    method checks that the workload is this backend's (its deployment's): `NotFound` otherwise.

    The archive is the engine's own (Podman: a tar of the container's configuration and the
    CRIU images); the backend streams it and never holds it whole in memory.
    """

    async def engine_facts(self) -> EngineFacts:
        """The engine's kind, versions and host kernel (asked once, then remembered)."""
        ...

    async def image_id(self, image: str) -> str | None:
        """The id of the engine's image `image` (a name or an id); None when it has none."""
        ...

    async def export_checkpoint(self, handle: str, write: Any, *, leave_running: bool,
                                tcp_established: bool = False) -> Mapping[str, Any]:
        """Checkpoint the running workload `handle` through the engine and pass the archive's
        bytes, in order, to `write` (an async callable taking `bytes`). `leave_running=False`:
        the workload ends stopped (`exited`, never counted as a crash). Returns what the archive
        depends on on the engine's side: `image` (name), `image_id`, `user_id`, `role`, `port`.
        Raises `CheckpointUnavailable` when the engine has no checkpoint API, `CheckpointError`
        when it refuses (the workload is then left as it was)."""
        ...

    async def import_checkpoint(self, spec: ContainerSpec, chunks: Any, *,
                                tcp_established: bool = False) -> ContainerInfo:
        """Create the workload `spec.name` from an archive streamed as `chunks` (an async
        iterable of bytes) and return it running, a normal workload of the backend (listed,
        inspected, stopped, removed like any other) with `spec`'s limits. `Conflict` when a
        workload of that name exists; `CheckpointError` when the engine refuses (nothing is
        left behind)."""
        ...


# ---------------------------------------------------- what a process-tree backend offers to one


@dataclass(frozen=True)
class ProcessTree:
    """A running workload as a tree of host processes, for a checkpointer that dumps the tree
    itself (CRIU on the `process` backend).

    `root_pid` is the tree's root — the init of the workload's own PID namespace when
    `namespaces` has "pid" — identified by `start_ticks` (field 22 of `/proc/<pid>/stat`) and
    `boot_id`, so a recycled pid is never dumped. `namespaces` lists those the tree has of its
    own ("pid", "mnt", "net"). `cgroup_dirs` maps controller to the workload's cgroup
    directory; `cgroup_procs` are the `cgroup.procs` files to join (one per hierarchy), so a
    restore can run inside the workload's cgroups and be accounted from its first page.
    `log_path` and `status_path` are the files the tree holds open for its output and its exit
    status: a copy restored under another name is given its own (CRIU `--inherit-fd`).
    `port` is where it listens (inside its own network when "net" is in `namespaces`).
    """

    handle: str
    root_pid: int
    start_ticks: int
    boot_id: str
    namespaces: tuple[str, ...]
    cgroup_dirs: Mapping[str, str]
    cgroup_procs: tuple[str, ...]
    log_path: str
    status_path: str
    port: int | None
    user_id: str
    role: WorkloadRole
    uid: int | None = None


@dataclass(frozen=True)
class RestoreTarget:
    """Where a restored tree goes: the workload `handle` was created (not started) by
    `ProcessTreeCheckpointing.prepare_restore` with the spec's limits and labels; the restore
    runs inside `cgroup_procs` and gives the tree `log_path` and `status_path`."""

    handle: str
    cgroup_procs: tuple[str, ...]
    log_path: str
    status_path: str
    namespaces: tuple[str, ...]


@runtime_checkable
class ProcessTreeCheckpointing(Protocol):
    """The typed interface a process-tree backend (the built-in `process` backend) exposes to a
    checkpointer, so that the checkpointer never reaches into the backend's internals. Every
    method checks that the workload is this backend's (its deployment's): `NotFound` otherwise.

    A checkpoint: `checkpoint_target` → dump the tree → `mark_checkpointed` when the dump ended
    the tree. A restore: `prepare_restore` (the workload record, `Conflict` when the name is
    taken) → restore the tree into the target → `adopt_restored` (the workload is then running,
    tracked by pid + start time + boot id like any other) or, when the restore failed,
    `abandon_restore` (nothing is left).
    """

    def process_tree_support(self) -> tuple[str, ...]:
        """The namespaces each workload gets ("pid", "mnt", "net"): a tree dump needs "pid"."""
        ...

    async def checkpoint_target(self, handle: str) -> ProcessTree:
        """The running workload's tree; `CheckpointError` when it is not running or has no PID
        namespace of its own."""
        ...

    async def mark_checkpointed(self, handle: str) -> None:
        """Record that a checkpoint ended the workload's processes: it is then stopped on
        request (`exited`, not a crash), its record kept."""
        ...

    async def prepare_restore(self, spec: ContainerSpec, *, port: int | None) -> RestoreTarget:
        """Create the workload `spec.name` to receive a restored tree listening on `port`, with
        its cgroups made and `spec`'s limits applied; `Conflict` when the name is taken."""
        ...

    async def adopt_restored(self, handle: str, root_pid: int) -> ContainerInfo:
        """Track the restored tree rooted at `root_pid` as the workload `handle` (running)."""
        ...

    async def abandon_restore(self, handle: str) -> None:
        """Undo `prepare_restore` after a failed restore: kill anything left, remove the record."""
        ...


# -------------------------------------------------------------------------------- OAuth provider


@dataclass(frozen=True)
class AuthorizationRequest:
    """Where to send the browser, and what to keep (server side) until the callback."""

    url: str
    state: str
    code_verifier: str


@dataclass(frozen=True)
class VerifiedIdentity:
    """Who the provider says logged in. `email` is None unless the provider verified it."""

    provider: str
    provider_user_id: str
    login: str
    email: str | None
    name: str | None
    avatar_url: str | None


@runtime_checkable
class OAuthProvider(Protocol):
    """An OAuth login provider (GitHub first). Errors the user should see raise
    `markco_trio.errors.MarkcoError` with a message fit to show on the login page."""

    name: str
    display_name: str

    async def __aenter__(self) -> OAuthProvider: ...

    async def __aexit__(self, *exc_info: object) -> bool | None: ...

    def authorization_request(self, redirect_uri: str) -> AuthorizationRequest:
        """Where to send the browser to log in (the provider's URL with a fresh `state`
        and PKCE verifier), for a callback at `redirect_uri`; no I/O."""
        ...

    async def complete(self, *, params: Mapping[str, str], pending: AuthorizationRequest,
                       redirect_uri: str) -> VerifiedIdentity:
        """Finish a login: check the callback's `params` against `pending` (state, PKCE),
        exchange the code and return the verified identity; `MarkcoError` with a message for the
        login page otherwise."""
        ...


# ----------------------------------------------------------------------- the session authority


@runtime_checkable
class SessionAuthority(Protocol):
    """Who is calling: the role the front door asks on every proxied request (DESIGN §3.1).

    Chosen by `[sessions] provider = "<name>"` (default: the auth plugin's `builtin`);
    registered with `markco_session_authorities`; entered by the daemon after storage, the
    event bus and the OAuth providers, before the front door is built; `ctx.sessions` while
    the daemon runs. The `*_nowait` methods are the hot path: synchronous, no I/O; they
    answer `LOOKUP_NEEDED` (any object that is not a `Principal` and not None) when the
    awaited form must be asked. `markco_trio.testing.session_kit` is the contract's test.

    Attributes:
    - `cookie_name`: the name of the session cookie (markco strips it from every proxied
      request and never lets an editor set it).
    - `login_path`: the path of the login page under the public URL (`/login`), where the
      front door sends a navigation that carries no valid session.
    """

    cookie_name: str
    login_path: str

    def principal_for_cookie_nowait(self, cookie_header: str | None, *,
                                    entering: str | None = None) -> Any:
        """The `Principal` of the session in `cookie_header` from memory, None for nobody,
        or another value (`LOOKUP_NEEDED`) when `principal_for_cookie` must be awaited.
        `entering`: the owner whose editor is entered (an admin's entry counts only there)."""
        ...

    async def principal_for_cookie(self, cookie_header: str | None, *,
                                   entering: str | None = None) -> Principal | None:
        """The `Principal` of the session in `cookie_header`, None when there is none, or it
        is unknown, expired, revoked or tampered with."""
        ...

    async def principal_for_session(self, token: str) -> Principal | None:
        """The `Principal` of a session token (the cookie's value, as the API app's request
        authentication saw it), None when it is not a live session."""
        ...

    async def principal_for_token(self, token: str) -> Principal | None:
        """The `Principal` of an API token (`Authorization: Bearer <token>`), None when it is
        unknown, expired or revoked."""
        ...

    def origin_allowed(self, origin: str | None, referer: str | None = None) -> bool:
        """Whether a request with this `Origin` (or, without one, `Referer`) comes from a
        markco page: WebSocket handshakes and state-changing requests must."""
        ...

    @property
    def revision(self) -> int:
        """A number that moves whenever an answer given before may have become wrong (a
        revocation, a disabled user, a cache flush): whoever holds an answer decides again."""
        ...

    async def wait_revision(self, seen: int) -> int:
        """Wait until `revision` differs from `seen`; the new revision. An open WebSocket
        awaits this to be closed on revocation."""
        ...


# ---------------------------------------------------------------------------- compute control


class ComputeStateView(Protocol):
    """What every reader of a user's compute state may rely on (the built-in's
    `UserComputeState` has more)."""

    @property
    def ready(self) -> bool:
        """The user's editor (and runtime) answer: requests can be forwarded."""
        ...

    @property
    def phase(self) -> str:
        """The latest progress phase (`idle`, `queued`, `ready`, `failed`...)."""
        ...

    @property
    def message(self) -> str:
        """The latest progress, in words for people ("Starting your runtime")."""
        ...

    @property
    def operation(self) -> str | None:
        """The operation in progress (`start`, `stop`, `wake`...), None when idle."""
        ...


class ProgressView(Protocol):
    """One progress event of a start or wake (the built-in's `status.Progress`)."""

    @property
    def phase(self) -> str:
        """The phase reached."""
        ...

    @property
    def message(self) -> str:
        """The phase in words for people."""
        ...

    @property
    def failed(self) -> bool:
        """The operation failed (`message` says why)."""
        ...

    @property
    def done(self) -> bool:
        """The last event of the operation."""
        ...


COMPUTE_REQUESTS = frozenset({"start", "stop", "restart", "sleep", "wake"})


@runtime_checkable
class ComputeControl(Protocol):
    """Users' editors and runtimes, as the front door, the dashboard, the admin page and the
    API reach them.

    Chosen by `[compute_control] provider = "<name>"` (default: the compute plugin's
    `builtin`); registered with `markco_compute_controls`; entered by the daemon after the
    session authority, before the front door is built; `ctx.compute` while the daemon runs.
    The `*_nowait` methods and `request*` are called on hot paths: synchronous, no I/O.
    User ids are checked: a malformed one raises ValueError. Operations that cannot be done
    raise `MarkcoError` subclasses with a message for people.
    `markco_trio.testing.compute_kit` is the contract's test.
    """

    def editor_address_nowait(self, user_id: str) -> tuple[str, int] | None:
        """Where the daemon reaches the user's READY editor (host, port), else None."""
        ...

    def state_nowait(self, user_id: str) -> ComputeStateView:
        """The user's compute state now (never None: a user never started is idle)."""
        ...

    def request_start(self, user_id: str, *, reason: str) -> None:
        """Start (or wake) the user's editor in the background; returns at once. Asking
        again while a start is under way does not start a second one."""
        ...

    def request(self, user_id: str, kind: str, *, reason: str) -> None:
        """Queue one of `COMPUTE_REQUESTS` (start, stop, restart, sleep, wake) in the
        background; returns at once. An unknown `kind` raises ValueError."""
        ...

    async def ensure_started(self, user_id: str, *, reason: str) -> ComputeStateView:
        """Start the user's editor and wait until it is ready; the state then. A start that
        fails raises `MarkcoError` saying why."""
        ...

    async def stop(self, user_id: str, *, reason: str) -> ComputeStateView:
        """Stop the user's editor and runtime and wait; the state then (not ready)."""
        ...

    def record_activity(self, user_id: str, kind: str) -> None:
        """Note activity (`navigation`, `request`, `websocket`...) for idleness decisions."""
        ...

    def last_activity_nowait(self, user_id: str) -> float | None:
        """When activity was last recorded for the user (clock seconds), None if never."""
        ...

    def subscribe_progress(
            self, user_id: str) -> AbstractContextManager[trio.MemoryReceiveChannel[Any]]:
        """A context manager giving a channel of the user's progress events (`ProgressView`)
        from now on, until the block ends. A slow reader loses events, never blocks compute."""
        ...

    def host_names(self) -> list[str]:
        """The hosts runtimes can be placed on (one name for a single-host markco)."""
        ...

    def request_move(self, user_id: str, to_host: str, *, reason: str) -> None:
        """Queue a move of the user's runtime to `to_host`; `MarkcoError` at once when the
        host is unknown or the user runs nothing to move."""
        ...


@runtime_checkable
class ComputeSnapshots(Protocol):
    """Snapshots of a user's runtime: optional for a `ComputeControl` provider. The dashboard
    offers them when `ctx.compute` has these methods (`isinstance(ctx.compute,
    ComputeSnapshots)`)."""

    async def list_snapshots(self, user_id: str) -> list[Snapshot]:
        """The user's snapshots, newest first."""
        ...

    async def create_snapshot(self, user_id: str, name: str, *, reason: str) -> Snapshot:
        """Checkpoint the user's runtime as `name` and wait; `MarkcoError` saying why not."""
        ...

    async def restore_snapshot(self, user_id: str, snapshot: str, *,
                               reason: str) -> Any:
        """Replace the user's runtime with snapshot `snapshot` (a name or id) and wait."""
        ...

    async def delete_snapshot(self, user_id: str, snapshot: str, *, reason: str) -> None:
        """Delete snapshot `snapshot` (a name or id) of the user."""
        ...


# ------------------------------------------------------------------------- supervised services


@dataclass(frozen=True)
class ServiceSpec:
    """A long-running task the daemon supervises. `run(task_status)` must call
    `task_status.started()` once it is ready; readiness of the daemon waits for every service.
    `critical=False` services do not hold `/readyz` back."""

    name: str
    run: Any  # async (task_status=trio.TASK_STATUS_IGNORED) -> None
    critical: bool = True


@dataclass(frozen=True)
class EventObserver:
    """Receives events after they are persisted, through a bounded channel of its own: when it
    falls behind, events are dropped and counted, never blocking the producer."""

    name: str
    handle: Any  # async (Event) -> None
    types: frozenset[str] | None = None
    buffer: int = 256

