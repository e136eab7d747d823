"""Reading a container's memory cgroup on the engine's host, when the daemon runs there too.

Why: Podman 4's Docker-compatible stats report `usage` with the page cache in it and no
`stats` section to subtract it with, and they report the limit the container was CREATED with,
not the one a live update set. The cgroup files say both truthfully. Docker's own stats carry
`inactive_file` and the live limit, so this is a fallback, used only when the container's
process is visible here and its cgroup path names the container (a daemon in another PID
namespace would otherwise read some unrelated process's cgroup).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# cgroup v1 says "no limit" with a page-rounded LONG_MAX.
_V1_UNLIMITED = 1 << 62


@dataclass(frozen=True)
class CgroupMemory:
    """Memory figures of one cgroup: usage including cache, inactive file cache, limit."""

    usage: int
    inactive_file: int
    limit: int | None  # None: unlimited

    @property
    def working_set(self) -> int:
        """Usage minus the inactive file cache (what the kernel cannot simply drop)."""
        return max(self.usage - self.inactive_file, 0)


def _stat_value(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def memory_cgroup_dir(pid: int, container_id: str, *, root: Path = Path("/")) -> Path | None:
    """The memory cgroup directory of process `pid` if its path names `container_id` (v1's
    `memory` controller first: on a hybrid host the v2 tree has no memory controller)."""
    try:
        lines = (root / "proc" / str(pid) / "cgroup").read_text().splitlines()
    except (OSError, ValueError):
        return None
    v1: Path | None = None
    v2: Path | None = None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if container_id not in path:
            continue
        relative = path.lstrip("/")
        if "memory" in controllers.split(","):
            v1 = root / "sys/fs/cgroup/memory" / relative
        elif hierarchy == "0" and controllers == "":
            v2 = root / "sys/fs/cgroup" / relative
    if v1 is not None and (v1 / "memory.usage_in_bytes").exists():
        return v1
    if v2 is not None and (v2 / "memory.current").exists():
        return v2
    return None


def read_memory(cgroup_dir: Path) -> CgroupMemory | None:
    """The figures of a v1 or v2 memory cgroup directory; None when it is gone or unreadable."""
    try:
        if (cgroup_dir / "memory.usage_in_bytes").exists():  # v1
            usage = int((cgroup_dir / "memory.usage_in_bytes").read_text())
            stat = (cgroup_dir / "memory.stat").read_text()
            raw_limit = int((cgroup_dir / "memory.limit_in_bytes").read_text())
            return CgroupMemory(usage=usage, inactive_file=_stat_value(stat, "total_inactive_file"),
                                limit=None if raw_limit >= _V1_UNLIMITED else raw_limit)
        usage = int((cgroup_dir / "memory.current").read_text())
        stat = (cgroup_dir / "memory.stat").read_text()
        max_text = (cgroup_dir / "memory.max").read_text().strip()
        return CgroupMemory(usage=usage, inactive_file=_stat_value(stat, "inactive_file"),
                            limit=None if max_text == "max" else int(max_text))
    except (OSError, ValueError):
        return None


def container_memory(pid: int, container_id: str, *,
                     root: Path = Path("/")) -> CgroupMemory | None:
    """The memory figures of the container whose main process is `pid`, read on this host;
    None when that is not possible here."""
    if pid <= 0:
        return None
    directory = memory_cgroup_dir(pid, container_id, root=root)
    return read_memory(directory) if directory is not None else None
