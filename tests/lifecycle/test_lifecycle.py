"""Sleep, wake, snapshots, restore, forks and shutdown — compute's bookkeeping on real
processes (process backend, real mrmd-python and editor) with the checkpointer TEST DOUBLE of
`fake_checkpointer.py` (memory is not kept: these tests check states, records, archives and
events; `test_checkpoint_e2e.py` checks variables with the real CRIU checkpointer)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from markco_trio.builtin.compute import OperationFailed
from markco_trio.errors import CheckpointError, RestoreIncompatible
from markco_trio.records import OperationState, RuntimeState, WorkloadRole
from markco_trio.testing.dialing import workload_client
from tests.compute.harness import Harness, run_harness
from tests.compute.polling import eventually_async

from .fake_checkpointer import FakeCheckpointer, archive_files

pytestmark = pytest.mark.usefixtures("cleanup_workloads")


@pytest.fixture
def fake() -> FakeCheckpointer:
    return FakeCheckpointer()


@pytest.fixture
async def harness(write_compute_config: Callable[..., Path],
                  fake: FakeCheckpointer) -> AsyncIterator[Harness]:
    async with run_harness(write_compute_config(snapshots_keep=2), checkpointer=fake) as h:
        yield h


async def running_user(h: Harness, name: str = "ada") -> str:
    user = await h.user(name)
    await h.service.ensure_started(user.id, reason="test")
    return user.id


async def live(h: Harness, user_id: str) -> dict[WorkloadRole, RuntimeState]:
    return {r.role: r.state for r in await h.storage.list_runtimes(user_id=user_id)}


async def workloads(h: Harness, user_id: str) -> list[str]:
    return sorted(i.name for i in await h.backend.list(user_id=user_id)
                  if i.status == "running")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def damage(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"X")


def snapshots_root(h: Harness) -> Path:
    return h.service.archive_root


async def test_sleep_stops_the_runtime_before_it_answers(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")
    assert not [n for n in await workloads(harness, uid) if n.endswith("-runtime")]
    assert harness.service.state_nowait(uid).summary == "sleeping"


async def test_sleep_leaves_no_workload_running(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")

    async def none_left() -> bool:
        return await workloads(harness, uid) == []

    await eventually_async(none_left, what="the editor's stop after the sleep")


async def test_sleep_marks_the_runtime_sleeping_and_stops_the_editor(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")

    async def only_sleeping() -> bool:
        return await live(harness, uid) == {WorkloadRole.RUNTIME: RuntimeState.SLEEPING}

    await eventually_async(only_sleeping, what="the editor's record stopped")


async def test_a_wake_right_after_a_sleep_keeps_one_editor(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")
    state = await harness.service.wake(uid, reason="test")
    assert state.ready
    names = await workloads(harness, uid)
    assert len(names) == 2 and any(n.endswith("-editor") for n in names)


async def test_sleep_records_one_private_archive(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")
    [image] = await harness.storage.list_snapshots(uid, kind="sleep")
    path = Path(image.path)
    assert path.parent == snapshots_root(harness) / uid
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert image.sha256 is not None and image.size_bytes == os.stat(path).st_size


async def test_sleep_is_logged_as_one_finished_operation(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")

    async def closed() -> bool:
        ops = [o for o in await harness.storage.list_operations(user_id=uid)
               if o.kind == "sleep"]
        return len(ops) == 1 and ops[0].state == OperationState.DONE

    await eventually_async(closed, what="the sleep's operation closed")
    [op] = [o for o in await harness.storage.list_operations(user_id=uid) if o.kind == "sleep"]
    assert op.targets["archive"].endswith(".img")


async def test_start_of_a_sleeping_user_wakes_it_from_its_image(
        harness: Harness, fake: FakeCheckpointer) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")
    state = await harness.service.ensure_started(uid, reason="navigation")
    assert state.ready and state.summary == "running"
    assert fake.calls[-1][0] == "restore"
    await harness.wait_event("runtime.woken", uid)
    assert [e.data["restored"] for e in harness.events if e.type == "runtime.woken"] == [True]


async def test_wake_releases_the_sleep_image(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")
    await harness.service.wake(uid, reason="test")
    assert await harness.storage.list_snapshots(uid) == []
    assert archive_files(snapshots_root(harness)) == []


async def test_request_start_of_a_sleeping_user_says_waking(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")
    harness.service.request_start(uid, reason="navigation")
    assert harness.service.state_nowait(uid).message == "waking your runtime"


async def test_an_incompatible_image_wakes_a_fresh_runtime_and_says_so(
        harness: Harness, fake: FakeCheckpointer) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")
    fake.fail_restore = RestoreIncompatible("the kernel changed")
    state = await harness.service.wake(uid, reason="test")
    assert state.ready
    assert state.notice is not None and "the kernel changed" in state.notice
    assert "files are intact" in state.notice
    await harness.wait_event("runtime.restore_failed", uid)


async def test_a_damaged_image_is_refused_before_restoring(
        harness: Harness, fake: FakeCheckpointer) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")
    [image] = await harness.storage.list_snapshots(uid, kind="sleep")
    damage(Path(image.path))
    state = await harness.service.wake(uid, reason="test")
    assert state.ready and state.notice is not None and "damaged" in state.notice
    # The checkpointer refused it (against the row's sha256) and created nothing: the runtime
    # running now is the cold start's.
    assert fake.calls[-1][0] == "restore"
    started = await harness.storage.list_events(type="runtime.started", user_id=uid,
                                                limit=1000)
    assert started[-1].data["restored"] is False


async def test_the_editor_tells_the_user_a_wake_started_afresh(
        harness: Harness, fake: FakeCheckpointer) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")
    path = harness.service.front_path(uid)
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)),
                                 base_url="http://runtime", timeout=30,
                                 trust_env=False) as front:
        asleep = await front.get("/markco/v1/notice")
    # Answered by the front itself: null, and the runtime is still asleep.
    assert asleep.status_code == 200 and asleep.json() == {"notice": None, "id": None}
    assert (await live(harness, uid))[WorkloadRole.RUNTIME] == RuntimeState.SLEEPING
    [image] = await harness.storage.list_snapshots(uid, kind="sleep")
    damage(Path(image.path))
    state = await harness.service.ensure_started(uid, reason="navigation")
    assert state.ready and state.notice is not None and "damaged" in state.notice
    [wake] = [o for o in await harness.storage.list_operations(user_id=uid)
              if o.kind == "wake"]
    host, port = harness.service.editor_address_nowait(uid)  # type: ignore[misc]
    async with workload_client(f"{host}:{port}") as editor:
        answer = await editor.get("/api/notice")
    assert answer.status_code == 200
    assert answer.json() == {"notice": state.notice, "id": wake.id}


async def test_a_failed_checkpoint_keeps_the_runtime_running(
        harness: Harness, fake: FakeCheckpointer) -> None:
    uid = await running_user(harness)
    fake.fail_checkpoint = CheckpointError("criu says no")
    with pytest.raises(OperationFailed, match="criu says no"):
        await harness.service.sleep(uid, reason="test")
    state = harness.service.state_nowait(uid)
    assert state.ready and state.runtime.state == RuntimeState.RUNNING
    assert await harness.storage.list_snapshots(uid) == []


async def test_a_full_disk_is_reported_as_such_and_the_runtime_keeps_running(
        harness: Harness, fake: FakeCheckpointer) -> None:
    uid = await running_user(harness)
    full = CheckpointError("writing the archive failed")
    full.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    fake.fail_checkpoint = full
    with pytest.raises(OperationFailed, match="disk is full.*keeps running"):
        await harness.service.sleep(uid, reason="test")
    assert harness.service.state_nowait(uid).ready
    assert archive_files(snapshots_root(harness)) == []


async def test_a_checkpoint_over_the_users_cap_is_refused_up_front(
        write_compute_config: Callable[..., Path], fake: FakeCheckpointer) -> None:
    config = write_compute_config(snapshots_max_mib=1)
    async with run_harness(config, checkpointer=fake) as h:
        uid = await running_user(h)
        with pytest.raises(OperationFailed, match="over the 1 MiB allowed"):
            await h.service.create_snapshot(uid, "big", reason="test")
        assert fake.calls == [] and h.service.state_nowait(uid).ready


async def test_a_snapshot_leaves_the_runtime_running(harness: Harness) -> None:
    uid = await running_user(harness)
    snapshot = await harness.service.create_snapshot(uid, "before", reason="test")
    assert snapshot.kind == "named" and snapshot.name == "before"
    assert harness.service.state_nowait(uid).ready
    assert len(await workloads(harness, uid)) == 2


async def test_a_second_snapshot_of_one_name_is_refused(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.create_snapshot(uid, "one", reason="test")
    with pytest.raises(OperationFailed, match="exists"):
        await harness.service.create_snapshot(uid, "one", reason="test")


async def test_retention_keeps_the_newest_named_snapshots(harness: Harness) -> None:
    uid = await running_user(harness)
    for name in ("a", "b", "c"):
        await harness.service.create_snapshot(uid, name, reason="test")
    kept = await harness.storage.list_snapshots(uid, kind="named")
    assert [s.name for s in kept] == ["b", "c"]
    assert sorted(archive_files(snapshots_root(harness))) == sorted(Path(s.path) for s in kept)


async def test_deleting_a_snapshot_removes_its_row_and_archive(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.create_snapshot(uid, "gone", reason="test")
    await harness.service.delete_snapshot(uid, "gone", reason="test")
    assert await harness.storage.list_snapshots(uid) == []
    assert archive_files(snapshots_root(harness)) == []


async def test_restore_switches_to_the_restored_runtime_and_removes_the_old(
        harness: Harness, fake: FakeCheckpointer) -> None:
    uid = await running_user(harness)
    before = harness.service.state_nowait(uid).runtime.address
    await harness.service.create_snapshot(uid, "s", reason="test")
    state = await harness.service.restore_snapshot(uid, "s", reason="test")
    assert state.ready and state.runtime.address != before
    names = await workloads(harness, uid)
    assert len(names) == 2 and any(n.endswith("-runtime-r") for n in names)


async def test_restore_in_place_keeps_one_runtime_when_restoring_beside_is_impossible(
        harness: Harness, fake: FakeCheckpointer) -> None:
    fake.restore_as_new = False
    uid = await running_user(harness)
    await harness.service.create_snapshot(uid, "s", reason="test")
    state = await harness.service.restore_snapshot(uid, "s", reason="test")
    assert state.ready
    runtimes = [n for n in await workloads(harness, uid) if "-runtime" in n]
    assert len(runtimes) == 1 and runtimes[0].endswith("-runtime")
    assert [c[0] for c in fake.calls] == ["checkpoint", "checkpoint", "restore"]


async def test_a_failed_restore_leaves_the_old_runtime_answering(
        harness: Harness, fake: FakeCheckpointer) -> None:
    uid = await running_user(harness)
    await harness.service.create_snapshot(uid, "s", reason="test")
    fake.fail_restore = CheckpointError("no such luck")
    with pytest.raises(OperationFailed, match="no such luck"):
        await harness.service.restore_snapshot(uid, "s", reason="test")
    assert harness.service.state_nowait(uid).ready
    assert len(await workloads(harness, uid)) == 2


async def test_a_fork_runs_beside_the_original(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.fork(uid, "try", reason="test")
    status, body = await harness.service.execute_in_fork(uid, "try", b'{"code": "print(6*7)"}')
    assert status == 200 and b'"42\\n"' in body
    assert harness.service.state_nowait(uid).ready
    assert harness.service.state_nowait(uid).forks == ("try",)


async def test_a_removed_fork_is_gone(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.fork(uid, "try", reason="test")
    await harness.service.remove_fork(uid, "try", reason="test")
    assert harness.service.fork_address_nowait(uid, "try") is None
    assert len(await workloads(harness, uid)) == 2


async def test_an_execute_at_the_front_wakes_a_sleeping_runtime(harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")
    path = harness.service.front_path(uid)
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)),
                                 base_url="http://runtime", timeout=30,
                                 trust_env=False) as front:
        answer = await front.post("/mrp/v1/execute", json={"code": "print(6 * 7)"})
    assert answer.status_code == 200 and answer.json()["stdout"] == "42\n"


async def test_a_read_at_the_front_of_a_sleeping_runtime_says_asleep(
        harness: Harness) -> None:
    uid = await running_user(harness)
    await harness.service.sleep(uid, reason="test")
    path = harness.service.front_path(uid)
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)),
                                 base_url="http://runtime", timeout=30,
                                 trust_env=False) as front:
        answer = await front.get("/mrp/v1/capabilities")
    assert answer.status_code == 503 and "asleep" in answer.json()["error"]["message"]


async def test_shutdown_with_sleep_leaves_no_workload_and_wakes_after(
        write_compute_config: Callable[..., Path], fake: FakeCheckpointer) -> None:
    config = write_compute_config(on_shutdown="sleep")
    async with run_harness(config, checkpointer=fake) as h:
        uid = await running_user(h)
    async with run_harness(config, checkpointer=fake) as h:
        assert await workloads(h, uid) == []
        assert await live(h, uid) == {WorkloadRole.RUNTIME: RuntimeState.SLEEPING}
        state = await h.service.ensure_started(uid, reason="navigation")
        assert state.ready and fake.calls[-1][0] == "restore"


async def test_shutdown_with_stop_stops_both(
        write_compute_config: Callable[..., Path], fake: FakeCheckpointer) -> None:
    config = write_compute_config(on_shutdown="stop")
    async with run_harness(config, checkpointer=fake) as h:
        uid = await running_user(h)
    async with run_harness(config, checkpointer=fake) as h:
        assert await workloads(h, uid) == [] and await live(h, uid) == {}


async def test_an_unreferenced_archive_is_collected_at_start(
        write_compute_config: Callable[..., Path], fake: FakeCheckpointer,
        data_dir: Path) -> None:
    stray = data_dir / "snapshots" / "someone" / "sleep-123.img.partial"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half")
    async with run_harness(write_compute_config(), checkpointer=fake):
        assert not stray.exists()


async def test_a_crashed_checkpoints_work_directory_is_collected_at_start(
        write_compute_config: Callable[..., Path], fake: FakeCheckpointer,
        data_dir: Path) -> None:
    work = data_dir / "snapshots" / "someone" / ".criu-dump-x" / "images"
    work.mkdir(parents=True)
    (work / "pages-1.img").write_bytes(b"pages")
    async with run_harness(write_compute_config(), checkpointer=fake):
        assert not work.parent.exists()


async def test_a_sleep_without_a_checkpointer_says_how_to_configure_one(
        write_compute_config: Callable[..., Path]) -> None:
    async with run_harness(write_compute_config(), checkpointer=None) as h:
        uid = await running_user(h)
        with pytest.raises(OperationFailed, match=r"\[checkpoint\] provider"):
            await h.service.sleep(uid, reason="test")


def test_archive_directory_is_private(tmp_path: Path) -> None:
    from markco_trio.builtin.compute.archives import user_archive_dir

    path = user_archive_dir(tmp_path / "snapshots", "u1")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
