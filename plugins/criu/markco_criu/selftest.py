"""`selftest()`: does CRIU really dump and restore a process holding a listening socket, here?

For `markco doctor`: `criu check` passing is not enough (Debian 12's CRIU passes some checks and
cannot dump anything on current kernels; unpatched CRIU 4.1 cannot dump a TCP socket on Linux
>= 6.16). The test starts a small server on 127.0.0.1 that counts its connections, connects
once, dumps it (which ends it), checks it is gone, restores it, and connects again: the answer
must be the next count — the socket and the memory both came back. It says which step failed
and CRIU's own log lines.

    result = trio.run(markco_criu.selftest)
    print(result.ok, result.step, result.message)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from markco_trio.errors import CheckpointError

from . import binary

SERVER = """\
import random, socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT
# A port outside the ephemeral range (as the process backend picks them): between the dump,
# which closes the socket, and the restore, which binds it again, an outgoing connection of
# any other process may take a free ephemeral port as its own, and the restore would fail.
for _ in range(1000):
    try:
        server.bind(("127.0.0.1", random.randint(20000, 32000)))
        break
    except OSError:
        continue
else:
    server.bind(("127.0.0.1", 0))
server.listen(8)
sys.stdout.write(f"{server.getsockname()[1]}\\n")
sys.stdout.flush()
count = 0
while True:
    conn, _ = server.accept()
    count += 1
    conn.sendall(f"markco-selftest {count}\\n".encode())
    conn.close()
"""


@dataclass(frozen=True)
class SelfTestResult:
    """`ok`, or the `step` that failed (`locate`, `check`, `start`, `dump`, `restore`,
    `answer`) and why; how long the dump and the restore took (ms)."""

    ok: bool
    step: str
    message: str
    criu_version: str | None = None
    dump_ms: int | None = None
    restore_ms: int | None = None


def _ask(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        return conn.makefile().readline().strip()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


async def selftest(criu: str = "criu", work_dir: str | None = None) -> SelfTestResult:
    """Dump and restore a process holding a listening socket (see the module doc). Needs
    root, as the checkpointer does."""
    try:
        found = await trio.to_thread.run_sync(binary.locate, criu)
    except CheckpointError as exc:
        return SelfTestResult(False, "locate", str(exc))
    failed = await trio.to_thread.run_sync(binary.check, found)
    if failed:
        return SelfTestResult(False, "check", f"`criu check` fails: {failed}\n"
                              f"{binary.SETUP_HINT}", found.version)
    work = Path(tempfile.mkdtemp(prefix="markco-criu-selftest-", dir=work_dir))
    restored: int | None = None
    process: trio.Process | None = None
    try:
        images = work / "images"
        images.mkdir()
        # Its own session, so the dumped tree has no session or group leader outside it.
        out = os.open(work / "port", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        err = os.open(work / "server.log", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", SERVER], stdin=subprocess.DEVNULL, stdout=out,
                stderr=err, start_new_session=True)
        finally:
            os.close(out)
            os.close(err)
        port = 0
        with trio.move_on_after(10):
            while not port:
                text = (work / "port").read_text().strip()
                port = int(text) if text else 0
                if not port:
                    await trio.sleep(0.01)
        if not port:
            return SelfTestResult(False, "start", "the test server did not start: " +
                                  (work / "server.log").read_text()[-500:], found.version)
        first = await trio.to_thread.run_sync(_ask, port)
        started = time.monotonic()
        try:
            await binary.run(found, "dump", ["-t", str(process.pid), "-D", str(images)],
                             log=images / "dump.log")
        except CheckpointError as exc:
            return SelfTestResult(False, "dump", str(exc), found.version)
        dump_ms = int((time.monotonic() - started) * 1000)
        await process.wait()  # reaped: the restore needs its pid free
        started = time.monotonic()
        try:
            await binary.run(found, "restore", ["-D", str(images), "-d", "--pidfile",
                                                str(work / "restored.pid")],
                             log=images / "restore.log")
        except CheckpointError as exc:
            return SelfTestResult(False, "restore", str(exc), found.version, dump_ms)
        restore_ms = int((time.monotonic() - started) * 1000)
        restored = int((work / "restored.pid").read_text())
        try:
            second = await trio.to_thread.run_sync(_ask, port)
        except OSError as exc:
            return SelfTestResult(False, "answer", f"the restored server does not answer on "
                                  f"127.0.0.1:{port}: {exc}", found.version, dump_ms, restore_ms)
        if (first, second) != ("markco-selftest 1", "markco-selftest 2"):
            return SelfTestResult(False, "answer", f"the restored server lost its state: "
                                  f"{first!r} then {second!r}", found.version, dump_ms,
                                  restore_ms)
        return SelfTestResult(True, "done", f"CRIU {found.version} dumped ({dump_ms} ms) and "
                              f"restored ({restore_ms} ms) a process holding a listening "
                              f"socket, its memory intact", found.version, dump_ms, restore_ms)
    finally:
        with trio.CancelScope(shield=True):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
            if restored is not None:
                try:
                    os.kill(restored, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                with trio.move_on_after(5):
                    # Polling: not our child unless we are a subreaper, so no pidfd event.
                    while not _gone(restored):  # noqa: ASYNC110
                        await trio.sleep(0.01)
                try:  # our child when we are a subreaper: reap exactly that pid
                    os.waitpid(restored, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG: no wait)
                except ChildProcessError:
                    pass
            shutil.rmtree(work, ignore_errors=True)
