"""Reading `/proc`: who a process is, whether it is still the one we started, and its tree.

A PID alone names nothing durable: after the workload dies the kernel may give its number to an
unrelated process, and after a reboot every number is reused. So a workload is tracked by its
`ProcessIdentity` — pid, start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`) and
the boot id — and a process is adopted only when all three match.

These functions read procfs synchronously on purpose: procfs is generated in memory by the
kernel and answers in microseconds, far less than a hop to a worker thread would cost.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
BOOT_ID_PATH = PROC / "sys" / "kernel" / "random" / "boot_id"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as it was when we started it: pid, start time in ticks since boot, boot id."""

    pid: int
    start_ticks: int
    boot_id: str


@dataclass(frozen=True)
class ProcStat:
    """The fields of `/proc/<pid>/stat` we use."""

    pid: int
    state: str
    ppid: int
    session: int
    utime_ticks: int
    stime_ticks: int
    start_ticks: int
    rss_pages: int


def boot_id() -> str:
    """This boot's id (`/proc/sys/kernel/random/boot_id`), read once: `is_alive` asks for it
    on every check, and it cannot change while this process lives."""
    return _read_boot_id(BOOT_ID_PATH)


@functools.cache
def _read_boot_id(path: Path) -> str:
    return path.read_text().strip()


def read_stat(pid: int) -> ProcStat | None:
    """The stat of `pid`, or None when there is no such process."""
    try:
        raw = (PROC / str(pid) / "stat").read_bytes().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces and ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    return ProcStat(pid=pid, state=fields[0], ppid=int(fields[1]), session=int(fields[3]),
                    utime_ticks=int(fields[11]), stime_ticks=int(fields[12]),
                    start_ticks=int(fields[19]), rss_pages=int(fields[21]))


def identify(pid: int) -> ProcessIdentity | None:
    """The identity of the live process `pid` (None if it is gone)."""
    stat = read_stat(pid)
    if stat is None:
        return None
    return ProcessIdentity(pid=pid, start_ticks=stat.start_ticks, boot_id=boot_id())


def is_alive(identity: ProcessIdentity) -> bool:
    """True when `identity` is still running: same boot, same start time, not a zombie."""
    if identity.boot_id != boot_id():
        return False
    stat = read_stat(identity.pid)
    return stat is not None and stat.start_ticks == identity.start_ticks and \
        stat.state not in ("Z", "X", "x")


def all_pids() -> list[int]:
    """Every pid visible in /proc."""
    return [int(name) for name in os.listdir(PROC) if name.isdigit()]


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session `sid`."""
    members = []
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is not None and stat.session == sid and stat.state not in ("Z", "X", "x"):
            members.append(pid)
    return members


def namespace_pids(pid: int) -> tuple[int, ...]:
    """`pid` as each PID namespace sees it, outermost first (`NSpid:`); () if it is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return tuple(int(x) for x in line.split()[1:])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return ()


def usage(pids: list[int]) -> tuple[int, float]:
    """Resident memory (bytes) and CPU time (seconds) summed over `pids` — the fallback when a
    workload has no cgroup of its own (CPU of processes that already exited is not counted)."""
    rss, ticks = 0, 0
    for pid in pids:
        stat = read_stat(pid)
        if stat is None:
            continue
        rss += stat.rss_pages * PAGE_SIZE
        ticks += stat.utime_ticks + stat.stime_ticks
    return rss, ticks / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """The live children of `pid` (from `/proc/<pid>/task/*/children`); [] if it is gone."""
    found: list[int] = []
    try:
        tasks = os.listdir(PROC / str(pid) / "task")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return found
    for task in tasks:
        try:
            found.extend(int(x) for x in
                         (PROC / str(pid) / "task" / task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (not `pid` itself): a namespace's processes lead a
    session of their own, so a session alone does not find them."""
    found: list[int] = []
    pending = children(pid)
    while pending:
        child = pending.pop()
        if child in found:
            continue
        found.append(child)
        pending.extend(children(child))
    return found


def reap(identity: ProcessIdentity) -> bool:
    """Collect `identity` when it is a zombie child of this process — which a workload's root
    becomes when the daemon is a child subreaper (checkpoint restores make it one) — so no
    zombie is left behind. Only this one pid is waited for: never `waitpid(-1)`, which would
    steal the exit statuses trio waits for. True when reaped."""
    stat = read_stat(identity.pid)
    if stat is None or stat.start_ticks != identity.start_ticks or stat.state != "Z" or \
            stat.ppid != os.getpid():
        return False
    try:
        reaped, _ = os.waitpid(identity.pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return reaped == identity.pid
