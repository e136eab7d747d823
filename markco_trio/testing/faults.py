"""Fault injection: break a real daemon on purpose and say what held (issue 11).

    PYTHONPATH=. .venv/bin/python bench/faults.py [--only NAME ...] [--list]   # prints it
    .venv/bin/python -m pytest tests/faults                                    # asserts it

Each experiment runs `markco run` as a subprocess of its own (SQLite, the process backend, real
`mrmd-python` and `markco-editor`; a config like `config/local.toml` in a temporary directory,
with API tokens made directly in the database), breaks something, and checks claims:

- `kill9-start`: `kill -9` of the daemon at points of a user's start (its operation just
  created, then the steps `runtime.launch`, `editor.launch`, `ready`), then a restart: one
  runtime and one editor for the user, one live record per role, no operation left open, the
  rows written before intact, SQLite's `PRAGMA integrity_check` ok after each kill.
- `killed-runtime`: SIGKILL of a user's runtime: restarted (`runtime.crashed`, then
  `runtime.restarted`, and code runs); killed again past `max_crashes`: `failed` with a reason.
- `read-only-db`: the database's file system read-only when the daemon (killed with -9 while a
  user runs) starts again: a non-zero exit within seconds saying so, no traceback, the user's
  workloads untouched; once writable, the daemon starts and adopts them. (Needs root: the
  database on a tmpfs of its own; a file system cannot become read-only while the daemon
  writes to it.)
- `busy-port`: the daemon's port already taken: a non-zero exit within seconds, one line
  naming the port, no traceback, no workload started.
- `kill9-sleep-wake` (CRIU): `kill -9` of the daemon while it checkpoints a runtime to sleep,
  and while it restores one to wake it: after a restart, one runtime, still holding `x`.
  (`tests/lifecycle/test_checkpoint_e2e.py` asserts the same.)
- `full-disk`: the data directory's and the database's file systems full under a running
  daemon: a write is a 503 naming the full disk and `/readyz` says storage cannot write;
  saving a file in the editor is a 507 saying so (the file unchanged), a start fails with a
  reason instead of hanging, the daemon stays up; with space again `/readyz` is ready and a
  start succeeds. (Needs root.)

Claims that wait on another part of issue 11 are marked with it: they are printed as
`pending`, not failed, until that part lands. `tests/faults/` runs these experiments as tests.
Nothing here sends a packet beyond loopback; every process, mount and cgroup made is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from ..builtin.auth.tokens import hash_token, new_api_token
from ..builtin.process_backend.cgroups import CGROUP_MOUNT, CONTROLLERS
from ..storage.sqlite import SqliteStorage
from .dialing import workload_client
from .network import free_port
from .workload_python import WorkloadPython, workload_python

ROOT = Path(__file__).resolve().parents[2]

MODULES = ["markco_trio.builtin.process_backend", "markco_trio.builtin.compute",
           "markco_trio.builtin.auth"]
START_POINTS = ("created", "runtime.launch", "editor.launch", "ready")
LIVE = ("starting", "running", "sleeping", "waking", "moving")


# ------------------------------------------------------------------------------ outcomes


@dataclass
class Claim:
    """One thing that must hold; `pending` names the part of issue 11 it waits on."""

    text: str
    held: bool
    detail: str = ""
    pending: str | None = None

    @property
    def verdict(self) -> str:
        if self.held:
            return "held"
        return f"pending ({self.pending})" if self.pending else "BROKEN"


@dataclass
class Outcome:
    """An experiment's claims."""

    name: str
    claims: list[Claim] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, text: str, held: bool, detail: str = "", *,
              pending: str | None = None) -> bool:
        self.claims.append(Claim(text, bool(held), detail, pending))
        return bool(held)

    @property
    def broken(self) -> list[Claim]:
        return [c for c in self.claims if not c.held and not c.pending]


# ------------------------------------------------------------------------------ the lab


class Lab:
    """A temporary directory the workloads' account can traverse, a config like
    `config/local.toml` in it, and the daemon as a subprocess."""

    def __init__(self, root: Path, wpython: WorkloadPython, *, extra: str = "",
                 **workloads: Any) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.deployment = f"flt-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = root / "markco.toml"
        self.log = root / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.mounts: list[Path] = []
        self.db_dir = root / "db"  # the database's directory (see `db`)
        options: dict[str, Any] = {
            "runtime_command": [wpython.script("mrmd-python"), "--foreground", "--managed",
                                "--host", "{host}", "--port", "{port}", "--cwd",
                                "{user_dir}"],
            "editor_command": [wpython.script("markco-editor")],
            "start_on_login": False, "watch_interval": 0.1, "ready_timeout": 20.0,
            "stop_timeout": 1.0, "restart_backoff_initial": 0.1, "restart_backoff_max": 0.5,
            **workloads}
        lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in options.items())
        self.config.write_text(
            f'[server]\nlisten = "127.0.0.1:{self.port}"\npublic_url = "{self.base}"\n'
            f'data_dir = "{self.data_dir}"\ndeployment_id = "{self.deployment}"\n'
            f'drain_seconds = 1\n\n[plugins]\nmodules = {json.dumps(MODULES)}\n\n'
            f'[storage]\nprovider = "sqlite"\n\n[storage.sqlite]\n'
            f'path = "{self.db_dir / "markco.db"}"\n\n[compute]\nbackend = "process"\n\n'
            f'[auth]\nlogin_link = "never"\n\n{extra}\n[workloads]\n{lines}\n')

    # -- the data directory on a file system of its own (root) ---------------------------

    def mount_tmpfs(self, size_mib: int, where: Path | None = None) -> None:
        """A tmpfs of `size_mib` at `where` (the data directory by default)."""
        where = where or self.data_dir
        where.mkdir(mode=0o711, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0711",
                        "markco-faults", str(where)], check=True)
        self.mounts.append(where)

    def remount(self, mode: str, where: Path | None = None) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(where or self.data_dir)],
                       check=True)

    # -- the daemon ----------------------------------------------------------------------

    def start(self) -> None:
        """Start `markco run` (not waiting)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "markco_trio", "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=str(ROOT),
                start_new_session=True)

    async def wait_ready(self, within: float = 30.0) -> None:
        async with httpx.AsyncClient(trust_env=False) as http:
            with trio.fail_after(within):
                while True:
                    assert self.process is not None
                    if self.process.poll() is not None:
                        raise RuntimeError(f"the daemon exited ({self.process.returncode}):\n"
                                           f"{self.log_text()[-3000:]}")
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get(f"{self.base}/readyz")).status_code == 200:
                            return
                    await trio.sleep(0.05)

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            with open(self.log, "a") as log:
                log.write("\n-- kill -9 here --\n")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- the database, read beside the daemon --------------------------------------------

    @property
    def db(self) -> Path:
        return self.db_dir / "markco.db"

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True,
                                                timeout=5)) as conn:
            return list(conn.execute(sql, args).fetchall())

    def integrity(self) -> str:
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True,
                                                timeout=5)) as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])

    async def user(self, name: str) -> tuple[str, dict[str, str]]:
        """A user and an API token for them, written in the database."""
        async with SqliteStorage(self.db) as storage:
            await storage.upgrade()
            user = await storage.create_user(username=name, email=None, name=name,
                                             avatar_url=None, now=time.time())
            token = new_api_token()
            await storage.create_api_token(user_id=user.id, name="faults",
                                           token_hash=hash_token(token), scopes=("user",),
                                           expires_at=None, now=time.time())
        return user.id, {"Authorization": f"Bearer {token}"}

    def api(self, headers: dict[str, str], timeout: float = 30) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, headers=headers, trust_env=False,
                                 timeout=timeout)

    # -- what runs -----------------------------------------------------------------------

    def payloads(self, user_id: str) -> dict[str, int]:
        """How many runtime and editor commands run for `user_id` (by their processes)."""
        user_dir = os.fsencode(str(self.data_dir / "users" / user_id))
        counts = {"runtime": 0, "editor": 0}
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
            except (OSError, IndexError):
                continue
            if state in "ZX" or argv[0].endswith((b"sh", b"unshare", b"setpriv", b"setsid")):
                continue
            exe = b" ".join(argv[:2])
            if b"mrmd-python" in exe and user_dir in b" ".join(argv):
                counts["runtime"] += 1
            elif b"markco-editor" in exe and user_dir in environ:
                counts["editor"] += 1
        return counts

    def runtime_pid(self, user_id: str) -> int | None:
        user_dir = os.fsencode(str(self.data_dir / "users" / user_id))
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith((b"sh", b"unshare", b"setpriv", b"setsid")):
                continue
            if b"mrmd-python" in b" ".join(argv[:2]) and user_dir in b" ".join(argv):
                return int(pid)
        return None

    def close(self) -> None:
        self.kill9()
        kill_workloads(self.root)
        remove_cgroups(self.deployment)
        for where in reversed(self.mounts):
            if subprocess.run(["umount", str(where)], check=False).returncode != 0:
                subprocess.run(["umount", "--lazy", str(where)], check=False)
        self.mounts.clear()


@contextlib.contextmanager
def lab(*, extra: str = "", **workloads: Any) -> Iterator[Lab]:
    root = Path(tempfile.mkdtemp(prefix="markco-faults-", dir="/tmp"))
    os.chmod(root, 0o711)
    the_lab = Lab(root, workload_python(root), extra=extra, **workloads)
    the_lab.db_dir.mkdir(mode=0o700)
    try:
        yield the_lab
    finally:
        the_lab.close()
        shutil.rmtree(root, ignore_errors=True)


def kill_workloads(root: Path) -> None:
    """SIGKILL, by pid, the workload session leaders started from `root`."""
    marker = os.fsencode(str(root)) + b"/"
    killed = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if marker in argv and int(fields[3]) == pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in killed):
        time.sleep(0.02)


def remove_cgroups(deployment: str) -> None:
    deadline = time.monotonic() + 2
    for controller in CONTROLLERS:
        path = CGROUP_MOUNT / controller / "markco" / deployment
        while path.is_dir():
            for child in [c for c in path.iterdir() if c.is_dir()]:
                with contextlib.suppress(OSError):
                    child.rmdir()
            try:
                path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` (a file written until ENOSPC); the file."""
    filler = directory / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * (1 << 20))
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


async def until(condition: Callable[[], Awaitable[bool]] | Callable[[], bool], *,
                within: float, every: float = 0.05) -> bool:
    """Poll `condition` until true (True) or `within` seconds pass (False)."""
    with trio.move_on_after(within):
        while True:
            value = condition()
            if not isinstance(value, bool):
                value = await value
            if value:
                return True
            await trio.sleep(every)
    return False


async def state_of(lab_: Lab, headers: dict[str, str], user_id: str) -> dict[str, Any]:
    async with lab_.api(headers) as api:
        answer = await api.get(f"/api/v1/users/{user_id}/runtimes")
    body: dict[str, Any] = answer.json()
    return body


# ------------------------------------------------------------------------------ experiments


async def kill9_during_start(out: Outcome) -> None:
    with lab() as the_lab:
        the_lab.start()
        await the_lab.wait_ready()
        users = {point: await the_lab.user(point.replace(".", "-")) for point in START_POINTS}
        rows_before = {t: the_lab.query(f"SELECT id FROM {t}")
                       for t in ("users", "api_tokens")}
        # One user per point: request its start, kill -9 the daemon when the operation log
        # shows the point, restart. The restarted daemon finishes each start in the
        # background while the next user's is broken; all are checked at the end.
        for point in START_POINTS:
            user_id, headers = users[point]
            async with the_lab.api(headers) as api:
                await api.post(f"/api/v1/users/{user_id}/runtimes/start")

            def at_point(uid: str = user_id, step: str = point) -> bool:
                rows = the_lab.query("SELECT step FROM operations WHERE user_id = ? AND "
                                     "kind = 'start' ORDER BY created_at DESC LIMIT 1", uid)
                return bool(rows) and (step == "created" or rows[0][0] == step)

            reached = await until(at_point, within=20, every=0.002)
            the_lab.kill9()
            out.check(f"[{point}] the start reached the point, then kill -9", reached)
            out.check(f"[{point}] SQLite integrity right after kill -9",
                      the_lab.integrity() == "ok", the_lab.integrity())
            the_lab.start()
            await the_lab.wait_ready()
        for point in START_POINTS:
            user_id, headers = users[point]

            async def both_ready(uid: str = user_id, h: dict[str, str] = headers) -> bool:
                state = (await state_of(the_lab, h, uid)).get("state") or {}
                return bool(state.get("ready"))

            ready = await until(both_ready, within=30)
            out.check(f"[{point}] after the restart the user's workloads are ready", ready)
            counts = the_lab.payloads(user_id)
            out.check(f"[{point}] exactly one runtime and one editor run",
                      counts == {"runtime": 1, "editor": 1}, str(counts))
            live = the_lab.query("SELECT role, COUNT(*) FROM runtimes WHERE user_id = ? AND "
                                 f"state IN {LIVE} GROUP BY role", user_id)
            out.check(f"[{point}] one live record per role", sorted(live) ==
                      [("editor", 1), ("runtime", 1)], str(live))
            open_ops = the_lab.query("SELECT kind, step, state FROM operations WHERE "
                                     "user_id = ? AND state = 'open'", user_id)
            out.check(f"[{point}] no operation left open", not open_ops, str(open_ops))
        rows_after = {t: the_lab.query(f"SELECT id FROM {t}")
                      for t in ("users", "api_tokens")}
        out.check("the rows written before the kills are intact",
                  all(set(rows_before[t]) <= set(rows_after[t]) for t in rows_before))
        the_lab.kill9()
        out.check("SQLite integrity at the end", the_lab.integrity() == "ok")


async def killed_runtime(out: Outcome) -> None:
    with lab(max_crashes=2, crash_window=60) as the_lab:
        the_lab.start()
        await the_lab.wait_ready()
        user_id, headers = await the_lab.user("ann")
        async with the_lab.api(headers) as api:
            started = await api.post(f"/api/v1/users/{user_id}/runtimes/start?wait=1")
        out.check("the user starts", started.status_code == 200, started.text[:200])
        first = the_lab.runtime_pid(user_id)
        assert first is not None
        os.kill(first, signal.SIGKILL)

        def restarted() -> bool:
            kinds = [k for (k,) in the_lab.query(
                "SELECT type FROM events WHERE user_id = ? ORDER BY seq", user_id)]
            return "runtime.crashed" in kinds and "runtime.restarted" in kinds

        out.check("a SIGKILLed runtime is recorded as crashed and restarted",
                  await until(restarted, within=20))
        second = the_lab.runtime_pid(user_id)
        out.check("a new runtime process runs", second is not None and second != first)
        socket = the_lab.data_dir / "fronts" / user_id / "runtime.sock"
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(socket)),
                                     base_url="http://runtime", timeout=30,
                                     trust_env=False) as front:
            answer = await front.post("/mrp/v1/execute", json={"code": "print(6 * 7)"})
        out.check("code runs in the restarted runtime", answer.status_code == 200 and
                  answer.json().get("stdout") == "42\n", answer.text[:200])
        assert second is not None
        os.kill(second, signal.SIGKILL)

        async def failed() -> bool:
            state = (await state_of(the_lab, headers, user_id)).get("state") or {}
            return (state.get("runtime") or {}).get("state") == "failed"

        out.check("killed past max_crashes, the runtime is `failed`",
                  await until(failed, within=20))
        state = (await state_of(the_lab, headers, user_id)).get("state") or {}
        reason = (state.get("runtime") or {}).get("reason") or ""
        out.check("... with the reason shown", "crashed" in reason, reason)
        out.check("... and not ready", not state.get("ready"), str(state.get("ready")))
        out.check("no runtime process is left running", the_lab.runtime_pid(user_id) is None)
        the_lab.kill9()
        out.check("SQLite integrity at the end", the_lab.integrity() == "ok")


async def read_only_db(out: Outcome) -> None:
    with lab() as the_lab:
        # The database alone on a file system of its own: nothing else keeps it busy.
        the_lab.mount_tmpfs(16, the_lab.db_dir)
        the_lab.start()
        await the_lab.wait_ready()
        user_id, headers = await the_lab.user("ann")
        async with the_lab.api(headers) as api:
            started = await api.post(f"/api/v1/users/{user_id}/runtimes/start?wait=1")
        out.check("a user starts", started.status_code == 200, started.text[:200])
        the_lab.kill9()
        the_lab.remount("ro", the_lab.db_dir)
        try:
            begun = time.monotonic()
            the_lab.start()
            assert the_lab.process is not None
            try:
                code: int | None = the_lab.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                code = None
                the_lab.kill9()
            took = time.monotonic() - begun
            log = the_lab.log_text().split("kill -9 here")[-1]
            out.check("on a read-only database the daemon refuses to start (non-zero exit)",
                      code not in (None, 0), f"exit {code}")
            out.check("... within 15 s", took < 15, f"{took:.1f} s")
            out.check("... saying the database is read-only", "read-only" in log.lower() or
                      "readonly" in log.lower(), log[-400:], pending="items 3, 7")
            out.check("... without a traceback", "Traceback" not in log,
                      f"{log.count('Traceback')} tracebacks, ending: "
                      f"{log.strip().splitlines()[-1] if log.strip() else ''}",
                      pending="items 3, 7")
            out.check("the user's workloads keep running meanwhile",
                      the_lab.payloads(user_id) == {"runtime": 1, "editor": 1},
                      str(the_lab.payloads(user_id)))
        finally:
            the_lab.remount("rw", the_lab.db_dir)
        the_lab.start()
        await the_lab.wait_ready()

        async def ready_again() -> bool:
            state = (await state_of(the_lab, headers, user_id)).get("state") or {}
            return bool(state.get("ready"))

        out.check("writable again, the daemon starts and finds the user's workloads",
                  await until(ready_again, within=30))
        out.check("... the same ones (adopted, not started again)",
                  the_lab.payloads(user_id) == {"runtime": 1, "editor": 1},
                  str(the_lab.payloads(user_id)))
        the_lab.kill9()
        out.check("SQLite integrity at the end", the_lab.integrity() == "ok")


async def busy_port(out: Outcome) -> None:
    with lab() as the_lab:
        import socket

        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", the_lab.port))
        holder.listen(1)
        try:
            started = time.monotonic()
            the_lab.start()
            assert the_lab.process is not None
            try:
                code = the_lab.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                code = None
            took = time.monotonic() - started
        finally:
            holder.close()
        log = the_lab.log_text()
        out.check("the daemon exits non-zero", code not in (None, 0), f"exit {code}")
        out.check("... within 15 s (no crash-restart loop)", took < 15, f"{took:.1f} s")
        out.check("... naming the port", str(the_lab.port) in log, log[-300:])
        out.check("... without a traceback", "Traceback" not in log,
                  f"{log.count('Traceback')} tracebacks")
        out.check("... in a few lines", len(log.strip().splitlines()) <= 5,
                  f"{len(log.strip().splitlines())} lines")
        reconciled = the_lab.db.exists() and bool(the_lab.query(
            "SELECT 1 FROM events WHERE type = 'compute.reconciled'"))
        out.check("... before compute started anything (not reconciled)", not reconciled)


async def full_disk(out: Outcome) -> None:
    with lab() as the_lab:
        the_lab.mount_tmpfs(48)
        the_lab.mount_tmpfs(16, the_lab.db_dir)  # filled up too (below)
        the_lab.start()
        await the_lab.wait_ready()
        user_id, headers = await the_lab.user("ann")
        other_id, other_headers = await the_lab.user("ben")
        async with the_lab.api(headers) as api:
            started = await api.post(f"/api/v1/users/{user_id}/runtimes/start?wait=1")
        out.check("a user starts before the disk fills", started.status_code == 200,
                  started.text[:200])
        state = (await state_of(the_lab, headers, user_id)).get("state") or {}
        editor = (state.get("editor") or {}).get("address")
        fillers = [fill(the_lab.data_dir), fill(the_lab.db_dir)]
        try:
            page = the_lab.data_dir / "users" / user_id / "Projects" / "Scratch" / "mrmd.md"
            before = page.read_text() if page.exists() else None
            if editor:
                async with workload_client(editor) as http:
                    saved = await http.put("/api/files/Projects/Scratch/mrmd.md",
                                           json={"content": "x" * 2_000_000})
                message = saved.text[:300]
                out.check("saving in the editor is a 507 saying the disk is full",
                          saved.status_code == 507 and "no space" in message, message)
                out.check("... and the file is unchanged",
                          (page.read_text() if page.exists() else None) == before)
            async with the_lab.api(other_headers, timeout=40) as api:
                with trio.move_on_after(8) as waited:
                    other = await api.post(f"/api/v1/users/{other_id}/runtimes/start?wait=1")
            out.check("a start on a full disk ends (no hang)", not waited.cancelled_caught)
            if not waited.cancelled_caught:
                out.check("... failed, with a reason", other.status_code >= 400 and
                          "error" in other.text, f"{other.status_code} {other.text[:300]}")
            async with the_lab.api(headers) as api:
                token = await api.post("/api/v1/tokens", json={"name": "x", "scopes": ["user"]})

                async def not_ready() -> bool:
                    return (await api.get("/readyz")).status_code == 503

                unready = await until(not_ready, within=15)
            out.check("a write answers 503 naming the full disk", token.status_code == 503 and
                      "disk full" in token.text, f"{token.status_code} {token.text[:200]}")
            out.check("/readyz says storage cannot write", unready)
            out.check("the daemon keeps running", the_lab.process is not None and
                      the_lab.process.poll() is None)
        finally:
            for filler in fillers:
                filler.unlink()
        async with the_lab.api(other_headers) as api:

            async def ready() -> bool:
                return (await api.get("/readyz")).status_code == 200

            out.check("with space again, /readyz is ready again", await until(ready, within=15))
            again = await api.post(f"/api/v1/users/{other_id}/runtimes/start?wait=1")
        out.check("with space again, the start succeeds", again.status_code == 200,
                  f"{again.status_code} {again.text[:300]}")
        the_lab.kill9()
        out.check("SQLite integrity at the end", the_lab.integrity() == "ok")


async def execute(the_lab: Lab, user_id: str, code: str) -> str:
    """Run `code` in the user's runtime through their runtime front; its stdout."""
    socket = the_lab.data_dir / "fronts" / user_id / "runtime.sock"
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(socket)),
                                 base_url="http://runtime", timeout=60,
                                 trust_env=False) as front:
        answer = await front.post("/mrp/v1/execute", json={"code": code})
    return str(answer.json().get("stdout", answer.text[:200]))


async def kill9_during_sleep_and_wake(out: Outcome) -> None:
    with lab(extra='[checkpoint]\nprovider = "criu"\n', ready_timeout=60.0) as the_lab:
        the_lab.start()
        await the_lab.wait_ready()
        user_id, headers = await the_lab.user("ann")
        base = f"/api/v1/users/{user_id}/runtimes"
        async with the_lab.api(headers, timeout=90) as api:
            started = await api.post(f"{base}/start?wait=1")
        out.check("the user starts", started.status_code == 200, started.text[:200])
        out.check("x = 42 is set", await execute(the_lab, user_id, "x = 42\nprint(x)") ==
                  "42\n")
        for kind, step, before in (("sleep", "checkpoint", None),
                                   ("wake", "runtime.restore", "sleep")):
            if before is not None:
                async with the_lab.api(headers, timeout=90) as api:
                    slept = await api.post(f"{base}/{before}")
                out.check(f"[{kind}] the runtime sleeps first", slept.status_code == 200,
                          slept.text[:200])

            async def request(op: str = kind) -> None:
                with contextlib.suppress(httpx.TransportError):
                    async with the_lab.api(headers, timeout=90) as api:
                        await api.post(f"{base}/{op}")

            def at_step(op: str = kind, wanted: str = step) -> bool:
                return bool(the_lab.query("SELECT 1 FROM operations WHERE kind = ? AND "
                                          "state = 'open' AND step = ?", op, wanted))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(request)
                reached = await until(at_step, within=60, every=0.005)
                the_lab.kill9()
                nursery.cancel_scope.cancel()
            out.check(f"[{kind}] kill -9 at its {step!r} step", reached)
            out.check(f"[{kind}] SQLite integrity right after", the_lab.integrity() == "ok")
            the_lab.start()
            await the_lab.wait_ready(within=60)
            async with the_lab.api(headers, timeout=90) as api:
                woken = await api.post(f"{base}/start?wait=1")
            out.check(f"[{kind}] after the restart the user's workspace starts (or wakes)",
                      woken.status_code == 200, woken.text[:300])
            counts = the_lab.payloads(user_id)
            out.check(f"[{kind}] exactly one runtime runs", counts["runtime"] == 1,
                      str(counts))
            out.check(f"[{kind}] and it still has x", await execute(
                the_lab, user_id, "print(x)") == "42\n")
        the_lab.kill9()
        out.check("SQLite integrity at the end", the_lab.integrity() == "ok")


EXPERIMENTS: dict[str, Callable[[Outcome], Awaitable[None]]] = {
    "kill9-start": kill9_during_start,
    "killed-runtime": killed_runtime,
    "read-only-db": read_only_db,
    "busy-port": busy_port,
    "full-disk": full_disk,
    "kill9-sleep-wake": kill9_during_sleep_and_wake,
}
NEEDS_ROOT = {"read-only-db", "full-disk", "kill9-sleep-wake"}


async def run_experiment(name: str) -> Outcome:
    """Run one experiment; an exception is a broken claim of its own."""
    out = Outcome(name)
    started = time.monotonic()
    try:
        await EXPERIMENTS[name](out)
    except Exception as exc:  # reported, not raised: the other experiments still run
        out.check("the experiment ran to its end", False, f"{type(exc).__name__}: {exc}")
    out.seconds = time.monotonic() - started
    return out


def report(outcomes: list[Outcome]) -> str:
    lines = []
    for outcome in outcomes:
        lines.append(f"== {outcome.name} ({outcome.seconds:.1f} s)")
        for claim in outcome.claims:
            detail = f"  [{claim.detail}]" if claim.detail and not claim.held else ""
            lines.append(f"  {claim.verdict:<18} {claim.text}{detail}")
    broken = sum(len(o.broken) for o in outcomes)
    pending = sum(1 for o in outcomes for c in o.claims if not c.held and c.pending)
    held = sum(1 for o in outcomes for c in o.claims if c.held)
    lines.append(f"\n{held} held, {broken} broken, {pending} pending")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", action="append", choices=sorted(EXPERIMENTS),
                        help="run only this experiment (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the experiments")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(EXPERIMENTS))
        return 0
    names = args.only or list(EXPERIMENTS)
    if os.geteuid() != 0:
        skipped = [n for n in names if n in NEEDS_ROOT]
        if skipped:
            print(f"(not root: skipping {', '.join(skipped)}, which mount a file system)")
        names = [n for n in names if n not in NEEDS_ROOT]

    async def run_all() -> list[Outcome]:
        return [await run_experiment(name) for name in names]

    outcomes = trio.run(run_all)
    print(report(outcomes))
    return 1 if any(o.broken for o in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
