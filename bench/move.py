"""Benchmark: moving a runtime between two hosts, end to end, idle and holding 200 MB, against
a sleep + wake on one host measured in the same run.

    PYTHONPATH=. .venv/bin/python bench/move.py [--runs 3]

Two hosts on this machine (two rootful `podman system service`s with their own storage and
networks, as the move tests use: tests/moves/hosts.py), a real daemon over both
(`[[compute.docker.hosts]]`), the `criu` checkpointer, a user reached through the front door.
Per run it times `POST /api/v1/users/ID/runtimes/move` from the request to its answer (the
runtime restored on the target and answering, the record switched, the source removed) and
reads the move's own measurements from `/api/v1/migrations`: checkpoint (until the first
archive byte), transfer (until the last), restore (until the target answers), switch, bytes.
`x` (and the 200 MB object) are checked through the proxy after every move.

Baseline: `sleep` then `wake` of the same runtime on one host (what a move's
checkpoint + restore amount to, without the stream between engines).
Target (issue 16): a move of an idle runtime under 2 s end to end (the original: ~3.5 s on EC2).
Not a test: it prints a table (and the machine it was measured on).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from markco_docker import localimage  # noqa: E402
from markco_docker.testing import purge_deployment, running_podman_service  # noqa: E402

from markco_trio.testing.network import free_port  # noqa: E402
from tests.compute.test_daemon_restart import DaemonProcess  # noqa: E402
from tests.lifecycle.test_checkpoint_e2e import BIG, CHECK, INTACT  # noqa: E402
from tests.moves.hosts import second_podman_host  # noqa: E402
from tests.moves.test_moves import Deployment, config_text, x_of  # noqa: E402


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):7.0f} ms ({min(values):.0f}-{max(values):.0f})"


async def measure(d: Deployment, runs: int, big: bool) -> dict[str, list[float]]:
    user = await d.user(f"u{uuid.uuid4().hex[:6]}")
    await user.navigate_until_ready()
    await user.execute("x = 42\n" + (BIG if big else "") + "print('ok')")
    found: dict[str, list[float]] = {}
    where = "a"
    for _ in range(runs):
        # Baseline: sleep + wake on the host it is on.
        started = time.monotonic()
        slept = await user.api("POST", "/runtimes/sleep")
        assert slept.status_code == 200, slept.text
        woke = await user.api("POST", "/runtimes/wake?wait=1")
        assert woke.status_code == 200, woke.text
        found.setdefault("sleep + wake, one host", []).append(
            (time.monotonic() - started) * 1000)
        await trio.sleep(1.0)  # a real move comes after a while, not on a wake's heels
        target = "b" if where == "a" else "a"
        started = time.monotonic()
        moved = await d.move(user, target)
        took = (time.monotonic() - started) * 1000
        assert moved.status_code == 200, moved.text
        where = target
        found.setdefault("move, end to end", []).append(took)
        last = (await d.migrations())[0]
        for key in ("checkpoint_ms", "transfer_ms", "restore_ms", "switch_ms"):
            found.setdefault(f"  {key.removesuffix('_ms')}", []).append(float(last[key]))
        found.setdefault("  MiB moved", []).append(last["bytes"] / (1 << 20))
        check = (await user.execute(CHECK)) if big else await x_of(user)
        assert check.endswith(INTACT) if big else check == "42\n", check
    return found


async def main(runs: int) -> None:
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
          f"{platform.platform()}")
    mounts = localimage.dev_mounts(Path(sys.prefix))
    localimage.ensure_images(Path(sys.prefix))
    with tempfile.TemporaryDirectory(prefix="markco-bench-move-") as tmp, \
            running_podman_service(containers_conf=ROOT / "config" / "containers.conf") as a, \
            second_podman_host() as b:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir(mode=0o711)
        os.chmod(tmp, 0o711)
        port = free_port()
        deployment = f"bench-{uuid.uuid4().hex[:6]}"
        config = Path(tmp) / "markco.toml"
        # 1 GiB: building the 200 MB object (and its digest) peaks above the tests' 512 MiB.
        config.write_text(config_text(port, data_dir, deployment, a, b, mounts)
                          .replace("memory_mib = 512", "memory_mib = 1024"))
        daemon = DaemonProcess(config, port, Path(tmp) / "daemon.log", deployment)
        await daemon.start()
        d = Deployment(daemon, data_dir, {"a": a, "b": b})
        d.admin = (await d.user("root", admin=True)).headers
        try:
            for title, big in (("idle runtime", False), ("runtime holding 200 MB", True)):
                found = await measure(d, runs, big)
                print(f"\n{title} ({runs} runs, median (min-max))")
                base = statistics.median(found["sleep + wake, one host"])
                for name, values in found.items():
                    if name.strip() == "MiB moved":
                        print(f"{name:<26} {statistics.median(values):7.1f} MiB")
                        continue
                    ratio = f"  x{statistics.median(values) / base:.2f} of sleep + wake" \
                        if not name.startswith("  ") else ""
                    print(f"{name:<26} {summary(values)}{ratio}")
        finally:
            await daemon.kill9()
            for url in (a, b):
                purge_deployment(url, deployment)


def parse(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse().runs)
