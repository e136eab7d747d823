"""The contract test kit of the `ContainerBackend` role: what every container backend must do.

A backend's tests subclass `BackendContract` and provide three fixtures:

- `backend`: an entered backend (deployment id of the test's choosing);
- `other_backend`: an entered backend of the same kind, on the same engine (or state directory),
  with ANOTHER deployment id — the kit checks the two never see each other's workloads;
- `spec_factory(user_id, role, *, script=None) -> ContainerSpec`: a runnable spec for that
  backend (and `other_spec_factory`, the same for `other_backend`). Without `script` it runs
  the real workload of `role` (for `runtime`: `mrmd-python --foreground --managed --host
  {host} --port {port}`, stop signal SIGKILL); with `script` it runs
  `python -c <script>` in the backend's environment instead. The name must be
  `workload_name(<backend's deployment id>, user_id, role)` and the labels must carry user and
  role. The kit only ever changes `memory_bytes`, `cpus` and `stop_signal` of what it gets.

    import pytest
    from markco_trio.testing.backend_kit import BackendContract

    class TestMyBackend(BackendContract):
        @pytest.fixture
        async def backend(self, tmp_path):
            async with MyBackend(deployment_id="kit-a", ...) as backend:
                yield backend
        ...

Every test is a trio test (pytest-trio) and checks one behaviour, named for it. Each test uses
fresh user ids and removes every workload it created, even when it fails. The built-in `process`
backend and the `markco-docker` plugin run this same kit.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest
import trio

from .. import dial
from ..errors import BackendError, Conflict, NotFound
from ..records import WorkloadRole
from ..roles import (
    LABEL_ROLE,
    LABEL_USER,
    STATUS_CRASHED,
    STATUS_CREATED,
    STATUS_EXITED,
    STATUS_OOM_KILLED,
    STATUS_RUNNING,
    BackendCapabilities,
    ContainerBackend,
    ContainerInfo,
    ContainerSpec,
    ContainerStats,
)

MiB = 1 << 20

SpecFactory = Callable[..., ContainerSpec]

# Scripts the kit runs through `spec_factory(..., script=...)`. Each prints a marker and stays
# alive (or ends) in a way the test checks. `flush=True`: output goes to a log file, not a tty.
SLEEP_FOREVER = "import time\nprint('kit: up', flush=True)\nwhile True:\n    time.sleep(1)\n"
IGNORE_SIGTERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('kit: ignoring SIGTERM', flush=True)\nwhile True:\n    time.sleep(1)\n")
BURN_CPU = (
    "import time\nprint('kit: burning', flush=True)\n"
    "while True:\n    end = time.process_time() + 0.2\n"
    "    while time.process_time() < end:\n        pass\n    time.sleep(0.05)\n")
SPIN = "print('kit: spinning', flush=True)\nwhile True:\n    pass\n"


def print_marker(marker: str) -> str:
    """A script printing `marker` (stdout) and `marker-err` (stderr), then sleeping."""
    return (f"import sys, time\nprint({marker!r}, flush=True)\n"
            f"print({marker + '-err'!r}, file=sys.stderr, flush=True)\n"
            "while True:\n    time.sleep(1)\n")


def exit_with(code: int) -> str:
    """A script that prints a line and exits with `code`."""
    return f"import sys\nprint('kit: exiting with {code}', flush=True)\nsys.exit({code})\n"


def allocate(total_bytes: int) -> str:
    """A script touching `total_bytes` of memory 8 MiB at a time (pages really committed, not
    calloc'd zero pages), then saying it survived."""
    return ("import time\nchunks = []\n"
            f"while len(chunks) * 8 * 1024 * 1024 < {total_bytes}:\n"
            "    chunks.append(b'\\x01' * (8 * 1024 * 1024))\n"
            "print('kit: survived the allocation', flush=True)\n"
            "while True:\n    time.sleep(1)\n")


async def wait_for_status(backend: ContainerBackend, handle: str, statuses: Iterable[str], *,
                          within: float = 15.0) -> ContainerInfo:
    """Poll `inspect` until the status is one of `statuses`; fail the test after `within` s."""
    wanted = set(statuses)
    info = await backend.inspect(handle)
    with trio.move_on_after(within):
        while info.status not in wanted:
            await trio.sleep(0.05)
            info = await backend.inspect(handle)
        return info
    pytest.fail(f"{handle}: still {info.status!r} after {within:g} s (wanted {sorted(wanted)})")


async def wait_for_log(backend: ContainerBackend, handle: str, text: str, *,
                       within: float = 15.0) -> str:
    """Poll `logs` until they contain `text`; fail the test after `within` seconds."""
    logs = ""
    with trio.move_on_after(within):
        while text not in logs:
            logs = await backend.logs(handle)
            if text in logs:
                break
            await trio.sleep(0.05)
        return logs
    pytest.fail(f"{handle}: {text!r} not in the logs after {within:g} s; logs:\n{logs}")


def fresh_user() -> str:
    """A user id no other test (or earlier run) uses."""
    return uuid.uuid4().hex


class Workloads:
    """The workloads a test created, removed at teardown even when the test fails."""

    def __init__(self, backend: ContainerBackend) -> None:
        self.backend = backend
        self.handles: list[tuple[ContainerBackend, str]] = []

    async def create(self, spec: ContainerSpec, *,
                     backend: ContainerBackend | None = None) -> ContainerInfo:
        """`backend.create(spec)`, remembering the handle for teardown."""
        backend = backend or self.backend
        info = await backend.create(spec)
        self.handles.append((backend, info.handle))
        return info

    async def run(self, spec: ContainerSpec) -> ContainerInfo:
        """Create and start; return the started workload's info."""
        info = await self.create(spec)
        return await self.backend.start(info.handle)

    async def remove_all(self) -> None:
        """Remove everything created (already removed ones are fine)."""
        for backend, handle in reversed(self.handles):
            try:
                await backend.remove(handle)
            except NotFound:
                pass


class BackendContract:
    """The contract of `markco_trio.roles.ContainerBackend`; subclass it (see the module doc)."""

    # Limits the kit uses; a subclass may change them (e.g. for a slow engine).
    memory_bytes = 256 * MiB
    oom_memory_bytes = 64 * MiB
    ready_timeout = 20.0

    @pytest.fixture
    async def workloads(self, backend: ContainerBackend) -> AsyncIterator[Workloads]:
        """Tracks what a test creates and removes it at teardown."""
        tracked = Workloads(backend)
        try:
            yield tracked
        finally:
            with trio.CancelScope(shield=True):
                await tracked.remove_all()

    def _spec(self, spec_factory: SpecFactory, user_id: str, role: WorkloadRole, *,
              script: str | None = None, **changes: Any) -> ContainerSpec:
        spec = spec_factory(user_id, role, script=script) if script is not None else \
            spec_factory(user_id, role)
        assert isinstance(spec, ContainerSpec), "spec_factory must return a ContainerSpec"
        changes.setdefault("memory_bytes", self.memory_bytes)
        return dataclasses.replace(spec, **changes)

    # ------------------------------------------------------------------ create, start, inspect

    async def test_capabilities_describe_the_backend(self, backend: ContainerBackend) -> None:
        caps = backend.capabilities()
        assert isinstance(caps, BackendCapabilities)
        assert isinstance(backend.name, str) and backend.name

    async def test_create_reports_a_created_workload(self, backend: ContainerBackend,
                                                     spec_factory: SpecFactory,
                                                     workloads: Workloads) -> None:
        user = fresh_user()
        spec = self._spec(spec_factory, user, WorkloadRole.RUNTIME, script=SLEEP_FOREVER)
        info = await workloads.create(spec)
        assert info.status == STATUS_CREATED
        assert info.name == spec.name
        assert info.user_id == user
        assert info.role == WorkloadRole.RUNTIME
        assert info.labels[LABEL_USER] == user
        assert info.labels[LABEL_ROLE] == WorkloadRole.RUNTIME.value

    async def test_start_runs_the_workload(self, backend: ContainerBackend,
                                           spec_factory: SpecFactory,
                                           workloads: Workloads) -> None:
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.RUNTIME, script=SLEEP_FOREVER)
        created = await workloads.create(spec)
        started = await backend.start(created.handle)
        assert started.status == STATUS_RUNNING
        assert started.started_at is not None
        assert started.address is not None
        info = await backend.inspect(created.handle)
        assert info.status == STATUS_RUNNING
        assert info.handle == created.handle

    async def test_a_started_runtime_answers_at_its_address(self, backend: ContainerBackend,
                                                           spec_factory: SpecFactory,
                                                           workloads: Workloads) -> None:
        # The daemon reaches a runtime at `address` (readiness checks, the runtime front),
        # dialled with `markco_trio.dial` (host:port, or inside a namespace: netns:...).
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.RUNTIME)
        info = await workloads.run(spec)
        assert info.address is not None
        url = f"{info.address} /mrp/v1/capabilities"
        body = b""
        with trio.move_on_after(self.ready_timeout):
            while True:
                try:
                    status, body = await dial.http_get(info.address, "/mrp/v1/capabilities")
                    if status == 200:
                        break
                except OSError:
                    pass
                await trio.sleep(0.05)
            assert b"mrmd" in body
            return
        logs = await backend.logs(info.handle)
        pytest.fail(f"{url} did not answer within {self.ready_timeout:g} s; logs:\n{logs}")

    async def test_inspect_accepts_the_name(self, backend: ContainerBackend,
                                            spec_factory: SpecFactory,
                                            workloads: Workloads) -> None:
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.EDITOR, script=SLEEP_FOREVER)
        created = await workloads.create(spec)
        info = await backend.inspect(spec.name)
        assert info.handle == created.handle

    async def test_creating_an_existing_name_is_a_conflict(self, backend: ContainerBackend,
                                                           spec_factory: SpecFactory,
                                                           workloads: Workloads) -> None:
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.RUNTIME, script=SLEEP_FOREVER)
        await workloads.create(spec)
        with pytest.raises(Conflict):
            await workloads.create(spec)

    async def test_start_of_a_running_workload_changes_nothing(self, backend: ContainerBackend,
                                                               spec_factory: SpecFactory,
                                                               workloads: Workloads) -> None:
        user = fresh_user()
        spec = self._spec(spec_factory, user, WorkloadRole.RUNTIME, script=SLEEP_FOREVER)
        first = await workloads.run(spec)
        again = await backend.start(first.handle)
        assert again.status == STATUS_RUNNING
        assert again.address == first.address
        assert [i.handle for i in await backend.list(user_id=user)] == [first.handle]

    # ------------------------------------------------------------------------------- listing

    async def test_list_returns_the_workloads_of_one_owner(self, backend: ContainerBackend,
                                                           spec_factory: SpecFactory,
                                                           workloads: Workloads) -> None:
        alice, bob = fresh_user(), fresh_user()
        a_rt = await workloads.create(
            self._spec(spec_factory, alice, WorkloadRole.RUNTIME, script=SLEEP_FOREVER))
        a_ed = await workloads.create(
            self._spec(spec_factory, alice, WorkloadRole.EDITOR, script=SLEEP_FOREVER))
        b_rt = await workloads.create(
            self._spec(spec_factory, bob, WorkloadRole.RUNTIME, script=SLEEP_FOREVER))
        mine = await backend.list(user_id=alice)
        assert sorted(i.handle for i in mine) == sorted([a_rt.handle, a_ed.handle])
        assert {i.role for i in mine} == {WorkloadRole.RUNTIME, WorkloadRole.EDITOR}
        everyone = {i.handle for i in await backend.list()}
        assert {a_rt.handle, a_ed.handle, b_rt.handle} <= everyone

    async def test_list_never_shows_another_deployments_workloads(
            self, backend: ContainerBackend, other_backend: ContainerBackend,
            spec_factory: SpecFactory, other_spec_factory: SpecFactory,
            workloads: Workloads) -> None:
        user = fresh_user()  # the same user id in both deployments
        ours = await workloads.create(
            self._spec(spec_factory, user, WorkloadRole.RUNTIME, script=SLEEP_FOREVER))
        theirs = await workloads.create(
            self._spec(other_spec_factory, user, WorkloadRole.RUNTIME, script=SLEEP_FOREVER),
            backend=other_backend)
        assert ours.name != theirs.name
        assert [i.handle for i in await backend.list(user_id=user)] == [ours.handle]
        assert [i.handle for i in await other_backend.list(user_id=user)] == [theirs.handle]
        assert theirs.handle not in {i.handle for i in await backend.list()}
        assert ours.handle not in {i.handle for i in await other_backend.list()}

    # ------------------------------------------------------------------------- stop, remove

    async def test_stop_ends_the_workload(self, backend: ContainerBackend,
                                          spec_factory: SpecFactory,
                                          workloads: Workloads) -> None:
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.RUNTIME)  # ignores SIGTERM
        info = await workloads.run(spec)
        with trio.fail_after(15):
            await backend.stop(info.handle, timeout=5)
        stopped = await backend.inspect(info.handle)
        assert stopped.status == STATUS_EXITED  # asked to stop: not a crash

    async def test_stop_kills_a_workload_ignoring_its_stop_signal(
            self, backend: ContainerBackend, spec_factory: SpecFactory,
            workloads: Workloads) -> None:
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.EDITOR, script=IGNORE_SIGTERM,
                          stop_signal="SIGTERM")
        info = await workloads.run(spec)
        await wait_for_log(backend, info.handle, "kit: ignoring SIGTERM")
        with trio.fail_after(15):
            await backend.stop(info.handle, timeout=0.5)
        assert (await backend.inspect(info.handle)).status == STATUS_EXITED

    async def test_stop_of_a_stopped_workload_changes_nothing(self, backend: ContainerBackend,
                                                              spec_factory: SpecFactory,
                                                              workloads: Workloads) -> None:
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.RUNTIME, script=SLEEP_FOREVER,
                          stop_signal="SIGKILL")
        info = await workloads.run(spec)
        await backend.stop(info.handle, timeout=1)
        await backend.stop(info.handle, timeout=1)
        assert (await backend.inspect(info.handle)).status == STATUS_EXITED

    async def test_a_stopped_workload_starts_again(self, backend: ContainerBackend,
                                                   spec_factory: SpecFactory,
                                                   workloads: Workloads) -> None:
        marker = f"kit-{uuid.uuid4().hex[:8]}"
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.EDITOR,
                          script=print_marker(marker), stop_signal="SIGKILL")
        info = await workloads.run(spec)
        await backend.stop(info.handle, timeout=1)
        again = await backend.start(info.handle)
        assert again.status == STATUS_RUNNING
        await wait_for_log(backend, info.handle, marker)

    async def test_remove_forgets_the_workload(self, backend: ContainerBackend,
                                               spec_factory: SpecFactory,
                                               workloads: Workloads) -> None:
        user = fresh_user()
        spec = self._spec(spec_factory, user, WorkloadRole.RUNTIME, script=SLEEP_FOREVER,
                          stop_signal="SIGKILL")
        info = await workloads.run(spec)
        await backend.stop(info.handle, timeout=1)
        await backend.remove(info.handle)
        with pytest.raises(NotFound):
            await backend.inspect(info.handle)
        assert await backend.list(user_id=user) == []

    async def test_remove_of_a_running_workload_stops_it_first(self, backend: ContainerBackend,
                                                               spec_factory: SpecFactory,
                                                               workloads: Workloads) -> None:
        user = fresh_user()
        spec = self._spec(spec_factory, user, WorkloadRole.RUNTIME)
        info = await workloads.run(spec)
        with trio.fail_after(15):
            await backend.remove(info.handle)
        assert await backend.list(user_id=user) == []
        # The name is free again: the next start of this user creates it anew.
        again = await workloads.create(spec)
        assert again.status == STATUS_CREATED

    @pytest.mark.parametrize("operation", ["inspect", "start", "stop", "remove", "stats", "logs",
                                           "update_limits"])
    async def test_an_unknown_handle_is_not_found_and_named(self, backend: ContainerBackend,
                                                            operation: str) -> None:
        handle = f"markco-nobody-{uuid.uuid4().hex}"
        method = getattr(backend, operation)
        kwargs: dict[str, Any] = {}
        if operation == "update_limits":
            kwargs = {"memory_bytes": self.memory_bytes, "cpus": 1.0}
        with pytest.raises(NotFound) as raised:
            await method(handle, **kwargs)
        assert handle in str(raised.value)

    # ------------------------------------------------------------------------- stats, logs

    async def test_stats_report_working_set_limit_and_cpu(self, backend: ContainerBackend,
                                                          spec_factory: SpecFactory,
                                                          workloads: Workloads) -> None:
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.RUNTIME, script=BURN_CPU,
                          stop_signal="SIGKILL")
        info = await workloads.run(spec)
        await wait_for_log(backend, info.handle, "kit: burning")
        first = await backend.stats(info.handle)
        assert isinstance(first, ContainerStats)
        assert first.memory_working_set > 0
        assert first.memory_limit == spec.memory_bytes
        await trio.sleep(0.6)
        second = await backend.stats(info.handle)
        assert second.cpu_usage_seconds > first.cpu_usage_seconds
        assert second.sampled_at >= first.sampled_at

    async def test_stats_of_a_workload_not_running_is_an_error(self, backend: ContainerBackend,
                                                               spec_factory: SpecFactory,
                                                               workloads: Workloads) -> None:
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.RUNTIME, script=SLEEP_FOREVER)
        info = await workloads.create(spec)
        with pytest.raises(BackendError):
            await backend.stats(info.handle)

    async def test_logs_contain_the_output(self, backend: ContainerBackend,
                                           spec_factory: SpecFactory,
                                           workloads: Workloads) -> None:
        marker = f"kit-{uuid.uuid4().hex[:8]}"
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.EDITOR,
                          script=print_marker(marker), stop_signal="SIGKILL")
        info = await workloads.run(spec)
        logs = await wait_for_log(backend, info.handle, marker)
        logs = await wait_for_log(backend, info.handle, f"{marker}-err")
        assert logs.count(marker) == 2

    async def test_logs_tail_limits_the_lines(self, backend: ContainerBackend,
                                              spec_factory: SpecFactory,
                                              workloads: Workloads) -> None:
        script = ("import time\nfor i in range(50):\n    print('line', i, flush=True)\n"
                  "print('kit: done', flush=True)\nwhile True:\n    time.sleep(1)\n")
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.EDITOR, script=script,
                          stop_signal="SIGKILL")
        info = await workloads.run(spec)
        await wait_for_log(backend, info.handle, "kit: done")
        tail = await backend.logs(info.handle, tail=3)
        assert tail.splitlines() == ["line 48", "line 49", "kit: done"]

    # ------------------------------------------------------------------------------- limits

    async def test_update_limits_changes_the_reported_limit(self, backend: ContainerBackend,
                                                            spec_factory: SpecFactory,
                                                            workloads: Workloads) -> None:
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.RUNTIME, script=SLEEP_FOREVER,
                          stop_signal="SIGKILL")
        info = await workloads.run(spec)
        await backend.update_limits(info.handle, memory_bytes=2 * self.memory_bytes, cpus=1.0)
        stats = await backend.stats(info.handle)
        assert stats.memory_limit == 2 * self.memory_bytes
        await backend.update_limits(info.handle, memory_bytes=self.memory_bytes, cpus=0.5)
        assert (await backend.stats(info.handle)).memory_limit == self.memory_bytes

    async def test_the_memory_limit_is_honoured(self, backend: ContainerBackend,
                                                spec_factory: SpecFactory,
                                                workloads: Workloads) -> None:
        if not backend.capabilities().enforces_limits:
            pytest.skip(f"{backend.name}: capabilities say limits are not enforced")
        limit = self.oom_memory_bytes
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.RUNTIME,
                          script=allocate(4 * limit), memory_bytes=limit, stop_signal="SIGKILL")
        info = await workloads.run(spec)
        ended = await wait_for_status(backend, info.handle, {STATUS_OOM_KILLED, STATUS_CRASHED},
                                      within=30)
        assert "kit: survived the allocation" not in await backend.logs(info.handle)
        assert ended.exit_code != 0

    async def test_a_crash_is_reported_with_its_exit_code(self, backend: ContainerBackend,
                                                          spec_factory: SpecFactory,
                                                          workloads: Workloads) -> None:
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.RUNTIME, script=exit_with(3))
        info = await workloads.run(spec)
        ended = await wait_for_status(backend, info.handle, {STATUS_CRASHED, STATUS_EXITED,
                                                             STATUS_OOM_KILLED})
        assert ended.status == STATUS_CRASHED
        assert ended.exit_code == 3
        assert ended.finished_at is not None

    async def test_a_clean_exit_is_not_a_crash(self, backend: ContainerBackend,
                                               spec_factory: SpecFactory,
                                               workloads: Workloads) -> None:
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.EDITOR, script=exit_with(0))
        info = await workloads.run(spec)
        ended = await wait_for_status(backend, info.handle, {STATUS_CRASHED, STATUS_EXITED,
                                                             STATUS_OOM_KILLED})
        assert ended.status == STATUS_EXITED
        assert ended.exit_code == 0

    async def test_the_cpu_limit_is_honoured(self, backend: ContainerBackend,
                                             spec_factory: SpecFactory,
                                             workloads: Workloads) -> None:
        if not backend.capabilities().enforces_limits:
            pytest.skip(f"{backend.name}: capabilities say limits are not enforced")
        spec = self._spec(spec_factory, fresh_user(), WorkloadRole.RUNTIME, script=SPIN,
                          cpus=0.25, stop_signal="SIGKILL")
        info = await workloads.run(spec)
        await wait_for_log(backend, info.handle, "kit: spinning")
        first = await backend.stats(info.handle)
        await trio.sleep(1.0)
        second = await backend.stats(info.handle)
        used = second.cpu_usage_seconds - first.cpu_usage_seconds
        elapsed = second.sampled_at - first.sampled_at
        assert 0 < used <= 0.25 * elapsed + 0.15, f"{used:.2f} s of CPU in {elapsed:.2f} s"
