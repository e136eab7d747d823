"""Placement over several hosts, and the reservation ledger that keeps it honest.

A backend over several hosts (the docker backend with `[[compute.docker.hosts]]`) offers the
`HostSet` face below. Placing a user's workloads reserves their memory on a host in the
`host_reservations` table, in ONE serialised write transaction that reads what every host has
reserved and picks the one with the most room: two starts at once (in one daemon or two) never
overbook a host. A user keeps their reservation while they have a runtime (asleep included: a
wake comes back to the same host's budget); a move carries it to the target.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

if TYPE_CHECKING:
    from ...roles import ContainerInfo
    from ...storage.sql import SqlStorage, Tx
    from .service import ComputeService

log = logging.getLogger("markco.compute.placement")


@runtime_checkable
class HostSet(Protocol):
    """What compute needs of a backend over several hosts."""

    primary: str
    draining: set[str]
    pinned: dict[str, str]
    assigned: dict[str, str]
    down: dict[str, str]

    def host_names(self) -> list[str]: ...

    def backend_on(self, host: str) -> Any: ...

    def is_up(self, host: str) -> bool: ...

    def host_of_user(self, user_id: str) -> str: ...

    def located(self, handle: str) -> str | None: ...

    def assign(self, user_id: str, host: str) -> None: ...

    def remember(self, handle: str, host: str) -> None: ...

    def choose(self, memory_bytes: int, labels: Sequence[str], *,
               used: dict[str, int]) -> str: ...

    async def place(self, user_id: str, memory_bytes: int,
                    labels: Sequence[str] = ()) -> str: ...

    async def check_hosts(self) -> dict[str, str | None]: ...

    async def resume_on(self, host: str, handle: str) -> ContainerInfo | None: ...


def hosts_of(svc: ComputeService) -> HostSet | None:
    """The backend's several hosts; None with a one-host backend."""
    backend = getattr(getattr(svc, "ctx", None), "backend", None)
    return backend if isinstance(backend, HostSet) else None


def _sql(svc: ComputeService) -> SqlStorage:
    return cast("SqlStorage", svc.storage)


async def reserve(svc: ComputeService, hosts: HostSet, user_id: str, memory_bytes: int,
                  labels: Sequence[str] = ()) -> str:
    """Reserve `memory_bytes` for `user_id` on the host with the most room (their current
    host if it is still a candidate with room); the host's name. `NoRoom` otherwise."""
    storage = _sql(svc)
    now = svc.now()

    def write(tx: Tx) -> str:
        storage._serialize(tx, "host_reservations")
        used: dict[str, int] = {}
        mine: str | None = None
        for row in tx.execute("SELECT user_id, host, memory_bytes FROM host_reservations"):
            if row["user_id"] == user_id:
                mine = str(row["host"])
                continue
            used[row["host"]] = used.get(row["host"], 0) + int(row["memory_bytes"])
        host = None
        if mine is not None:
            try:  # staying is preferred when the current host still has room
                if hosts.choose(memory_bytes, labels, used={mine: used.get(mine, 0)}) == mine:
                    host = mine
            except Exception:
                host = None
        if host is None:
            host = hosts.choose(memory_bytes, labels, used=used)
        tx.execute("DELETE FROM host_reservations WHERE user_id = ?", (user_id,))
        tx.execute("INSERT INTO host_reservations (user_id, host, memory_bytes, created_at)"
                   " VALUES (?, ?, ?, ?)", (user_id, host, memory_bytes, now))
        return host

    return await storage._write(write)


async def move_reservation(svc: ComputeService, user_id: str, host: str,
                           memory_bytes: int) -> None:
    """The user's reservation is on `host` now (a move's switch)."""
    storage = _sql(svc)
    now = svc.now()

    def write(tx: Tx) -> None:
        storage._serialize(tx, "host_reservations")
        tx.execute("DELETE FROM host_reservations WHERE user_id = ?", (user_id,))
        tx.execute("INSERT INTO host_reservations (user_id, host, memory_bytes, created_at)"
                   " VALUES (?, ?, ?, ?)", (user_id, host, memory_bytes, now))

    await storage._write(write)


async def release(svc: ComputeService, user_id: str) -> None:
    """The user holds no room anywhere (their runtime is gone)."""
    storage = _sql(svc)
    await storage._write(lambda tx: tx.execute(
        "DELETE FROM host_reservations WHERE user_id = ?", (user_id,)))


async def reservations(svc: ComputeService) -> dict[str, dict[str, int]]:
    """Host → user → reserved bytes."""
    rows = await _sql(svc)._read(lambda tx: tx.execute(
        "SELECT user_id, host, memory_bytes FROM host_reservations"))
    result: dict[str, dict[str, int]] = {}
    for row in rows:
        result.setdefault(str(row["host"]), {})[str(row["user_id"])] = int(row["memory_bytes"])
    return result


async def record_host_state(svc: ComputeService, host: str, state: str,
                            reason: str | None) -> None:
    """Persist what a host check found (`up`, `down`, `draining`) for operators."""
    storage = _sql(svc)
    now = svc.now()

    def write(tx: Tx) -> None:
        tx.execute("DELETE FROM hosts WHERE name = ?", (host,))
        tx.execute("INSERT INTO hosts (name, state, reason, checked_at) VALUES (?, ?, ?, ?)",
                   (host, state, reason, now))

    await storage._write(write)


def install(svc: ComputeService, hosts: HostSet) -> None:
    """Make the backend place through the ledger."""

    async def placer(user_id: str, memory_bytes: int, labels: Sequence[str]) -> str:
        return await reserve(svc, hosts, user_id, memory_bytes, labels)

    cast(Any, hosts).placer = placer


# ------------------------------------------------------------------------------ plans' labels


def host_budget(hosts: HostSet, host: str) -> int | None:
    """The memory budget of `host` in bytes (None: unlimited or unknown)."""
    options: dict[str, Any] = getattr(hosts, "host_options", {})
    budget = getattr(options.get(host), "memory_budget_bytes", None)
    return budget if isinstance(budget, int) else None


def host_labels(hosts: HostSet, host: str) -> set[str]:
    """The labels configured on `host` (none when unknown)."""
    options: dict[str, Any] = getattr(hosts, "host_options", {})
    return set(getattr(options.get(host), "labels", ()) or ())


async def plan_labels(svc: ComputeService, user_id: str) -> tuple[str, ...]:
    """The host labels the user's plan needs (`[workloads.plans.X] labels`)."""
    user = await svc.storage.get_user(user_id)
    _, limits = svc.options.limits_for(user.plan if user else None)
    return tuple(limits.labels)


def label_problems(svc: ComputeService, hosts: HostSet) -> list[str]:
    """Plans asking for a host label that no configured host carries (their users could
    never start): one sentence each, saying what to change."""
    have: set[str] = set()
    for host in hosts.host_names():
        have |= host_labels(hosts, host)
    problems = []
    for name, limits in sorted(svc.options.all_plans.items()):
        missing = sorted(set(limits.labels) - have)
        if missing:
            problems.append(
                f"[workloads.plans.{name}] labels: no host carries {', '.join(missing)} "
                f"(hosts: {', '.join(hosts.host_names())}): its users cannot start; add the "
                f"label to a host's labels in [[compute.docker.hosts]] or remove it from "
                f"the plan")
    return problems
