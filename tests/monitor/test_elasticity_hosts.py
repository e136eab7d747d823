"""The elasticity policy with several hosts, on trio's MockClock: memory pressure raises the
limit in place while the runtime's host has room in its budget, else moves the runtime to a
host with room for the bigger limit (and the plan's labels), else tells the user.

Real parts: the reservation ledger (SQLite) and the docker plugin's multi-host backend's
choice of hosts (never entered: no engine is contacted). A stand-in (a mock) replaces the
compute service's actors: these tests are about the decisions; the move itself is proven on
two podman hosts (tests/moves/test_pressure_move.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from markco_docker.hosts import MultiHostBackend
from markco_docker.options import DockerOptions

from markco_trio.builtin.compute import placement
from markco_trio.builtin.compute.elasticity import ElasticityPolicy, PolicySettings
from markco_trio.builtin.compute.moves import MoveFailed
from markco_trio.builtin.compute.options import PlanLimits, WorkloadsOptions
from markco_trio.options import parse_options
from markco_trio.storage.sqlite import SqliteStorage

MiB = 1 << 20
GiB = 1 << 30


def hosts(tmp_path: Path, *, a_budget: int = 1024, b_labels: list[str] | None = None,
          b_budget: int = 2048) -> MultiHostBackend:
    table = {"engine_url": "unix:///run/a.sock", "host_name": "a", "memory_budget_mb": a_budget,
             "hosts": [{"name": "b", "engine_url": "unix:///run/b.sock",
                        "labels": b_labels or [], "memory_budget_mb": b_budget}]}
    options = parse_options(DockerOptions, table, "[compute.docker]")
    return MultiHostBackend(options, deployment_id="d", state_dir=tmp_path)


@dataclass
class Compute:
    """What the policy uses of `ComputeService`; moves and raises are recorded, not run."""

    storage: SqliteStorage
    backend: MultiHostBackend
    options: WorkloadsOptions
    limit: int = 256 * MiB
    refuse_move: bool = False
    moves: list[tuple[str, str, int | None]] = field(default_factory=list)
    raises: list[int] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    notice: tuple[str | None, str | None] = (None, None)

    def __post_init__(self) -> None:
        self.ctx = SimpleNamespace(backend=self.backend, checkpointer=None)

    def now(self) -> float:
        return 1.0

    @property
    def capabilities(self) -> Any:
        return SimpleNamespace(update_limits_live=True)

    def monitored_nowait(self) -> list[Any]:
        return [SimpleNamespace(user_id=u, handle=f"rt-{u}", limits={})
                for u in self.backend.assigned]

    def busy_nowait(self, user_id: str) -> bool:
        return False

    async def raise_memory(self, user_id: str, memory_bytes: int
                           ) -> tuple[dict[str, Any], dict[str, Any]]:
        self.raises.append(memory_bytes)
        before, self.limit = self.limit, memory_bytes
        return {"memory_bytes": before}, {"memory_bytes": memory_bytes}

    async def move(self, user_id: str, to_host: str, *, reason: str,
                   memory_bytes: int | None = None) -> dict[str, Any]:
        self.moves.append((user_id, to_host, memory_bytes))
        if self.refuse_move:
            raise MoveFailed(f"the move to {to_host} failed at restore (engine said no)")
        self.backend.assign(user_id, to_host)
        await placement.move_reservation(self, user_id, to_host,  # type: ignore[arg-type]
                                         memory_bytes or self.limit)
        return {"from": "a", "to": to_host, "total_ms": 900}

    def set_notice(self, user_id: str, text: str | None, notice_id: str | None) -> None:
        self.notice = (text, notice_id)

    def notice_nowait(self, user_id: str) -> tuple[str | None, str | None]:
        return self.notice

    async def publish(self, kind: str, user_id: str | None, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    def decisions(self) -> list[tuple[str, str]]:
        return [(d["action"], d.get("outcome", "")) for k, d in self.events
                if k.startswith("elasticity.")]


PLANS = {"free": PlanLimits(256, 0.5, max_memory_mib=1024),
         "big": PlanLimits(256, 0.5, max_memory_mib=1024, labels=["big-memory"])}


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    async with SqliteStorage(tmp_path / "markco.db") as opened:
        await opened.upgrade()
        yield opened


async def on_host_a(storage: SqliteStorage, multi: MultiHostBackend, *, plan: str = "free",
                    neighbour_mib: int = 0) -> tuple[Compute, str]:
    """A user with a 256 MiB runtime on host `a` (and a neighbour using `neighbour_mib` there)."""
    compute = Compute(storage, multi, WorkloadsOptions(plans=PLANS))
    user = await storage.create_user(username="ada", email=None, name=None, avatar_url=None,
                                     plan=plan, now=1.0)
    multi.assign(user.id, "a")
    await placement.move_reservation(compute, user.id, "a", 256 * MiB)  # type: ignore[arg-type]
    if neighbour_mib:
        await placement.move_reservation(compute, "neighbour", "a",  # type: ignore[arg-type]
                                         neighbour_mib * MiB)
    return compute, user.id


def policy(compute: Compute) -> ElasticityPolicy:
    made = ElasticityPolicy(compute, PolicySettings())  # type: ignore[arg-type]
    made.available = lambda: 64 * GiB  # this machine has room: the hosts' budgets decide
    return made


async def pressure(p: ElasticityPolicy, compute: Compute, user_id: str,
                   trigger: str = "migrate") -> None:
    await p.on_pressure(user_id, trigger, working_set=int(compute.limit * 0.8),
                        limit=compute.limit)


async def test_room_in_the_hosts_budget_means_a_raise_in_place_and_the_ledger_follows(
        tmp_path: Path, storage: SqliteStorage, mock_clock: trio.testing.MockClock) -> None:
    compute, ada = await on_host_a(storage, hosts(tmp_path))
    await pressure(policy(compute), compute, ada)
    assert compute.raises == [384 * MiB] and compute.moves == []
    assert compute.decisions() == [("raise_limit", ""), ("raise_limit", "done")]
    assert await placement.reservations(compute) == {  # type: ignore[arg-type]
        "a": {ada: 384 * MiB}}


async def test_a_full_host_means_a_move_with_the_bigger_limit(
        tmp_path: Path, storage: SqliteStorage, mock_clock: trio.testing.MockClock) -> None:
    # a: 1024 MiB budget, 768 MiB of it the neighbour's: ada's 256 MiB fill it.
    compute, ada = await on_host_a(storage, hosts(tmp_path), neighbour_mib=768)
    await pressure(policy(compute), compute, ada, "urgent-migrate")
    assert compute.raises == []
    assert compute.moves == [(ada, "b", 384 * MiB)]
    assert compute.decisions() == [("move", ""), ("move", "done")]
    decision = compute.events[0][1]
    assert decision["to"] == "b" and decision["to_bytes"] == 384 * MiB
    assert "the host has" in decision["reason"] and "b has room" in decision["reason"]
    assert compute.events[1][1]["took_ms"] == 900
    assert (await placement.reservations(compute))["b"] == {  # type: ignore[arg-type]
        ada: 384 * MiB}


async def test_no_other_host_with_room_means_telling_the_user(
        tmp_path: Path, storage: SqliteStorage, mock_clock: trio.testing.MockClock) -> None:
    compute, ada = await on_host_a(storage, hosts(tmp_path, b_budget=300), neighbour_mib=768)
    await pressure(policy(compute), compute, ada)
    assert compute.moves == [] and compute.raises == []
    assert compute.decisions() == [("notify", ""), ("notify", "done")]
    assert compute.notice[0] is not None and "Memory almost full" in compute.notice[0]


async def test_a_plan_at_its_ceiling_is_not_moved(
        tmp_path: Path, storage: SqliteStorage, mock_clock: trio.testing.MockClock) -> None:
    """A move would not give more memory than the plan's ceiling: the user is told."""
    compute, ada = await on_host_a(storage, hosts(tmp_path), neighbour_mib=768)
    compute.limit = 1024 * MiB
    await pressure(policy(compute), compute, ada)
    assert compute.moves == [] and compute.decisions()[0][0] == "notify"
    assert "ceiling" in compute.events[0][1]["reason"]


async def test_a_move_goes_only_to_a_host_with_the_plans_labels(
        tmp_path: Path, storage: SqliteStorage, mock_clock: trio.testing.MockClock) -> None:
    plain = hosts(tmp_path)
    compute, ada = await on_host_a(storage, plain, plan="big", neighbour_mib=768)
    await pressure(policy(compute), compute, ada)
    assert compute.moves == []  # b has room but not the plan's big-memory label
    assert compute.decisions()[0][0] == "notify"


async def test_a_move_to_a_labelled_host_for_a_labelled_plan(
        tmp_path: Path, storage: SqliteStorage, mock_clock: trio.testing.MockClock) -> None:
    labelled = hosts(tmp_path, b_labels=["big-memory"])
    compute, ada = await on_host_a(storage, labelled, plan="big", neighbour_mib=768)
    await pressure(policy(compute), compute, ada)
    assert compute.moves == [(ada, "b", 384 * MiB)]


async def test_a_failed_move_is_a_failed_outcome_and_the_user_is_told(
        tmp_path: Path, storage: SqliteStorage, mock_clock: trio.testing.MockClock) -> None:
    compute, ada = await on_host_a(storage, hosts(tmp_path), neighbour_mib=768)
    compute.refuse_move = True
    await pressure(policy(compute), compute, ada, "critical")
    assert compute.decisions() == [("move", ""), ("move", "failed"), ("notify", ""),
                                   ("notify", "done")]
    assert "engine said no" in compute.events[1][1]["error"]
    assert compute.notice[0] is not None and "moving it to b failed" in compute.notice[0]


async def test_a_down_host_is_no_target(
        tmp_path: Path, storage: SqliteStorage, mock_clock: trio.testing.MockClock) -> None:
    multi = hosts(tmp_path)
    compute, ada = await on_host_a(storage, multi, neighbour_mib=768)
    multi.mark_down("b", "connection refused")
    await pressure(policy(compute), compute, ada)
    assert compute.moves == [] and compute.decisions()[0][0] == "notify"


async def test_pressure_moves_are_rate_limited_but_critical_is_taken_at_once(
        tmp_path: Path, storage: SqliteStorage, mock_clock: trio.testing.MockClock) -> None:
    compute, ada = await on_host_a(storage, hosts(tmp_path), neighbour_mib=768)
    compute.refuse_move = True
    p = policy(compute)
    await pressure(p, compute, ada)
    await pressure(p, compute, ada)  # within decision_interval: skipped
    assert len(compute.moves) == 1 and p.stats.rate_limited == 1
    await pressure(p, compute, ada, "critical")
    assert len(compute.moves) == 2
