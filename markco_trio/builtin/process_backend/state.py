"""What the process backend remembers about a workload, on disk, so a restarted daemon finds it.

One directory per workload under the backend's state dir (`<data_dir>/workloads/<name>/`, 0700):
`workload.json` (this record, 0600, replaced atomically), `output.log` (stdout and stderr of
the workload), `launcher.pid` (how the detached launcher tells its pid) and `exit-status`
(written by the workload's waiter when the command ends).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import ProcessIdentity

STATE_FILE = "workload.json"
LOG_FILE = "output.log"
STATUS_FILE = "exit-status"
PID_FILE = "launcher.pid"


@dataclass
class WorkloadState:
    """A workload of the process backend: its spec (templates unresolved), where it runs, and
    the identity of its root process (pid + start time + boot id, never the pid alone)."""

    name: str
    user_id: str
    role: str
    labels: dict[str, str]
    command: list[str]
    env: dict[str, str]
    user_dir: str
    memory_bytes: int
    cpus: float
    stop_signal: str
    spec_port: int | None
    created_at: float
    port: int | None = None
    pid: int | None = None
    start_ticks: int | None = None
    boot_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    stop_requested: bool = False
    oom_baseline: int = 0
    uid: int | None = None
    gid: int | None = None
    namespaces: bool = False
    network: bool = False  # a network namespace of its own: reached only through `netns:`
    cgroups: dict[str, str] = field(default_factory=dict)

    def identity(self) -> ProcessIdentity | None:
        """The root process as started, or None if never started."""
        if self.pid is None or self.start_ticks is None or self.boot_id is None:
            return None
        return ProcessIdentity(self.pid, self.start_ticks, self.boot_id)


def load(directory: Path) -> WorkloadState | None:
    """The state in `directory`, or None when there is none (or it is unreadable)."""
    try:
        raw: dict[str, Any] = json.loads((directory / STATE_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    known = {f.name for f in dataclasses.fields(WorkloadState)}
    return WorkloadState(**{k: v for k, v in raw.items() if k in known})


def save(directory: Path, state: WorkloadState) -> None:
    """Write the state atomically (a crash leaves the old or the new file, never half)."""
    tmp = directory / (STATE_FILE + ".tmp")
    data = json.dumps(dataclasses.asdict(state), indent=1, sort_keys=True).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / STATE_FILE)


def read_exit_status(directory: Path) -> tuple[int, float] | None:
    """(exit code, when it was written) from the waiter's status file, if the command ended."""
    path = directory / STATUS_FILE
    try:
        text = path.read_text().strip()
        written = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        return int(text), written
    except ValueError:
        return None


def tail_lines(path: Path, lines: int, *, chunk: int = 64 * 1024) -> str:
    """The last `lines` lines of `path`, reading backwards from its end (logs grow large)."""
    if lines <= 0:
        return ""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return ""
    with f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        data = b""
        pos = end
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    text = data.decode("utf-8", "replace")
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) + ("\n" if kept and text.endswith("\n") else "")
