"""Benchmark: how long the dashboard and the admin page take, against the login page.

    PYTHONPATH=. .venv/bin/python bench/pages.py [--users 200] [--runtimes 100] \
        [--events 5000] [--requests 50]

A real daemon (SQLite, the auth and publish plugins, no compute: runtime records are written
straight into storage, so the admin page reads them as it would), `--users` users, live
runtime and editor records for `--runtimes` of them, `--events` events, and an administrator
with a few published projects and invites. Each page is fetched `--requests` times over one
keep-alive connection; the baseline, measured in the same run, is `GET /login` for a logged-in
session (a redirect: authentication and the front door, no page work). Prints the median and
p90 of each, the ratio to the baseline and the page's size.

Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from functools import partial
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from markco_trio.builtin.auth.login_links import ensure_user, issue_login_link  # noqa: E402
from markco_trio.config import load_config  # noqa: E402
from markco_trio.daemon import Daemon  # noqa: E402
from markco_trio.records import RuntimeState, WorkloadRole  # noqa: E402
from markco_trio.testing.network import free_port  # noqa: E402


async def timed(client: httpx.AsyncClient, path: str, requests: int) -> tuple[list[float], int]:
    """Wall times (ms) of `requests` GETs of `path`, and the size of the last answer."""
    times, size = [], 0
    for _ in range(requests):
        started = time.perf_counter()
        response = await client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code in (200, 303), (path, response.status_code)
        size = len(response.content)
    return times, size


async def main(users: int, runtimes: int, events: int, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        path = Path(tmp) / "markco.toml"
        path.write_text(textwrap.dedent(f"""
            [server]
            listen = "127.0.0.1:{port}"
            public_url = "http://127.0.0.1:{port}"
            data_dir = "data"

            [plugins]
            disable = ["compute", "process", "monitor"]

            [auth]
            login_link = "never"
            """))
        config, pm = load_config(path, entry_points=False)
        daemon = Daemon(config, pm)
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(daemon.run, handle_signals=False))
            while not daemon.readiness.snapshot().ready:  # noqa: ASYNC110 - another task's
                await trio.sleep(0.05)
            storage, clock = daemon.ctx.require_storage(), daemon.ctx.clock
            admin, _ = await ensure_user(storage, clock, "root", admin=True)
            ids = [(await ensure_user(storage, clock, f"user{n}", admin=False))[0].id
                   for n in range(users)]
            now = time.time()
            for user_id in ids[:runtimes]:
                for role in (WorkloadRole.RUNTIME, WorkloadRole.EDITOR):
                    await storage.create_runtime(user_id=user_id, role=role, backend="process",
                                                 host="local", state=RuntimeState.RUNNING,
                                                 limits={}, now=now, handle=f"{user_id}-{role}")
            for n in range(events):
                await storage.append_event(type="bench.event", user_id=ids[n % len(ids)],
                                           data={"n": n}, now=now)
            for name in ("notes", "Field Notes", "diary"):
                folder = config.data_dir / "users" / admin.id / "Projects" / name
                folder.mkdir(parents=True)
                (folder / "mrmd.md").write_text("---\nvisibility: public\n---\n")
            link = await issue_login_link(storage, clock, admin, public_url=f"http://127.0.0.1:"
                                          f"{port}", minutes=10)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                         trust_env=False) as client:
                assert (await client.get(link)).status_code == 303
                for _ in range(10):
                    await client.post("/api/v1/invites", json={"project": "notes",
                                                               "role": "viewer"},
                                      headers={"Origin": f"http://127.0.0.1:{port}"})
                results = {}
                for page in ("/login", "/dashboard", "/admin"):
                    await timed(client, page, 3)  # warm up
                    results[page] = await timed(client, page, requests)
            nursery.cancel_scope.cancel()
    base = statistics.median(results["/login"][0])
    print(f"{users} users, {runtimes} live runtimes, {events} events, {requests} requests each")
    print(f"{'page':<12}{'median ms':>10}{'p90 ms':>9}{'× /login':>10}{'bytes':>9}")
    for page, (times, size) in results.items():
        p90 = statistics.quantiles(times, n=10)[-1]
        median = statistics.median(times)
        print(f"{page:<12}{median:>10.1f}{p90:>9.1f}{median / base:>10.1f}{size:>9}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--runtimes", type=int, default=100)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    trio.run(main, args.users, args.runtimes, args.events, args.requests)
