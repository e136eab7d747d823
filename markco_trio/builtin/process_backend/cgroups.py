"""A cgroup of its own per workload, under the cgroup v1 controllers the machine lets us write.

Layout: `<mount>/<controller>/<parent>/<deployment>/<workload name>` for each of the memory,
cpu, cpuacct, pids and freezer controllers that are mounted and writable. The memory cgroup
enforces the limit and gives the working set (usage minus inactive file cache) and the OOM-kill
counter; cpu throttles (`cpu.cfs_quota_us`); cpuacct counts CPU time; pids caps forks; freezer
stops a whole tree atomically before it is killed, so nothing forks its way out of a stop.

The workload joins its cgroups before it execs (the launcher writes its own pid into each
`cgroup.procs`), so every descendant is counted from the first instruction. cgroup files live in
memory (cgroupfs), so they are read synchronously: microseconds, cheaper than a thread hop.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import BackendError

CGROUP_MOUNT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
CFS_PERIOD_US = 100_000
UNLIMITED = 1 << 62


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def probe(parent: str, deployment_id: str, mount: Path = CGROUP_MOUNT) -> dict[str, Path]:
    """The controllers where this process can make cgroups: controller → the deployment's
    parent cgroup (created). Empty on cgroup v2-only machines or without permission."""
    found: dict[str, Path] = {}
    for controller in CONTROLLERS:
        base = mount / controller
        if not (base / "cgroup.procs").exists():
            continue
        target = base / parent / deployment_id
        try:
            target.mkdir(parents=True, exist_ok=True)
            # A probe cgroup proves we may create children, not only that the parent exists.
            check = target / ".markco-probe"
            check.mkdir(exist_ok=True)
            check.rmdir()
        except OSError:
            continue
        # cpu and cpuacct are often one co-mounted hierarchy: both names then share one
        # directory, which `procs_files` joins once.
        found[controller] = target
    return found


@dataclass
class WorkloadCgroups:
    """The cgroups of one workload (`dirs`: controller → directory)."""

    dirs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def for_workload(cls, parents: dict[str, Path], name: str) -> WorkloadCgroups:
        """The cgroups `name` has (or will have) under the deployment's parents."""
        return cls({controller: parent / name for controller, parent in parents.items()})

    def create(self) -> None:
        """Make the directories (existing ones are reused)."""
        for path in self.dirs.values():
            path.mkdir(exist_ok=True)

    def exist(self) -> bool:
        """Whether the directories were made (at the workload's first start)."""
        return any(path.exists() for path in self.dirs.values())

    def procs_files(self) -> list[str]:
        """Where the launcher writes its pid to join (one per distinct hierarchy)."""
        seen: set[Path] = set()
        files = []
        for path in self.dirs.values():
            real = path.resolve() if path.exists() else path
            if real in seen:
                continue
            seen.add(real)
            files.append(str(path / "cgroup.procs"))
        return files

    @property
    def has_memory(self) -> bool:
        """Whether memory is enforced and measured here."""
        return "memory" in self.dirs

    def set_limits(self, *, memory_bytes: int, cpus: float, pids_max: int) -> None:
        """Apply limits. memory+swap is kept equal to memory (no swapping past the limit); the
        kernel insists memsw >= memory at every moment, hence the order of the writes."""
        memory = self.dirs.get("memory")
        if memory is not None:
            memsw = memory / "memory.memsw.limit_in_bytes"
            current = int(_read(memory / "memory.limit_in_bytes"))
            order = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
            if memory_bytes > current:
                order.reverse()
            for name in order:
                if name.startswith("memory.memsw") and not memsw.exists():
                    continue
                try:
                    _write(memory / name, str(memory_bytes))
                except OSError as exc:
                    if exc.errno == errno.EBUSY:
                        raise BackendError(
                            f"cannot lower the memory limit of {memory.name} to {memory_bytes} "
                            f"bytes: it uses more than that now") from exc
                    raise
        cpu = self.dirs.get("cpu")
        if cpu is not None:
            _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
            quota = max(1000, int(cpus * CFS_PERIOD_US)) if cpus > 0 else -1
            _write(cpu / "cpu.cfs_quota_us", str(quota))
        pids = self.dirs.get("pids")
        if pids is not None:
            _write(pids / "pids.max", str(pids_max) if pids_max > 0 else "max")

    def pids(self) -> list[int]:
        """Every process in the workload's cgroups."""
        found: set[int] = set()
        for path in self.dirs.values():
            try:
                found.update(int(x) for x in _read(path / "cgroup.procs").split())
            except FileNotFoundError:
                continue
        return sorted(found)

    def memory(self) -> tuple[int, int] | None:
        """(working set, limit) in bytes, or None without a memory cgroup."""
        memory = self.dirs.get("memory")
        if memory is None:
            return None
        # memory.usage_in_bytes is "fuzz" in cgroup v1 (charges are batched per CPU, so a small
        # or young workload can read 0); the kernel's advice is RSS + CACHE (+ SWAP) from
        # memory.stat. The working set is that minus the inactive file cache.
        stat: dict[str, int] = {}
        for line in _read(memory / "memory.stat").splitlines():
            key, _, value = line.partition(" ")
            if key in ("total_rss", "total_cache", "total_swap", "total_inactive_file"):
                stat[key] = int(value)
        if "total_rss" in stat and "total_cache" in stat:
            usage = stat["total_rss"] + stat["total_cache"] + stat.get("total_swap", 0)
        else:
            usage = int(_read(memory / "memory.usage_in_bytes"))
        inactive = stat.get("total_inactive_file", 0)
        limit = int(_read(memory / "memory.limit_in_bytes"))
        return max(0, usage - inactive), limit

    def cpu_seconds(self) -> float | None:
        """Cumulative CPU time of everything that ran in the workload, or None without cpuacct."""
        cpuacct = self.dirs.get("cpuacct")
        if cpuacct is None:
            return None
        return int(_read(cpuacct / "cpuacct.usage")) / 1e9

    def oom_kills(self) -> int:
        """How many processes the kernel killed for going over the memory limit (0 unknown)."""
        memory = self.dirs.get("memory")
        if memory is None:
            return 0
        try:
            for line in _read(memory / "memory.oom_control").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except FileNotFoundError:
            pass
        return 0

    def freeze(self, frozen: bool) -> bool:
        """Freeze (or thaw) the whole tree; False when there is no freezer cgroup."""
        freezer = self.dirs.get("freezer")
        if freezer is None or not freezer.exists():
            return False
        _write(freezer / "freezer.state", "FROZEN" if frozen else "THAWED")
        return True

    def remove(self) -> list[Path]:
        """Remove the directories; return those still busy (processes not yet reaped)."""
        busy = []
        for path in self.dirs.values():
            try:
                os.rmdir(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                busy.append(path)
        return busy
