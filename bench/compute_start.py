"""Benchmark: console-link login → the user's editor ready (and a first python block run).

    PYTHONPATH=. .venv/bin/python bench/compute_start.py [--runs 5] [--backend process] \
        [--backend docker]

It starts a real daemon in-process (SQLite, auth, compute, the chosen container backend), then
for each run creates a user, logs in with a console link, and measures:

- `login`: the login request itself (it must not wait for anything to start);
- `editor ready`: from the login request to the editor answering `/health` through compute's
  readiness check (what a navigation to `/u/<id>/` waits for);
- `first block`: then running `print(...)` as a python block through the editor, which reaches
  the runtime through the runtime front (includes the runtime's own readiness).

Goal on the process backend: editor ready in under 1.5 s. Not a test: it prints a table.
A backend is an entry of `BACKENDS`: name → a context manager that gets the run's directory,
yields the backend's config text and cleans up after the daemon has stopped.

`docker` (the docker plugin) runs on a throw-away rootful `podman system service` of its own,
on a socket in a temporary directory with `config/containers.conf`; the local images are built
first when missing or stale (the step `scripts/setup-podman` ends with); every container and
network of the benchmark's deployment is removed and the service stopped at the end. Without
`--backend`, the columns are `process`, plus `docker` when podman is installed and we are root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from markco_trio.builtin.auth.login_links import issue_login_link  # noqa: E402
from markco_trio.builtin.compute import ComputeService  # noqa: E402
from markco_trio.builtin.process_backend.cgroups import CGROUP_MOUNT, CONTROLLERS  # noqa: E402
from markco_trio.config import load_config  # noqa: E402
from markco_trio.daemon import Daemon  # noqa: E402
from markco_trio.plugins import BUILTIN_PLUGINS  # noqa: E402
from markco_trio.testing.network import free_port  # noqa: E402
from markco_trio.testing.workload_python import WorkloadPython, workload_python  # noqa: E402

DEPLOYMENT = f"bench-{os.getpid()}"
MODULES = ("markco_trio.builtin.process_backend", "markco_trio.builtin.compute",
           "markco_trio.builtin.auth")


def process_backend(wpython: WorkloadPython) -> str:
    """Config for the built-in process backend (the commands run as `nobody` when root)."""
    return textwrap.dedent(f"""\
        [compute]
        backend = "process"

        [workloads]
        runtime_command = {json.dumps([wpython.script("mrmd-python"), "--foreground",
                                       "--managed", "--host", "{host}", "--port", "{port}",
                                       "--cwd", "{user_dir}"])}
        editor_command = {json.dumps([wpython.script("markco-editor")])}
        """)


@contextmanager
def docker_backend(base: Path) -> Iterator[str]:
    """Config for the docker plugin on a podman service of its own, with the local images."""
    from markco_docker import localimage
    from markco_docker.testing import purge_deployment, running_podman_service

    venv = Path(sys.prefix)
    with running_podman_service(containers_conf=ROOT / "config" / "containers.conf",
                                tmp_dir=base) as engine_url:
        localimage.ensure_images(venv)
        try:
            yield textwrap.dedent(f"""\
                [compute]
                backend = "docker"

                [compute.docker]
                engine_url = "{engine_url}"
                runtime_image = "{localimage.RUNTIME_TAG}"
                editor_image = "{localimage.EDITOR_TAG}"
                mounts = {json.dumps(localimage.dev_mounts(venv))}
                """)
        finally:
            for removed in purge_deployment(engine_url, DEPLOYMENT):
                print(f"docker: removed {removed}")


def podman_usable() -> bool:
    """Whether the docker column can run here (rootful podman), for the default columns."""
    return shutil.which("podman") is not None and os.geteuid() == 0


# Backend name → (run directory → context manager yielding the config text: `[compute]`,
# `[compute.<name>]`, `[workloads]`).
BACKENDS: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "process": lambda base: nullcontext(process_backend(workload_python(base))),
    "docker": docker_backend,
}


def write_config(base: Path, backend_config: str, port: int) -> Path:
    builtin = {module for _, module in BUILTIN_PLUGINS}
    modules = [m for m in MODULES if m not in builtin]
    data_dir = base / "data"
    data_dir.mkdir(mode=0o711)
    path = base / "markco.toml"
    path.write_text(textwrap.dedent(f"""\
        [server]
        listen = "127.0.0.1:{port}"
        public_url = "http://127.0.0.1:{port}"
        data_dir = "{data_dir}"
        deployment_id = "{DEPLOYMENT}"

        [plugins]
        modules = {json.dumps(modules)}

        [auth]
        login_link = "never"

        """) + backend_config)
    return path


async def one_run(daemon: Daemon, base_url: str, n: int) -> dict[str, float]:
    ctx = daemon.ctx
    compute = ctx.compute
    assert isinstance(compute, ComputeService)
    storage = ctx.require_storage()
    user = await storage.create_user(username=f"bench{n}", email=None, name=f"Bench {n}",
                                     avatar_url=None, now=ctx.clock.now())
    link = await issue_login_link(storage, ctx.clock, user, public_url=base_url, minutes=5)
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=60) as browser:
        start = trio.current_time()
        response = await browser.get(link.removeprefix(base_url))
        login = trio.current_time() - start
        assert response.status_code in (302, 303), response.text
        while compute.editor_address_nowait(user.id) is None:
            state = compute.state_nowait(user.id)
            if state.phase == "failed":
                raise RuntimeError(f"start failed: {state.message}")
            await trio.sleep(0.005)
        editor_ready = trio.current_time() - start
        host, port = compute.editor_address_nowait(user.id)  # type: ignore[misc]
        async with browser.stream("POST", f"http://{host}:{port}/api/execute",
                                  json={"code": "print('hello')"}) as stream:
            async for _ in stream.aiter_lines():
                pass
        first_block = trio.current_time() - start
    await compute.stop(user.id, reason="benchmark")
    return {"login": login, "editor ready": editor_ready, "first block": first_block}


async def measure(config_path: Path, port: int, runs: int) -> list[dict[str, float]]:
    config, pm = load_config(config_path, entry_points=True)
    daemon = Daemon(config, pm)
    results = []
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: daemon.run(task_status=task_status, handle_signals=False))
        while not daemon.readiness.snapshot().ready:  # noqa: ASYNC110 - no event for it
            await trio.sleep(0.01)
        for n in range(runs):
            results.append(await one_run(daemon, f"http://127.0.0.1:{port}", n))
        nursery.cancel_scope.cancel()
    return results


def bench(backend: str, runs: int) -> list[dict[str, float]]:
    base = Path(tempfile.mkdtemp(prefix="markco-bench-", dir="/tmp"))
    os.chmod(base, 0o711)
    try:
        with BACKENDS[backend](base) as backend_config:
            port = free_port()
            return trio.run(measure, write_config(base, backend_config, port), port, runs)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for controller in CONTROLLERS:  # the deployment's (now empty) cgroup parents
            try:
                (CGROUP_MOUNT / controller / "markco" / DEPLOYMENT).rmdir()
            except OSError:
                pass


def report(columns: dict[str, list[dict[str, float]]]) -> str:
    names = list(columns)
    lines = ["| measure (seconds) | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for measure in ("login", "editor ready", "first block"):
        cells = []
        for name in names:
            values = [r[measure] for r in columns[name]]
            cells.append(f"median {statistics.median(values):.3f} (min {min(values):.3f}, "
                         f"max {max(values):.3f})")
        lines.append(f"| {measure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backend", action="append", choices=sorted(BACKENDS),
                        help="repeat for several columns (default: process, and docker "
                             "when podman is installed and we are root)")
    args = parser.parse_args(argv)
    columns: dict[str, Any] = {}
    for backend in args.backend or ["process", *(["docker"] if podman_usable() else [])]:
        columns[backend] = bench(backend, args.runs)
        for n, run in enumerate(columns[backend]):
            print(f"{backend} run {n}: " + ", ".join(f"{k} {v:.3f} s" for k, v in run.items()))
    print()
    print(report(columns))
    ready = statistics.median(r["editor ready"] for r in columns.get("process", [{}]) or [{}]) \
        if "process" in columns else None
    if ready is not None:
        print(f"\nprocess backend, login → editor ready: median {ready:.3f} s "
              f"(goal < 1.5 s: {'met' if ready < 1.5 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
