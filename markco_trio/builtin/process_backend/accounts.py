"""Per-user host accounts of the process backend: where they are recorded, and the uid range.

Each user's workloads run as a uid/gid of their own (gid = uid), allocated once from
`[compute.process] uid_range` and recorded in storage (`Storage.allocate_workload_account`), so a
restarted daemon — or a second one on the same database — gives a user the same account, and
never gives one user's uid to another. There is no /etc/passwd entry: `setpriv` switches to bare
numbers, and files show them as numbers.
"""

from __future__ import annotations

import grp
import pwd
from pathlib import Path
from typing import Protocol

from ...errors import Conflict
from ...records import WorkloadAccount

__all__ = ["Accounts", "MemoryAccounts", "parse_uid_range", "range_conflicts"]


class Accounts(Protocol):
    """Where accounts are recorded: the daemon's `Storage` has these methods."""

    async def allocate_workload_account(self, user_id: str, *, uid_min: int, uid_max: int,
                                        now: float) -> WorkloadAccount: ...

    async def list_workload_accounts(self) -> list[WorkloadAccount]: ...


class MemoryAccounts:
    """Accounts kept in memory (tests, and a backend made without storage): the same rules as
    storage's, forgotten when the process ends."""

    def __init__(self) -> None:
        self._accounts: dict[str, WorkloadAccount] = {}

    async def allocate_workload_account(self, user_id: str, *, uid_min: int, uid_max: int,
                                        now: float) -> WorkloadAccount:
        """The user's account, allocated above every uid given so far."""
        account = self._accounts.get(user_id)
        if account is not None:
            return account
        taken = [a.uid for a in self._accounts.values() if uid_min <= a.uid <= uid_max]
        uid = max(taken) + 1 if taken else uid_min
        if uid > uid_max:
            raise Conflict(f"the workload uid range {uid_min}-{uid_max} is used up")
        account = self._accounts[user_id] = WorkloadAccount(user_id, uid, uid, now)
        return account

    async def list_workload_accounts(self) -> list[WorkloadAccount]:
        """Every account, by uid."""
        return sorted(self._accounts.values(), key=lambda a: a.uid)


def parse_uid_range(text: str) -> tuple[int, int]:
    """`"200000-299999"` → (200000, 299999); ValueError naming the problem. The range must stay
    clear of system and login accounts (below 65536 here: typical hosts give those out)."""
    low, sep, high = text.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"uid_range: expected LOW-HIGH such as 200000-299999, got {text!r}")
    lo, hi = int(low), int(high)
    if not 65536 <= lo <= hi < 2**31 - 1:
        raise ValueError(f"uid_range: expected 65536 <= LOW <= HIGH < 2147483647 (clear of the "
                         f"host's own accounts), got {text!r}")
    return lo, hi


def range_conflicts(uid_range: tuple[int, int], *, etc: Path = Path("/etc")) -> list[str]:
    """Who else on this host may hold ids of `uid_range`: accounts and groups (passwd, group)
    and subordinate id ranges (/etc/subuid, /etc/subgid: rootless containers run as those host
    ids). Sharing an id with them would give them a user's files. [] when the range is clear."""
    low, high = uid_range
    found = [f"user {e.pw_name} (uid {e.pw_uid})" for e in pwd.getpwall()
             if low <= e.pw_uid <= high]
    found += [f"group {e.gr_name} (gid {e.gr_gid})" for e in grp.getgrall()
              if low <= e.gr_gid <= high]
    for name in ("subuid", "subgid"):
        try:
            lines = (etc / name).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.strip().split(":")
            if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
                continue
            start, count = int(fields[1]), int(fields[2])
            if start <= high and low <= start + count - 1:
                found.append(f"{fields[0]}'s {name} range {start}-{start + count - 1}")
    return found
