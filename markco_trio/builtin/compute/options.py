"""`[workloads]`: how the compute plugin runs users' editors and runtimes.

The container backend itself is chosen in `[compute] backend = "..."` (options in
`[compute.<backend>]`); this section is about the lifecycle on top of it: what to run, plans and
their limits, readiness, crash handling, and the runtime front.

    [workloads]
    start_on_login = true

    [workloads.plans.pro]          # overrides (or adds) one plan; the others keep defaults
    memory_mib = 768
    cpus = 1.5
    labels = ["big-memory"]        # several hosts: only hosts with these labels
"""

from __future__ import annotations

from dataclasses import dataclass, field

MiB = 1 << 20
SHUTDOWN_POLICIES = ("keep", "sleep", "stop")
LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True)
class PlanLimits:
    """The limits of a plan: memory in MiB and CPUs (fractions allowed). `max_memory_mib` is
    the ceiling up to which elasticity may raise a running runtime's memory under pressure
    (default: twice `memory_mib`; equal to `memory_mib`: never raised). `labels`: host labels
    the plan's runtimes need (`["big-memory"]`): with several hosts they are placed, and
    moved, only to hosts carrying every one of them."""

    memory_mib: int
    cpus: float
    max_memory_mib: int | None = None
    labels: list[str] = field(default_factory=list, hash=False)

    def __post_init__(self) -> None:
        if self.memory_mib < 32:
            raise ValueError("memory_mib: at least 32")
        if self.cpus <= 0:
            raise ValueError("cpus: more than 0")
        if self.max_memory_mib is not None and self.max_memory_mib < self.memory_mib:
            raise ValueError(f"max_memory_mib ({self.max_memory_mib}) must be at least "
                             f"memory_mib ({self.memory_mib}): it is the ceiling elasticity "
                             f"may raise the plan's memory to")
        for label in self.labels:
            if not label or len(label) > 63 or not set(label) <= LABEL_CHARS:
                raise ValueError(f"labels: {label!r} is not a host label (a-z, 0-9, - and _, "
                                 f"as in [[compute.docker.hosts]] labels)")

    @property
    def max_memory_bytes(self) -> int:
        """The elasticity ceiling in bytes."""
        return (self.max_memory_mib if self.max_memory_mib is not None
                else 2 * self.memory_mib) * MiB

    @property
    def memory_bytes(self) -> int:
        """The memory limit in bytes."""
        return self.memory_mib * MiB


DEFAULT_PLANS: dict[str, PlanLimits] = {
    "free": PlanLimits(memory_mib=256, cpus=0.5),
    "pro": PlanLimits(memory_mib=512, cpus=1.0),
    "team": PlanLimits(memory_mib=1024, cpus=2.0),
}

DEFAULT_RUNTIME_COMMAND = ["mrmd-python", "--foreground", "--managed", "--host", "{host}",
                           "--port", "{port}", "--cwd", "{user_dir}"]


@dataclass(frozen=True)
class WorkloadsOptions:
    """`[workloads]` — the per-user lifecycle of editors and runtimes.

    - `start_on_login`: start the user's runtime, then editor, in the background on login.
    - `runtime_command` / `editor_command`: what runs (placeholders `{host}`, `{port}`,
      `{user_dir}`); a bare name is looked up next to the daemon's Python first (its virtual
      environment), then on PATH. The run_as account of the process backend must be able to
      execute them. `runtime_image` / `editor_image`: for container backends.
    - `plans`: plan name → limits (merged over the defaults free 256 MiB/0.5 CPU, pro 512/1,
      team 1024/2), with `max_memory_mib`, the ceiling elasticity may raise a running
      runtime's memory to (default twice `memory_mib`); `default_plan` for users whose plan
      is unknown. `editor_memory_mib` and `editor_cpus` limit the editor (it is not what
      users pay for).
    - `ready_timeout`: how long a start may take before it fails (seconds).
    - `watch_interval`: how often running workloads are checked for crashes (seconds);
      `plan_check_interval`: how often a running user's plan is compared with their limits.
    - `restart_backoff_initial` / `restart_backoff_max`: delay before restarting a crashed
      workload, doubling per crash; `max_crashes` crashes within `crash_window` seconds make
      it `failed` instead (out-of-memory kills are counted apart and do not count here).
    - `hold_seconds` / `hold_max`: the runtime front holds requests while the runtime starts,
      at most this long and this many at once (then 503).
    - `runtime_port_forwarder`: also serve the front on `127.0.0.1:RUNTIME_PORT` for editors
      that insist on TCP — only where workloads share the host's network (the process backend
      when the daemon is not root; any local process can reach that port). Ignored where
      workloads have network namespaces of their own.
    - `max_concurrent_starts`: starts running at once on this host (the morning wake storm).
    - `stop_timeout`: grace period before a stopping editor is killed (seconds).
    - `on_shutdown`: what stopping the daemon does to running runtimes: `keep` them running (a
      restart or an upgrade; the next daemon adopts them), put them to `sleep` (checkpoint,
      then stop: nothing left running, nothing lost; needs a `[checkpoint] provider`) or
      `stop` them (variables are lost; files stay). It happens once connections are drained,
      shielded from cancellation (a checkpoint half-written is worse than a slow exit), for at
      most `shutdown_seconds`; a runtime that cannot be checkpointed is kept running.
    - `sleep_drain_seconds`: before a checkpoint, how long requests already at the runtime
      front may take to finish (then they are cut; new ones are held until the runtime is back).
    - `snapshots_keep`: named snapshots kept per user (the oldest are removed beyond it; the
      image of a sleeping runtime is always kept until it is woken); `snapshots_max_mib`: all
      archives of one user together (a checkpoint that would go over it is refused);
      `snapshots_min_free_mib`: free disk space a checkpoint leaves at least.
    - `max_forks`: disposable forks of a runtime a user may have at once.
    """

    start_on_login: bool = True
    runtime_command: list[str] = field(default_factory=lambda: list(DEFAULT_RUNTIME_COMMAND))
    editor_command: list[str] = field(default_factory=lambda: ["markco-editor"])
    runtime_image: str = ""
    editor_image: str = ""
    plans: dict[str, PlanLimits] = field(default_factory=dict)
    default_plan: str = "free"
    editor_memory_mib: int = 256
    editor_cpus: float = 1.0
    ready_timeout: float = 30.0
    watch_interval: float = 1.0
    plan_check_interval: float = 30.0
    restart_backoff_initial: float = 1.0
    restart_backoff_max: float = 60.0
    max_crashes: int = 5
    crash_window: float = 600.0
    hold_seconds: float = 30.0
    hold_max: int = 64
    runtime_port_forwarder: bool = True
    max_concurrent_starts: int = 4
    stop_timeout: float = 10.0
    on_shutdown: str = "keep"
    shutdown_seconds: float = 120.0
    sleep_drain_seconds: float = 5.0
    snapshots_keep: int = 5
    snapshots_max_mib: int = 8192
    snapshots_min_free_mib: int = 256
    max_forks: int = 2

    def __post_init__(self) -> None:
        if not self.runtime_command or not self.editor_command:
            raise ValueError("runtime_command and editor_command must not be empty")
        if self.default_plan not in self.all_plans:
            raise ValueError(f"default_plan: {self.default_plan!r} is not a plan (known: "
                             f"{', '.join(sorted(self.all_plans))})")
        for name in ("ready_timeout", "watch_interval", "plan_check_interval",
                     "restart_backoff_initial", "restart_backoff_max", "crash_window",
                     "hold_seconds", "shutdown_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be more than 0")
        if self.restart_backoff_max < self.restart_backoff_initial:
            raise ValueError("restart_backoff_max must be >= restart_backoff_initial")
        for name in ("max_crashes", "hold_max", "max_concurrent_starts", "snapshots_max_mib"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")
        for name in ("snapshots_keep", "max_forks", "snapshots_min_free_mib"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be at least 0")
        if self.sleep_drain_seconds < 0:
            raise ValueError("sleep_drain_seconds: must be at least 0")
        if self.on_shutdown not in SHUTDOWN_POLICIES:
            raise ValueError(f"on_shutdown: {self.on_shutdown!r} is not one of "
                             f"{', '.join(SHUTDOWN_POLICIES)}")

    @property
    def all_plans(self) -> dict[str, PlanLimits]:
        """The default plans with the configured ones over them."""
        return {**DEFAULT_PLANS, **self.plans}

    def limits_for(self, plan: str | None) -> tuple[str, PlanLimits]:
        """(plan name applied, its limits); an unknown plan gets `default_plan`'s."""
        plans = self.all_plans
        if plan in plans:
            assert plan is not None
            return plan, plans[plan]
        return self.default_plan, plans[self.default_plan]

    @property
    def editor_limits(self) -> PlanLimits:
        """The editor's limits."""
        return PlanLimits(memory_mib=self.editor_memory_mib, cpus=self.editor_cpus)
