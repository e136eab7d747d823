"""Benchmark: sleep (checkpoint + stop) and wake (restore until the first execution answers)
against a cold start measured in the same run, for an idle runtime and one holding 200 MB of
Python objects, on the process backend and on podman (the docker plugin).

    PYTHONPATH=. .venv/bin/python bench/checkpoint.py [--runs 3] [--backend process] \
        [--backend docker]

It starts a real daemon in-process (SQLite, auth, compute, the chosen container backend, the
`criu` checkpointer), creates a user, and per run measures through compute's own interface —
what a navigation or the API triggers — and the user's runtime front (what the editor uses):

- `cold start`: from a navigation's start of a stopped user to the first `print(1)` answered
  through the runtime front (which holds it until the runtime answers; the editor starts
  next to it): what a user waits for without checkpoints, and they lose every variable;
- `sleep`: the `sleep` operation: drain, checkpoint into an archive, fsync, record, stop the
  runtime and the editor;
- `wake`: from a navigation's wake of a sleeping user to the runtime answering (the archive
  verified and restored; the editor starts next to it); `wake + first execution`: to the first
  `print(x)` answered through the front, which includes mrmd-python's own cost of an execution,
  measured apart as `an execution (awake)`; `editor ready`: to the editor answering (what a
  navigation's page also needs). A wake is timed once the sleep has finished tidying up and
  the machine has had a moment (`SETTLE_SECONDS`): a real one comes after an idle time. The
  benchmark checks `x` and the 200 MB object after every wake.

The 200 MB runtime holds 200k `bytes` objects of 1 KiB: `200 MB` keeps them in an object of a
class of its own (`big.items`), `200 MB, bare list` in a list named `big`. The difference is
mrmd-python's, not the checkpoint's: after EVERY execution (`/execute` and `/execute/stream`
alike) it lists the namespace's variables with `repr(value)` of each, cut to 80 characters
only afterwards (mrmd_python.worker `_make_variable`, called by `get_variables` for
`variableCount`) — for the bare list a ~600 MB string, about a second of CPU, on every
execution, awake or just woken (`an execution (awake)`). No request option avoids it.

Then it prints each measure's median (min, max) and its ratio to the same run's cold start.
Targets (issue 10): sleep and wake of an idle runtime under 300 ms on the process backend and
under 1 s on podman; wake of the 200 MB runtime under 1.5 s on the process backend.
Not a test: it prints tables (and the machine they were measured on).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from compute_start import (  # noqa: E402
    BACKENDS,
    CGROUP_MOUNT,
    CONTROLLERS,
    DEPLOYMENT,
    podman_usable,
    write_config,
)

from markco_trio.builtin.compute import ComputeService  # noqa: E402
from markco_trio.config import load_config  # noqa: E402
from markco_trio.daemon import Daemon  # noqa: E402
from markco_trio.testing.network import free_port  # noqa: E402

# 200 MB of Python objects: 200k `bytes` of 1 KiB. Held by an object of a class of its own
# (`big.items`) — or, for `200 MB, bare list`, as a bare list named `big`, whose repr
# mrmd-python computes in full after EVERY execution (see the module doc).
OBJECTS = "[bytes([i % 251]) * 1024 for i in range(200 * 1024)]"
BIG = {
    "200 MB": ("import hashlib\n"
               "class Objects:\n"
               "    def __init__(self, items):\n"
               "        self.items = items\n"
               f"big = Objects({OBJECTS})\n"
               "digest = hashlib.sha256(b''.join(big.items)).hexdigest()\n"
               "x = 42\n"),
    "200 MB, bare list": ("import hashlib\n"
                          f"big = {OBJECTS}\n"
                          "digest = hashlib.sha256(b''.join(big)).hexdigest()\n"
                          "x = 42\n"),
}
CHECK = ("import hashlib\n"
         "print(x, len(getattr(big, 'items', big)), "
         "hashlib.sha256(b''.join(getattr(big, 'items', big))).hexdigest() == digest)\n")
SETTLE_SECONDS = 0.5
CHECKPOINT_CONFIG = """
[checkpoint]
provider = "criu"

[workloads.plans.free]
memory_mib = 1024
cpus = 1.0
"""


async def execute(compute: ComputeService, user_id: str, code: str) -> str:
    """Run `code` through the user's runtime front; its stdout."""
    transport = httpx.AsyncHTTPTransport(uds=str(compute.front_path(user_id)))
    async with httpx.AsyncClient(transport=transport, base_url="http://runtime",
                                 trust_env=False, timeout=120) as front:
        answer = await front.post("/mrp/v1/execute", json={"code": code})
        answer.raise_for_status()
        stdout: str = answer.json()["stdout"]
        return stdout


async def one_run(compute: ComputeService, user_id: str, *, kind: str) -> dict[str, float]:
    await compute.stop(user_id, reason="benchmark")
    start = trio.current_time()
    compute.request_start(user_id, reason="benchmark")  # what a navigation does
    assert await execute(compute, user_id, "print(1)") == "1\n"  # held until it answers
    cold = trio.current_time() - start
    await compute.ensure_started(user_id, reason="benchmark")  # the editor too, untimed
    big = kind in BIG
    if big:
        await execute(compute, user_id, BIG[kind])
    else:
        await execute(compute, user_id, "x = 42")
    start = trio.current_time()
    await execute(compute, user_id, "print(x)")
    baseline = trio.current_time() - start  # mrmd-python's own cost of an execution, awake
    start = trio.current_time()
    await compute.sleep(user_id, reason="benchmark")
    slept = trio.current_time() - start
    await asleep(compute, user_id)
    answered: dict[str, float] = {}

    async def ready(role: str) -> None:
        while not getattr(compute.state_nowait(user_id), role).ready:  # noqa: ASYNC110
            await trio.sleep(0.005)
        answered[role] = trio.current_time() - start

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(ready, "runtime")
        nursery.start_soon(ready, "editor")
        compute.request_start(user_id, reason="benchmark")  # a navigation wakes it
        out = await execute(compute, user_id, "print(x)")
        woke = trio.current_time() - start
    await compute.ensure_started(user_id, reason="benchmark")
    state = compute.state_nowait(user_id)
    # (IPython may add a line about its history database after a restore: not our concern)
    if not out.startswith("42\n") or state.notice:
        raise RuntimeError(f"the wake lost the runtime's memory: {out!r} {state.notice}")
    if big and not (await execute(compute, user_id, CHECK)).startswith("42 204800 True\n"):
        raise RuntimeError("the 200 MB object did not survive the wake")
    return {"cold start": cold, "sleep": slept, "wake": answered["runtime"],
            "wake + first execution": woke, "editor ready": answered["editor"],
            "an execution (awake)": baseline}


async def asleep(compute: ComputeService, user_id: str) -> None:
    """Until the sleep has finished tidying up (it answers once its archive is recorded, then
    stops the editor and removes the dumped runtime under the user's lock), and a moment
    more: a real wake comes after an idle time, not right on the sleep's heels, so it must
    not be timed waiting for the sleep's own tail."""
    with trio.fail_after(30):
        while compute.state_nowait(user_id).editor.state is not None:  # noqa: ASYNC110
            await trio.sleep(0.01)
    await trio.sleep(SETTLE_SECONDS)


async def measure(config_path: Path, runs: int) -> dict[str, list[dict[str, float]]]:
    config, pm = load_config(config_path, entry_points=True)
    daemon = Daemon(config, pm)
    results: dict[str, list[dict[str, float]]] = {"idle": [], **{kind: [] for kind in BIG}}
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: daemon.run(task_status=task_status, handle_signals=False))
        while not daemon.readiness.snapshot().ready:  # noqa: ASYNC110 - no event for it
            await trio.sleep(0.01)
        ctx = daemon.ctx
        compute = ctx.compute
        assert isinstance(compute, ComputeService)
        if ctx.checkpointer is None or not ctx.checkpointer.capabilities(
                compute.backend).checkpoint:
            caps = ctx.checkpointer and ctx.checkpointer.capabilities(compute.backend)
            raise SystemExit(f"the criu checkpointer cannot checkpoint this backend: {caps}")
        user = await ctx.require_storage().create_user(
            username="bench", email=None, name="Bench", avatar_url=None, now=ctx.clock.now())
        await compute.ensure_started(user.id, reason="benchmark (warm-up)")
        seen = 0
        for kind in results:
            for n in range(runs):
                run = await one_run(compute, user.id, kind=kind)
                print(f"  {kind} run {n}: " + ", ".join(f"{k} {v * 1000:.0f} ms"
                                                         for k, v in run.items()), flush=True)
                events = await ctx.require_storage().list_events(after_seq=seen, limit=10_000)
                for event in events:
                    if event.type in ("runtime.sleeping", "runtime.woken"):
                        print(f"    {event.type}: {event.data.get('steps_ms')}", flush=True)
                seen = max([seen, *(e.seq for e in events)])
                results[kind].append(run)
        await compute.stop(user.id, reason="benchmark done")
        nursery.cancel_scope.cancel()
    return results


def bench(backend: str, runs: int) -> dict[str, list[dict[str, float]]]:
    base = Path(tempfile.mkdtemp(prefix="markco-bench-", dir="/tmp"))
    os.chmod(base, 0o711)
    try:
        with BACKENDS[backend](base) as backend_config:
            port = free_port()
            config = write_config(base, backend_config + CHECKPOINT_CONFIG, port)
            return trio.run(measure, config, runs)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for controller in CONTROLLERS:
            try:
                (CGROUP_MOUNT / controller / "markco" / DEPLOYMENT).rmdir()
            except OSError:
                pass


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return (f"{platform.node() or 'host'}: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, "
            f"Linux {platform.release()}")


MEASURES = ("cold start", "sleep", "wake", "wake + first execution", "editor ready",
            "an execution (awake)")


def report(columns: dict[str, dict[str, list[dict[str, float]]]]) -> str:
    lines = ["| backend | runtime | " + " | ".join(MEASURES) + " | sleep / cold | wake / cold |",
             "|---|---|" + "---|" * (len(MEASURES) + 2)]
    for backend, kinds in columns.items():
        for kind, runs in kinds.items():
            if not runs:
                continue
            med = {m: statistics.median(r[m] for r in runs) for m in runs[0]}

            def cell(m: str, runs: list[dict[str, Any]] = runs,
                     med: dict[str, float] = med) -> str:
                values = [r[m] * 1000 for r in runs]
                return f"{med[m] * 1000:.0f} ms ({min(values):.0f}–{max(values):.0f})"

            lines.append(f"| {backend} | {kind} | " + " | ".join(cell(m) for m in MEASURES)
                         + f" | {med['sleep'] / med['cold start']:.2f} | "
                         f"{med['wake'] / med['cold start']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backend", action="append", choices=sorted(BACKENDS),
                        help="repeat for several (default: process, and docker when podman "
                             "is installed and we are root)")
    args = parser.parse_args(argv)
    columns: dict[str, dict[str, list[dict[str, float]]]] = {}
    for backend in args.backend or ["process", *(["docker"] if podman_usable() else [])]:
        print(f"{backend}:", flush=True)
        columns[backend] = bench(backend, args.runs)
    print(f"\n{machine()}\n")
    print(report(columns))
    targets = {"process": 0.3, "docker": 1.0}
    for backend, kinds in columns.items():
        idle = kinds.get("idle") or []
        if idle and backend in targets:
            sleep = statistics.median(r["sleep"] for r in idle)
            wake = statistics.median(r["wake + first execution"] for r in idle)
            goal = targets[backend]
            print(f"{backend}, idle: sleep {sleep * 1000:.0f} ms, wake until the first execution "
                  f"{wake * 1000:.0f} ms (goal < {goal * 1000:.0f} ms each: "
                  f"{'met' if max(sleep, wake) < goal else 'NOT met'})")
    for kind in BIG:
        big = columns.get("process", {}).get(kind) or []
        if big:
            wake = statistics.median(r["wake + first execution"] for r in big)
            answers = statistics.median(r["wake"] for r in big)
            awake = statistics.median(r["an execution (awake)"] for r in big)
            print(f"process, {kind}: wake until the first execution {wake * 1000:.0f} ms, until "
                  f"the runtime answers {answers * 1000:.0f} ms; an execution awake "
                  f"{awake * 1000:.0f} ms (goal < 1500 ms: "
                  f"{'met' if wake < 1.5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
