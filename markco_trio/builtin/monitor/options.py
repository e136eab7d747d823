"""`[monitor]`: how often runtimes are sampled, the pressure thresholds, idleness.

    [monitor]
    interval = 5.0                 # seconds between two samples of every running runtime
    idle_timeout = 900.0           # 15 min without intent (DESIGN §3.3), then idle-sleep
    cpu_floor = 0.02               # CPU above 2 % of one core is activity

    [monitor.idle_timeout_by_plan]  # a plan's own idle timeout (seconds)
    free = 300.0
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The original's event names and default percentages (reference/services.md §4.3).
PRESSURE_EVENTS = ("pre-provision", "migrate", "urgent-migrate", "critical")
HINT_EVENTS = ("gpu-hint", "big-ram-hint")
IDLE_EVENTS = ("idle-sleep", "idle-wake")
MONITOR_EVENTS = PRESSURE_EVENTS + IDLE_EVENTS + HINT_EVENTS


@dataclass(frozen=True)
class MonitorOptions:
    """`[monitor]` — the sampling of running runtimes and the events it raises.

    - `enabled`: sample at all (false: no monitor events, no elasticity, no idle sleep).
    - `interval`: seconds between two polls of every running runtime (default 5).
    - `concurrency`: samples taken at once (a bounded `CapacityLimiter`).
    - `sample_timeout`: a sample that takes longer is skipped for this poll (seconds).
    - `pre_provision`, `migrate`, `urgent_migrate`, `critical`: percentages of the runtime's
      real memory limit (working set: usage minus inactive file cache) that raise the event of
      that name (defaults 50, 75, 90, 95; strictly increasing).
    - `margin`: hysteresis, in percentage points: an event fires again only after usage fell
      this far below its threshold (re-armed) — not on every poll above it.
    - `cooldown`: seconds between two events of one type for one runtime (default 60);
      `cooldowns`: per event type, over `cooldown` (e.g. `critical = 10`).
    - `idle_timeout`: seconds without intent (no navigation, no non-GET request through
      `/u/`, no reported input, no execution in flight, CPU under `cpu_floor`) before
      `idle-sleep` (default 900); `idle_timeout_by_plan`: per plan, over it.
    - `cpu_floor`: CPU, as a fraction of one core, above which the runtime counts as busy.
    - `idle_sleep`: put an idle runtime to sleep (checkpoint, stop; needs a checkpointer).
    - `hints`: analyse executed code for GPU and big-data libraries (`gpu-hint`,
      `big-ram-hint`).
    - The policy (compute's elasticity): `raise_factor` multiplies a runtime's memory limit
      under pressure (at least `raise_min_mib` more, at most the plan's `max_memory_mib`),
      while the host keeps `host_reserve_mib` free; `decision_interval` seconds between two
      decisions for one user (`critical` ones are taken at once).
    """

    enabled: bool = True
    interval: float = 5.0
    concurrency: int = 32
    sample_timeout: float = 10.0
    pre_provision: float = 50.0
    migrate: float = 75.0
    urgent_migrate: float = 90.0
    critical: float = 95.0
    margin: float = 5.0
    cooldown: float = 60.0
    cooldowns: dict[str, float] = field(default_factory=dict)
    idle_timeout: float = 900.0
    idle_timeout_by_plan: dict[str, float] = field(default_factory=dict)
    cpu_floor: float = 0.02
    idle_sleep: bool = True
    hints: bool = True
    raise_factor: float = 1.5
    raise_min_mib: int = 64
    host_reserve_mib: int = 512
    decision_interval: float = 30.0

    def __post_init__(self) -> None:
        for name in ("interval", "sample_timeout", "idle_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be more than 0 seconds")
        if self.concurrency < 1:
            raise ValueError("concurrency: must be at least 1")
        levels = [self.pre_provision, self.migrate, self.urgent_migrate, self.critical]
        if not all(0 < a < b for a, b in zip(levels, levels[1:], strict=False)) or \
                levels[0] <= 0 or levels[-1] > 100:
            raise ValueError(f"pre_provision < migrate < urgent_migrate < critical must be "
                             f"percentages between 0 and 100, strictly increasing (got "
                             f"{', '.join(f'{x:g}' for x in levels)})")
        if not 0 <= self.margin < self.pre_provision:
            raise ValueError(f"margin: percentage points from 0 to below pre_provision "
                             f"({self.pre_provision:g}), got {self.margin:g}")
        if self.cooldown < 0:
            raise ValueError("cooldown: must be at least 0 seconds")
        for kind, seconds in self.cooldowns.items():
            if kind not in MONITOR_EVENTS:
                raise ValueError(f"cooldowns: {kind!r} is not a monitor event (one of "
                                 f"{', '.join(MONITOR_EVENTS)})")
            if seconds < 0:
                raise ValueError(f"cooldowns.{kind}: must be at least 0 seconds")
        for plan, seconds in self.idle_timeout_by_plan.items():
            if seconds <= 0:
                raise ValueError(f"idle_timeout_by_plan.{plan}: must be more than 0 seconds")
        if not 1.0 < self.raise_factor <= 8.0:
            raise ValueError(f"raise_factor: more than 1 and at most 8, got "
                             f"{self.raise_factor:g}")
        for name in ("raise_min_mib", "host_reserve_mib"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be at least 0")
        if self.decision_interval < 0:
            raise ValueError("decision_interval: must be at least 0 seconds")
        if not 0 <= self.cpu_floor < 64:
            raise ValueError(f"cpu_floor: a fraction of one core (0.02 is 2 %), got "
                             f"{self.cpu_floor:g}")

    @property
    def levels(self) -> tuple[tuple[str, float], ...]:
        """(event, percentage), highest first."""
        return (("critical", self.critical), ("urgent-migrate", self.urgent_migrate),
                ("migrate", self.migrate), ("pre-provision", self.pre_provision))

    def cooldown_for(self, kind: str) -> float:
        """Seconds between two `kind` events of one runtime."""
        return self.cooldowns.get(kind, self.cooldown)

    def idle_timeout_for(self, plan: str | None) -> float:
        """The idle timeout of a user on `plan`."""
        if plan is not None and plan in self.idle_timeout_by_plan:
            return self.idle_timeout_by_plan[plan]
        return self.idle_timeout
