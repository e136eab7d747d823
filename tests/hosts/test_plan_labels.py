"""Plans that need host labels (`[workloads.plans.X] labels`): parsed and validated, honoured
by placement (new runtimes, the ledger, a host a user was on), by the gpu-hint's and a
drain's choice of host, and a plan asking for a label no host has is reported.

Real parts: the ledger (SQLite), the docker plugin's multi-host backend (never entered: no
engine is contacted); the compute service is a stand-in with its storage, clock, backend and
plans (all placement reads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from markco_docker.hosts import MultiHostBackend, NoRoom
from markco_docker.options import DockerOptions

from markco_trio.builtin.compute import moves, placement
from markco_trio.builtin.compute.options import PlanLimits, WorkloadsOptions
from markco_trio.errors import ConfigError
from markco_trio.options import parse_options
from markco_trio.records import RuntimeState, WorkloadRole
from markco_trio.storage.sqlite import SqliteStorage

MiB = 1 << 20


def hosts(tmp_path: Path) -> MultiHostBackend:
    table = {"engine_url": "unix:///run/a.sock", "host_name": "a", "memory_budget_mb": 4096,
             "hosts": [{"name": "big", "engine_url": "unix:///run/b.sock",
                        "labels": ["big-memory"], "memory_budget_mb": 1024},
                       {"name": "gpu", "engine_url": "unix:///run/g.sock",
                        "labels": ["gpu", "big-memory"], "memory_budget_mb": 1024}]}
    return MultiHostBackend(parse_options(DockerOptions, table, "[compute.docker]"),
                            deployment_id="d", state_dir=tmp_path)


def workloads(**plans: Any) -> WorkloadsOptions:
    return parse_options(WorkloadsOptions, {"plans": plans}, "[workloads]")


@dataclass
class Ctx:
    backend: MultiHostBackend


@dataclass
class Service:
    """What placement reads of the compute service."""

    storage: SqliteStorage
    ctx: Ctx
    options: WorkloadsOptions = field(default_factory=lambda: workloads(
        big={"memory_mib": 512, "cpus": 1, "labels": ["big-memory"]}))

    def now(self) -> float:
        return 1.0


def test_a_plans_labels_are_read_from_the_configuration() -> None:
    options = workloads(big={"memory_mib": 512, "cpus": 1, "labels": ["big-memory"]})
    assert options.all_plans["big"].labels == ["big-memory"]
    assert options.all_plans["free"].labels == []


@pytest.mark.parametrize("label", ["Big", "big memory", "", "x" * 64])
def test_a_bad_label_is_refused_naming_the_plan_and_the_rule(label: str) -> None:
    with pytest.raises(ConfigError, match=r"plans.*labels.*a-z, 0-9"):
        workloads(big={"memory_mib": 512, "cpus": 1, "labels": [label]})


def test_a_label_no_host_carries_is_reported(tmp_path: Path) -> None:
    svc: Any = Service(storage=None, ctx=Ctx(hosts(tmp_path)),  # type: ignore[arg-type]
                       options=workloads(tpu={"memory_mib": 512, "cpus": 1,
                                              "labels": ["tpu", "gpu"]}))
    problems = placement.label_problems(svc, svc.ctx.backend)
    assert len(problems) == 1
    assert "[workloads.plans.tpu] labels: no host carries tpu" in problems[0]
    assert "gpu" not in problems[0].split("carries")[1].split("(")[0]


def test_no_problem_when_every_label_has_a_host(tmp_path: Path) -> None:
    svc: Any = Service(storage=None, ctx=Ctx(hosts(tmp_path)))  # type: ignore[arg-type]
    assert placement.label_problems(svc, svc.ctx.backend) == []


async def test_a_labelled_plans_runtime_is_placed_only_on_a_labelled_host(
        tmp_path: Path) -> None:
    multi = hosts(tmp_path)
    async with SqliteStorage(tmp_path / "markco.db") as storage:
        await storage.upgrade()
        svc: Any = Service(storage, Ctx(multi))
        placement.install(svc, multi)
        ada = await storage.create_user(username="ada", email=None, name=None,
                                        avatar_url=None, plan="big", now=1.0)
        bob = await storage.create_user(username="bob", email=None, name=None,
                                        avatar_url=None, plan="free", now=1.0)
        labels = await placement.plan_labels(svc, ada.id)
        assert labels == ("big-memory",)
        # `a` has by far the most room, but not the label.
        assert await multi.place(ada.id, 512 * MiB, labels) in ("big", "gpu")
        assert await multi.place(bob.id, 512 * MiB,
                                 await placement.plan_labels(svc, bob.id)) == "a"


async def test_a_host_the_user_was_on_is_left_when_it_lacks_the_plans_label(
        tmp_path: Path) -> None:
    """E.g. the user's plan changed to one needing big-memory: the next start moves away."""
    multi = hosts(tmp_path)
    multi.assign("u1", "a")
    assert await multi.place("u1", 256 * MiB, ()) == "a"
    assert await multi.place("u1", 256 * MiB, ("big-memory",)) in ("big", "gpu")


async def test_no_labelled_host_with_room_is_a_clear_refusal(tmp_path: Path) -> None:
    multi = hosts(tmp_path)
    async with SqliteStorage(tmp_path / "markco.db") as storage:
        await storage.upgrade()
        svc: Any = Service(storage, Ctx(multi))
        placement.install(svc, multi)
        await multi.place("u1", 1024 * MiB, ("big-memory",))
        await multi.place("u2", 1024 * MiB, ("big-memory",))
        with pytest.raises(NoRoom, match="with labels big-memory has 512 MiB"):
            await multi.place("u3", 512 * MiB, ("big-memory",))
        assert await multi.place("u4", 512 * MiB, ()) == "a"  # unlabelled plans still fit


async def test_a_gpu_hint_for_a_labelled_plan_needs_both_labels(tmp_path: Path) -> None:
    multi = hosts(tmp_path)
    async with SqliteStorage(tmp_path / "markco.db") as storage:
        await storage.upgrade()
        svc: Any = Service(storage, Ctx(multi), options=workloads(
            big={"memory_mib": 512, "cpus": 1, "labels": ["big-memory"]},
            tpu={"memory_mib": 512, "cpus": 1, "labels": ["tpu"]}))
        ada = await storage.create_user(username="ada", email=None, name=None,
                                        avatar_url=None, plan="big", now=1.0)
        record = await storage.create_runtime(
            user_id=ada.id, role=WorkloadRole.RUNTIME, backend="docker", host="big",
            state=RuntimeState.RUNNING, limits={"memory_bytes": 512 * MiB}, now=1.0)
        assert await moves.labelled_host(svc, ada.id, "gpu") == "gpu"
        await storage.update_user(ada.id, plan="tpu")  # no host is gpu AND tpu
        await storage.update_runtime(record.id, now=2.0, host="a")
        assert await moves.labelled_host(svc, ada.id, "gpu") is None


def test_plan_limits_stay_comparable() -> None:
    assert PlanLimits(256, 0.5, labels=["gpu"]) == PlanLimits(256, 0.5, labels=["gpu"])
    assert PlanLimits(256, 0.5, labels=["gpu"]) != PlanLimits(256, 0.5)
