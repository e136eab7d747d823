"""Benchmark of the criu checkpointer's own layer on the process backend: checkpoint (leave
stopped) and restore until the first execution answers, for an idle mrmd-python runtime and one
holding 200 MB of Python objects, against a cold start (create + start + first execution)
measured in the same run. No daemon: the checkpointer and the backend, as the compute plugin
calls them (`bench/checkpoint.py` measures the whole path through a daemon).

    sudo .venv/bin/python bench/criu_process.py [--runs 5] [--big-runs 2]

Needs root and CRIU (`scripts/setup-criu`). Prints each run, then medians and minimums, and
the machine's load (the numbers of a loaded 2-core machine are not a quiet one's).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import trio
from markco_criu import CriuCheckpointer

from markco_trio.builtin.process_backend import ProcessBackend, ProcessOptions
from markco_trio.builtin.process_backend.cgroups import CGROUP_MOUNT, CONTROLLERS
from markco_trio.records import WorkloadRole
from markco_trio.roles import LABEL_ROLE, LABEL_USER, ContainerSpec, workload_name
from markco_trio.testing.checkpoint_kit import BIG_CHECK, BIG_OBJECT, value_of, wait_answering
from markco_trio.testing.workload_python import workload_python

MiB = 1 << 20


async def one_run(backend: ProcessBackend, checkpointer: CriuCheckpointer, root: Path,
                  deployment: str, mrmd_python: str, *, big: bool) -> dict[str, float]:
    user = uuid.uuid4().hex[:8]
    name = workload_name(deployment, user, WorkloadRole.RUNTIME)
    spec = ContainerSpec(
        name=name, user_id=user, role=WorkloadRole.RUNTIME,
        command=(mrmd_python, "--foreground", "--managed", "--host", "{host}", "--port",
                 "{port}", "--cwd", "{user_dir}"),
        env={}, user_dir=str(root / "users" / user), memory_bytes=1024 * MiB, cpus=1.0,
        labels={LABEL_USER: user, LABEL_ROLE: "runtime"}, stop_signal="SIGKILL")
    started = time.monotonic()
    await backend.create(spec)
    info = await backend.start(name)
    await wait_answering(info.address, within=60)
    await value_of(info.address or "", "x = 42")
    cold = time.monotonic() - started
    if big:
        await value_of(info.address or "", BIG_OBJECT.format(size=200 * MiB))
    archive = str(root / "archives" / f"{user}.ckpt")
    started = time.monotonic()
    result = await checkpointer.checkpoint(backend, name, archive_path=archive,
                                           leave_running=False)
    sleep = time.monotonic() - started
    await backend.remove(name)
    started = time.monotonic()
    info = await checkpointer.restore(backend, archive, spec=spec, sha256=result.sha256)
    answer = await value_of(info.address or "", BIG_CHECK if big else "x")
    wake = time.monotonic() - started
    assert answer == (str(200 * MiB) if big else "42"), answer
    await backend.remove(name)
    os.unlink(archive)
    return {"cold": cold, "sleep": sleep, "wake": wake, "archive_mib": result.size_bytes / MiB}


async def main(runs: int, big_runs: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="markco-bench-criu-", dir="/tmp"))
    os.chmod(root, 0o711)
    deployment = f"bench-{uuid.uuid4().hex[:6]}"
    data = root / "data"
    data.mkdir(mode=0o711)
    try:
        mrmd_python = workload_python(root).script("mrmd-python")
        options = ProcessOptions(state_dir=str(data / "workloads"))
        async with ProcessBackend(options, deployment_id=deployment, data_dir=data) as backend, \
                CriuCheckpointer() as checkpointer:
            await one_run(backend, checkpointer, data, deployment, mrmd_python, big=False)
            results: dict[str, list[dict[str, float]]] = {"idle": [], "200 MB": []}
            for kind, count in (("idle", runs), ("200 MB", big_runs)):
                for _ in range(count):
                    run = await one_run(backend, checkpointer, data, deployment, mrmd_python,
                                        big=kind != "idle")
                    results[kind].append(run)
                    print(f"{kind:>6}: cold start {run['cold']:.3f} s, sleep {run['sleep']:.3f} s,"
                          f" wake {run['wake']:.3f} s (archive {run['archive_mib']:.0f} MiB)",
                          flush=True)
            for kind, rows in results.items():
                for measure in ("cold", "sleep", "wake"):
                    values = [row[measure] for row in rows]
                    if values:
                        print(f"{kind:>6} {measure:>5}: median {statistics.median(values):.3f} s,"
                              f" min {min(values):.3f} s")
        print(f"load average: {os.getloadavg()}, cpus: {os.cpu_count()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for controller in CONTROLLERS:
            path = CGROUP_MOUNT / controller / "markco" / deployment
            for child in (path.iterdir() if path.is_dir() else ()):
                if child.is_dir():
                    child.rmdir()
            if path.is_dir():
                path.rmdir()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--big-runs", type=int, default=2)
    args = parser.parse_args()
    trio.run(main, args.runs, args.big_runs)
