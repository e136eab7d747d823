"""Reconciliation when compute starts (a restarted daemon): open operations rolled forward or
back, running workloads adopted without duplicates, dead ones marked, orphans handled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from markco_trio.builtin.compute.specs import labels
from markco_trio.builtin.process_backend import ProcessBackend, ProcessOptions
from markco_trio.records import OperationState, RuntimeState, WorkloadRole
from markco_trio.roles import ContainerSpec, workload_name
from markco_trio.testing.dialing import workload_client

from .harness import Harness, run_harness
from .polling import eventually

pytestmark = pytest.mark.usefixtures("cleanup_workloads")

ROLES = (WorkloadRole.RUNTIME, WorkloadRole.EDITOR)


def names(h: Harness, user_id: str) -> dict[str, str]:
    return {role.value: workload_name(h.service.deployment_id, user_id, role) for role in ROLES}


async def editor_health(h: Harness, user_id: str) -> int:
    await eventually(lambda: h.service.editor_address_nowait(user_id) is not None,
                     what="the editor ready")
    host, port = h.service.editor_address_nowait(user_id)  # type: ignore[misc]
    async with workload_client(f"{host}:{port}") as http:
        return (await http.get("/health")).status_code


async def execute_through_front(h: Harness, user_id: str, code: str) -> str:
    transport = httpx.AsyncHTTPTransport(uds=str(h.service.front_path(user_id)))
    async with httpx.AsyncClient(transport=transport, base_url="http://runtime",
                                 timeout=30, trust_env=False) as front:
        response = await front.post("/mrp/v1/execute", json={"code": code})
    stdout: str = response.json()["stdout"]
    return stdout


async def test_running_workloads_are_adopted_without_duplicates(
        write_compute_config: Callable[..., Path]) -> None:
    config = write_compute_config()
    async with run_harness(config) as first:
        alice, bob = await first.user("alice"), await first.user("bob")
        for user in (alice, bob):
            await first.service.ensure_started(user.id, reason="test")
        await execute_through_front(first, alice.id, "kept = 'state survives'")
        before = {i.handle: i.started_at for i in await first.backend.list()}
    async with run_harness(config) as second:  # the daemon came back
        after = {i.handle: i.started_at for i in await second.backend.list()}
        assert after == before  # the same four processes: none restarted, none added
        for user in (alice, bob):
            assert await editor_health(second, user.id) == 200
            assert len(await second.storage.list_runtimes(user_id=user.id)) == 2
        assert await execute_through_front(second, alice.id, "print(kept)") == \
            "state survives\n"
        await second.settled()
        reconciled = next(e for e in second.events if e.type == "compute.reconciled")
        assert reconciled.data["adopted"] == 4


async def test_an_open_start_whose_workloads_run_is_rolled_forward(
        write_compute_config: Callable[..., Path]) -> None:
    config = write_compute_config()
    async with run_harness(config) as first:
        user = await first.user("carol")
        await first.service.ensure_started(user.id, reason="test")
        # The daemon "died" after launching both, before closing the operation.
        op = await first.storage.create_operation(user_id=user.id, kind="start",
                                                  targets=names(first, user.id), now=1.0)
        for record in await first.storage.list_runtimes(user_id=user.id):
            await first.storage.update_runtime(record.id, now=1.0, state=RuntimeState.STARTING,
                                               operation_id=op.id)
    async with run_harness(config) as second:
        settled = await second.storage.get_operation(op.id)
        assert settled is not None and settled.state == OperationState.DONE
        assert await editor_health(second, user.id) == 200
        await eventually(lambda: second.service.state_nowait(user.id).runtime.ready)
        states = {r.state for r in await second.storage.list_runtimes(user_id=user.id)}
        assert states == {RuntimeState.RUNNING}


async def test_an_open_start_missing_a_workload_is_rolled_back_then_resumed(
        write_compute_config: Callable[..., Path], wpython: object) -> None:
    config = write_compute_config()
    async with run_harness(config) as first:
        user = await first.user("dave")
        targets = names(first, user.id)
        op = await first.storage.create_operation(user_id=user.id, kind="start",
                                                  targets=targets, now=1.0)
        await first.storage.create_runtime(
            user_id=user.id, role=WorkloadRole.RUNTIME, backend="process", host="local",
            state=RuntimeState.STARTING, limits={}, now=1.0, handle=targets["runtime"],
            operation_id=op.id)
        # Only the runtime was launched when the daemon "died".
        spec = ContainerSpec(
            name=targets["runtime"], user_id=user.id, role=WorkloadRole.RUNTIME,
            command=(wpython.python, "-c", "import time; time.sleep(60)"),  # type: ignore
            env={}, user_dir=str(first.service.user_dir(user.id)), memory_bytes=256 << 20,
            cpus=0.5, labels=labels(first.service.deployment_id, user.id,
                                    WorkloadRole.RUNTIME, op.id))
        await first.backend.create(spec)
        await first.backend.start(spec.name)
    async with run_harness(config) as second:
        settled = await second.storage.get_operation(op.id)
        assert settled is not None and settled.state == OperationState.ROLLED_BACK
        await eventually(lambda: second.service.state_nowait(user.id).ready, within=20,
                         what="the resumed start")
        assert await execute_through_front(second, user.id, "print('resumed')") == "resumed\n"
        assert len(await second.backend.list(user_id=user.id)) == 2
        kinds = [o.kind for o in await second.storage.list_operations(user_id=user.id)]
        assert kinds == ["start", "start"]


async def test_an_open_stop_is_rolled_forward(
        write_compute_config: Callable[..., Path]) -> None:
    config = write_compute_config()
    async with run_harness(config) as first:
        user = await first.user("erin")
        await first.service.ensure_started(user.id, reason="test")
        op = await first.storage.create_operation(user_id=user.id, kind="stop",
                                                  targets=names(first, user.id), now=1.0)
    async with run_harness(config) as second:
        settled = await second.storage.get_operation(op.id)
        assert settled is not None and settled.state == OperationState.DONE
        assert await second.backend.list(user_id=user.id) == []
        assert await second.storage.list_runtimes(user_id=user.id) == []


async def test_a_workload_that_died_meanwhile_is_marked_and_started_again(
        write_compute_config: Callable[..., Path]) -> None:
    config = write_compute_config()
    async with run_harness(config) as first:
        user = await first.user("frank")
        await first.service.ensure_started(user.id, reason="test")
        runtime = names(first, user.id)["runtime"]
        deployment, data_dir = first.service.deployment_id, first.ctx.data_dir
    # The runtime dies while no daemon watches.
    async with ProcessBackend(ProcessOptions(), deployment_id=deployment,
                              data_dir=data_dir) as backend:
        await backend.stop(runtime, timeout=0)
    async with run_harness(config) as third:
        await eventually(lambda: third.service.state_nowait(user.id).runtime.ready, within=20,
                         what="the runtime started again")
        history = await third.storage.list_runtimes(user_id=user.id, live_only=False)
        dead = [r for r in history if r.role == WorkloadRole.RUNTIME and
                r.state == RuntimeState.STOPPED]
        assert len(dead) == 1 and "while the daemon was down" in (dead[0].reason or "")
        assert len(await third.backend.list(user_id=user.id)) == 2


async def test_orphans_are_adopted_when_running_and_removed_otherwise(
        write_compute_config: Callable[..., Path], wpython: object) -> None:
    config = write_compute_config()
    async with run_harness(config) as first:
        user = await first.user("grace")
        ghost = "0" * 32  # no such user
        handles = []
        for owner in (user.id, ghost):
            spec = ContainerSpec(
                name=workload_name(first.service.deployment_id, owner, WorkloadRole.RUNTIME),
                user_id=owner, role=WorkloadRole.RUNTIME,
                command=(wpython.python, "-m", "http.server", "--bind", "{host}",  # type: ignore
                         "{port}"),
                env={}, user_dir=str(first.service.user_dir(owner)), memory_bytes=256 << 20,
                cpus=0.5, labels=labels(first.service.deployment_id, owner,
                                        WorkloadRole.RUNTIME, None))
            await first.backend.create(spec)
            await first.backend.start(spec.name)
            handles.append(spec.name)
    async with run_harness(config) as second:
        remaining = [i.handle for i in await second.backend.list()]
        assert remaining == [handles[0]]
        record = await second.storage.get_live_runtime(user.id, WorkloadRole.RUNTIME)
        assert record is not None and record.handle == handles[0]


def test_a_record_finds_its_workload_by_the_backends_handle_as_well_as_by_name() -> None:
    """A docker handle is the container id, not its name: reconciliation keyed by name must
    still find the record's workload (else a running runtime was marked dead, then re-adopted
    as an orphan with its limits forgotten). Pure: the lookup only."""
    from markco_trio.builtin.compute.reconcile import _key
    from markco_trio.roles import ContainerInfo

    info = ContainerInfo(handle="4f2a9c", name="markco-d-u1-runtime", user_id="u1",
                         role=WorkloadRole.RUNTIME, status="running", address="10.0.0.2:8888",
                         labels={})
    containers = {info.name: info}
    assert _key(containers, "4f2a9c") == "markco-d-u1-runtime"
    assert _key(containers, "markco-d-u1-runtime") == "markco-d-u1-runtime"
    assert _key(containers, "gone") == "gone"
    assert _key(containers, None) == ""
