"""What a workload is given on podman, beyond the contract kit: no privileges, the user's
directory and nothing else writable, honest memory figures, OOM kills named, limits kept."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from markco_docker import DockerBackend
from markco_docker.oom import kernel_log_records

from markco_trio.errors import BackendError
from markco_trio.records import WorkloadRole
from markco_trio.roles import STATUS_OOM_KILLED, STATUS_RUNNING
from markco_trio.testing.backend_kit import (
    SLEEP_FOREVER,
    Workloads,
    allocate,
    fresh_user,
    wait_for_log,
    wait_for_status,
)
from markco_trio.testing.system import system_required

pytestmark = pytest.mark.system

SpecFactory = Any
MiB = 1 << 20

INSPECT_SELF = r"""
import json, os
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
              if ":\t" in line)
def writable(path):
    try:
        with open(os.path.join(path, ".probe"), "w") as f:
            f.write("x")
        os.unlink(os.path.join(path, ".probe"))
        return True
    except OSError:
        return False
with open("/workspace/hello.txt", "w") as f:
    f.write("written in the container")
print("self: " + json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "cap_eff": status["CapEff"].strip(),
    "cap_bnd": status["CapBnd"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
    "pid1": open("/proc/1/cmdline").read().split("\0")[0],
    "writable": {p: writable(p) for p in ("/", "/etc", "/usr", "/tmp", "/workspace")},
    "cwd": os.getcwd(), "home": os.environ.get("HOME")}), flush=True)
import time
while True:
    time.sleep(1)
"""


async def test_a_workload_runs_unprivileged_with_only_its_directory_writable(
        backend: DockerBackend, spec_factory: SpecFactory, workloads: Workloads) -> None:
    spec = spec_factory(fresh_user(), WorkloadRole.RUNTIME, script=INSPECT_SELF)
    info = await workloads.run(spec)
    logs = await wait_for_log(backend, info.handle, "self: ")
    seen = json.loads(next(x for x in logs.splitlines() if x.startswith("self: "))[6:])
    assert (seen["uid"], seen["gid"]) == backend.options.uid_gid
    assert seen["cap_eff"] == seen["cap_bnd"] == "0000000000000000"
    assert seen["no_new_privs"] == "1"
    # The runtime is PID 1 itself: podman's init is a bind-mounted host file that CRIU cannot
    # restore, and the runtime is stopped with SIGKILL anyway (its spec's stop signal).
    assert "python" in seen["pid1"]
    assert seen["writable"] == {"/": False, "/etc": False, "/usr": False, "/tmp": True,
                                "/workspace": True}
    assert (seen["cwd"], seen["home"]) == ("/workspace", "/tmp")
    written = Path(spec.user_dir) / "hello.txt"
    assert written.read_text() == "written in the container"  # the host's user directory
    assert (written.stat().st_uid, written.stat().st_gid) == backend.options.uid_gid


async def test_an_editor_has_an_init_as_pid_1_so_signals_reach_it(
        backend: DockerBackend, spec_factory: SpecFactory, workloads: Workloads) -> None:
    info = await workloads.run(spec_factory(fresh_user(), WorkloadRole.EDITOR,
                                            script=INSPECT_SELF))
    logs = await wait_for_log(backend, info.handle, "self: ")
    seen = json.loads(next(x for x in logs.splitlines() if x.startswith("self: "))[6:])
    assert "python" not in seen["pid1"]


async def test_the_engine_holds_the_limits_and_hardening(
        backend: DockerBackend, spec_factory: SpecFactory, workloads: Workloads) -> None:
    info = await workloads.create(spec_factory(fresh_user(), WorkloadRole.RUNTIME,
                                               script=SLEEP_FOREVER))
    host = (await backend.engine.request("GET", f"/containers/{info.handle}/json")).json()[
        "HostConfig"]
    assert host["Privileged"] is False
    assert host["ReadonlyRootfs"] is True
    assert host["PidsLimit"] == backend.options.pids_limit
    assert host["Memory"] == 256 * MiB
    assert host["NanoCpus"] == 500_000_000
    assert any("no-new-privileges" in opt for opt in host["SecurityOpt"])
    assert host["CapDrop"]  # ALL (podman lists its default set by name)
    assert not host.get("CapAdd")


async def test_stats_do_not_count_the_page_cache(
        backend: DockerBackend, spec_factory: SpecFactory, workloads: Workloads) -> None:
    script = ("import os, time\n"
              "with open('/workspace/big', 'wb') as f:\n"
              "    for _ in range(96):\n        f.write(os.urandom(1 << 20))\n"
              "open('/workspace/big', 'rb').read()\n"
              "print('cached', flush=True)\nwhile True:\n    time.sleep(1)\n")
    info = await workloads.run(spec_factory(fresh_user(), WorkloadRole.RUNTIME, script=script))
    await wait_for_log(backend, info.handle, "cached")
    stats = await backend.stats(info.handle)
    assert stats.memory_working_set < 64 * MiB, stats  # ~10 MiB of python, not 96 MiB of cache


@pytest.mark.skipif(not kernel_log_records() and not system_required(),
                    reason="the kernel log is not readable here (a failure in CI)")
async def test_an_oom_kill_is_reported_as_such(
        backend: DockerBackend, spec_factory: SpecFactory, workloads: Workloads) -> None:
    spec = dataclasses.replace(
        spec_factory(fresh_user(), WorkloadRole.RUNTIME, script=allocate(256 * MiB)),
        memory_bytes=64 * MiB, stop_signal="SIGKILL")
    info = await workloads.run(spec)
    ended = await wait_for_status(backend, info.handle, {STATUS_OOM_KILLED}, within=30)
    assert ended.exit_code == 137


async def test_limits_updated_live_are_kept_across_a_restart(
        backend: DockerBackend, spec_factory: SpecFactory, workloads: Workloads) -> None:
    spec = spec_factory(fresh_user(), WorkloadRole.RUNTIME, script=SLEEP_FOREVER)
    info = await workloads.run(spec)
    await backend.update_limits(info.handle, memory_bytes=512 * MiB, cpus=1.0)
    await backend.stop(info.handle, timeout=0)
    assert (await backend.start(info.handle)).status == STATUS_RUNNING
    assert (await backend.stats(info.handle)).memory_limit == 512 * MiB


async def test_a_user_directory_made_by_root_is_given_to_the_workloads(
        backend: DockerBackend, spec_factory: SpecFactory, workloads: Workloads) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root hands directories over")
    spec = spec_factory(fresh_user(), WorkloadRole.RUNTIME, script=SLEEP_FOREVER)
    notebook = Path(spec.user_dir) / "Projects" / "welcome.md"
    notebook.parent.mkdir(parents=True)
    notebook.write_text("# hello\n")  # scaffolded by the daemon, as root
    await workloads.create(spec)
    uid_gid = backend.options.uid_gid
    for path in (Path(spec.user_dir), notebook.parent, notebook):
        assert (path.stat().st_uid, path.stat().st_gid) == uid_gid, path


async def test_a_host_socket_mounted_into_the_editor_is_reachable_by_it(
        backend: DockerBackend, spec_factory: SpecFactory, workloads: Workloads,
        tmp_path: Path) -> None:
    # The runtime front's shape: the daemon listens on a 0600 socket in a 0700 directory of
    # the user's, given to the workloads' uid, mounted into the editor at /run/markco.
    uid, gid = backend.options.uid_gid
    front = tmp_path / "front"
    front.mkdir(mode=0o700)
    path = front / "runtime.sock"
    with trio.socket.socket(trio.socket.AF_UNIX) as listener:
        await listener.bind(str(path))
        listener.listen()
        if os.geteuid() == 0:
            os.chown(front, uid, gid)
            os.chown(path, uid, gid)
        os.chmod(path, 0o600)
        script = ("import socket, time\ns = socket.socket(socket.AF_UNIX)\n"
                  "s.connect('/run/markco/runtime.sock')\nprint('front says', "
                  "s.recv(100).decode(), flush=True)\nwhile True:\n    time.sleep(1)\n")
        spec = dataclasses.replace(
            spec_factory(fresh_user(), WorkloadRole.EDITOR, script=script),
            mounts=((str(front), "/run/markco", False),), stop_signal="SIGKILL")
        info = await workloads.run(spec)
        with trio.fail_after(15):
            connection, _ = await listener.accept()
        with connection:
            await connection.send(b"pong")
        await wait_for_log(backend, info.handle, "front says pong")


async def test_the_engine_version_is_negotiated(backend: DockerBackend) -> None:
    version = backend.engine.version
    assert version.is_podman and version.api_version == "1.41"
    assert backend.capabilities().checkpoint  # podman's checkpoint API (with a working CRIU)


async def test_a_missing_image_is_named_when_the_backend_starts(
        make_backend: Callable[..., DockerBackend]) -> None:
    backend = make_backend("missing-image", editor_image="localhost/markco-nothing:none")
    with pytest.raises(BackendError) as raised:
        async with backend:
            pass  # pragma: no cover
    message = str(raised.value)
    assert "localhost/markco-nothing:none" in message
    assert "scripts/setup-podman" in message and "editor_image" in message
