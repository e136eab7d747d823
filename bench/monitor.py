"""Benchmark: what the monitor costs per poll.

    PYTHONPATH=. .venv/bin/python bench/monitor.py [--runtimes 1000] [--polls 20] \
        [--podman 8]

1. A fake backend (tests/monitor/fakes.py: `stats()` answers from memory) and 1,000 running
   runtimes: the CPU time of one whole poll — sampling them all concurrently under the
   CapacityLimiter, CPU from deltas, pressure, idleness, hints from the cells some of them ran
   — and what that is, in % of one core, at the default 5 s interval (target: under 5 %).
   The baseline, measured in the same run: starting and joining as many trio tasks as there
   are runtimes, doing nothing (the least any concurrent sampling costs), so the ratio says
   how much the monitor's own judgement adds.
2. Real podman (`--podman N`, root and podman needed): N small containers of the local runtime
   image on a throw-away `podman system service`, sampled through the docker plugin's
   `stats()` (one-shot engine call, cgroup files): the daemon's CPU and the engine's CPU per
   runtime per poll, and the wall time of a poll.

Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from markco_trio.builtin.monitor.options import MonitorOptions  # noqa: E402
from markco_trio.builtin.monitor.service import Monitor  # noqa: E402
from tests.monitor.fakes import (  # noqa: E402
    FakeBackend,
    FakeCompute,
    FakePolicy,
    MiB,
    Published,
    Usage,
)

CELL = "import pandas as pd\ndf = pd.read_csv('data.csv')\nprint(df.describe())\n"


def cpu_seconds() -> float:
    """CPU time of this process (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def fake_polls(runtimes: int, polls: int) -> tuple[float, float]:
    """(CPU s per poll of the monitor, CPU s per poll of the baseline) for `runtimes`."""
    backend, compute, policy, published = FakeBackend(), FakeCompute(), FakePolicy(), Published()
    for i in range(runtimes):
        user = f"user{i:05d}"
        compute.add(user, activity={"navigation": time.time() - 60})
        backend.usage[f"rt-{user}"] = Usage(working_set=(40 + i % 200) * MiB,
                                            limit=256 * MiB, cpu_seconds=float(i))
    monitor = Monitor(MonitorOptions(), compute=compute, backend=lambda: backend,
                      policy=policy, publish=published, now=time.time)
    async with trio.open_nursery() as nursery:
        await nursery.start(monitor.run)  # its first poll
        await trio.sleep(0.05)  # the events of the first poll go out
        spent = 0.0
        for _ in range(polls):
            for i in range(0, runtimes, 10):  # a tenth of the users ran a cell since
                compute.executed[f"user{i:05d}"] = [CELL]
            for i, usage in enumerate(backend.usage.values()):
                usage.cpu_seconds += 0.001 * (i % 7)
            before = cpu_seconds()
            await monitor.poll()
            spent += cpu_seconds() - before
        nursery.cancel_scope.cancel()

    async def nothing() -> None:
        await trio.lowlevel.checkpoint()

    baseline = 0.0
    for _ in range(polls):
        before = cpu_seconds()
        async with trio.open_nursery() as nursery:
            for _ in range(runtimes):
                nursery.start_soon(nothing)
        baseline += cpu_seconds() - before
    return spent / polls, baseline / polls


def engine_pid(engine_url: str) -> int | None:
    """The `podman system service` process serving `engine_url`."""
    needle = engine_url.encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                    return int(entry)
            except OSError:
                continue
    return None


def process_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its waited-for children (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


async def podman_polls(count: int, polls: int) -> dict[str, float]:
    """Per runtime per poll on real podman: daemon CPU, engine CPU; and a poll's wall time."""
    from markco_docker import DockerBackend, DockerOptions, localimage
    from markco_docker.testing import kit_spec_factory, purge_deployment, running_podman_service

    from markco_trio.records import WorkloadRole

    venv = Path(sys.prefix)
    base = Path(tempfile.mkdtemp(prefix="markco-bench-monitor-", dir="/tmp"))
    os.chmod(base, 0o711)
    deployment = f"benchmon-{os.getpid()}"
    try:
        with running_podman_service(containers_conf=ROOT / "config" / "containers.conf",
                                    tmp_dir=base) as engine_url:
            localimage.ensure_images(venv)
            options = DockerOptions(engine_url=engine_url,  # type: ignore[call-arg]
                                    mounts=localimage.dev_mounts(venv))
            backend = DockerBackend(options, deployment_id=deployment,
                                    state_dir=base / "state")
            spec_for = kit_spec_factory(deployment, base)
            try:
                async with backend:
                    compute = FakeCompute()
                    for i in range(count):
                        spec = spec_for(f"bench{i}", WorkloadRole.RUNTIME,
                                        script="import time\nwhile True: time.sleep(1)")
                        await backend.create(spec)
                        info = await backend.start(spec.name)
                        compute.add(f"bench{i}")
                        compute.set(f"bench{i}", handle=info.handle)
                    monitor = Monitor(MonitorOptions(), compute=compute,
                                      backend=lambda: backend, policy=None,
                                      publish=Published(), now=time.time)
                    engine = engine_pid(engine_url)
                    await monitor.poll()  # warm: connections, engine caches
                    ours = theirs = wall = 0.0
                    for _ in range(polls):
                        before, engine_before = cpu_seconds(), process_cpu(engine or 1)
                        started = time.perf_counter()
                        await monitor.poll()
                        wall += time.perf_counter() - started
                        ours += cpu_seconds() - before
                        theirs += process_cpu(engine or 1) - engine_before
                    errors = monitor.statistics().sample_errors
            finally:
                purge_deployment(engine_url, deployment)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    per = count * polls
    return {"daemon_ms": 1000 * ours / per, "engine_ms": 1000 * theirs / per,
            "poll_ms": 1000 * wall / polls, "errors": float(errors)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtimes", type=int, default=1000)
    parser.add_argument("--polls", type=int, default=20)
    parser.add_argument("--podman", type=int, default=8,
                        help="runtimes on real podman (0: skip; needs root and podman)")
    args = parser.parse_args()
    monitor_cpu, baseline_cpu = trio.run(fake_polls, args.runtimes, args.polls)
    share = 100 * monitor_cpu / MonitorOptions().interval
    print(f"fake backend, {args.runtimes} runtimes, {args.polls} polls:")
    print(f"  monitor CPU per poll        {1000 * monitor_cpu:8.1f} ms  "
          f"({share:.2f} % of one core at a 5 s interval; target < 5 %)")
    print(f"  baseline (bare tasks)       {1000 * baseline_cpu:8.1f} ms  "
          f"(monitor / baseline = {monitor_cpu / max(baseline_cpu, 1e-9):.1f}x)")
    print(f"  per runtime                 {1e6 * monitor_cpu / args.runtimes:8.1f} µs")
    if args.podman > 0:
        if os.geteuid() != 0 or shutil.which("podman") is None:
            print("real podman: skipped (needs root and podman)")
            return 0
        result: dict[str, Any] = trio.run(podman_polls, args.podman, args.polls)
        print(f"real podman, {args.podman} runtimes, {args.polls} polls:")
        print(f"  daemon CPU per runtime/poll {result['daemon_ms']:8.2f} ms")
        print(f"  engine CPU per runtime/poll {result['engine_ms']:8.2f} ms  (podman service)")
        print(f"  wall time of a poll         {result['poll_ms']:8.1f} ms  "
              f"({int(result['errors'])} failed samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
