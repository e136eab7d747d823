"""The `criu` binary: finding it, its version, `criu check`, running it and reading its log.

Errors name what to do: a missing or broken CRIU says to run `scripts/setup-criu` (CRIU 4.1
built from Debian trixie's source with our patches; Debian 12's 3.17 fails on current kernels).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from markco_trio.errors import CheckpointError, CheckpointUnavailable

SETUP_HINT = "run scripts/setup-criu (CRIU >= 4.1 with markco's patches, ahead of /usr/sbin)"
# The workloads' helpers CRIU runs itself (ip, iptables-restore for a network namespace).
CRIU_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Logged by every dump and restore where root lacks CAP_SYS_RESOURCE: harmless.
HARMLESS = ("Can't setup RLIMIT_NOFILE for self",)
# Where scripts/setup-criu builds CRIU to cache its probe of the kernel (criu.kdat): CRIU keeps
# the cache only on a tmpfs, so that no reboot (another kernel) ever finds it.
KDAT_DIR = "/run/criu"
# What a kernel (or a missing privilege) refusing an operation looks like in CRIU's log.
REFUSALS = ("Operation not permitted", "Operation not supported", "Permission denied",
            "Function not implemented")


@dataclass(frozen=True)
class Criu:
    """A usable CRIU: where it is and its version (`4.1.1`)."""

    path: str
    version: str


def locate(binary: str = "criu") -> Criu:
    """The CRIU at `binary` (a path, or a name looked up on PATH then in /usr/local/sbin);
    `CheckpointUnavailable` when there is none or it does not run. Blocking."""
    path = binary if "/" in binary else \
        shutil.which(binary) or shutil.which(binary, path=CRIU_PATH)
    if path is None or not os.access(path, os.X_OK):
        raise CheckpointUnavailable(f"criu: {binary!r} is not installed: {SETUP_HINT}")
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10,
                              check=False, env={"PATH": CRIU_PATH})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckpointUnavailable(f"criu: {path} does not run ({exc}): {SETUP_HINT}") from exc
    for line in done.stdout.splitlines():
        if line.startswith("Version:"):
            return Criu(path, line.split(":", 1)[1].strip())
    raise CheckpointUnavailable(f"criu: {path} --version says nothing usable "
                                f"({done.stdout.strip() or done.stderr.strip()}): {SETUP_HINT}")


def ensure_kdat_dir(path: str = KDAT_DIR) -> str | None:
    """Make CRIU's kernel-facts cache directory a small root-only tmpfs when it is not on one
    (a /run that is not a tmpfs), so each criu run skips ~0.1 s of probing the kernel. None
    when done, else why not (checkpoints still work, slower). Blocking."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if st.st_uid != 0 or st.st_mode & 0o077:
            return f"{path} is not root's alone: CRIU's kernel cache is not used"
        if _is_tmpfs(path):
            return None
        done = subprocess.run(["mount", "-t", "tmpfs", "-o",
                               "size=4m,mode=0700,nosuid,nodev,noexec", "markco-criu", path],
                              capture_output=True, text=True, timeout=10, check=False,
                              env={"PATH": CRIU_PATH})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot prepare {path} for CRIU's kernel cache: {exc}"
    if done.returncode != 0:
        return f"cannot mount a tmpfs on {path} for CRIU's kernel cache: {done.stderr.strip()}"
    return None


def _is_tmpfs(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        best, fstype = "", ""
        for line in f:
            fields = line.split()
            mountpoint = fields[4]
            if (path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")) and \
                    len(mountpoint) >= len(best):
                best, fstype = mountpoint, fields[fields.index("-") + 1]
    return fstype == "tmpfs"


def check(criu: Criu) -> str | None:
    """`criu check` on this kernel: None when it passes, else what CRIU said. Blocking."""
    try:
        done = subprocess.run([criu.path, "check"], capture_output=True, text=True, timeout=30,
                              check=False, env={"PATH": CRIU_PATH})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode == 0:
        return None
    return interesting_lines((done.stdout + done.stderr).splitlines()) or \
        f"exit status {done.returncode}"


def has_feature(criu: Criu, feature: str) -> bool:
    """`criu check --feature <feature>` (e.g. `mem_dirty_track`, needed for pre-copy)."""
    try:
        done = subprocess.run([criu.path, "check", "--feature", feature], capture_output=True,
                              timeout=30, check=False, env={"PATH": CRIU_PATH})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def interesting_lines(lines: Sequence[str], limit: int = 8) -> str:
    """CRIU's errors (and warnings when there are no errors), the harmless ones left out."""
    kept = [line.strip() for line in lines
            if ("Error" in line or "error" in line) and not any(h in line for h in HARMLESS)]
    if not kept:
        kept = [line.strip() for line in lines
                if "Warn" in line and not any(h in line for h in HARMLESS)]
    return "\n".join(kept[-limit:])


def log_excerpt(log: Path, limit: int = 8) -> str:
    """The interesting lines of a CRIU log file (or a note that there is none)."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {log})"
    return interesting_lines(text.splitlines(), limit) or "(no error in CRIU's log)"


def refused_by_kernel(excerpt: str) -> bool:
    """Whether CRIU failed because the kernel (or a missing privilege) refused something, as
    opposed to a state it cannot handle."""
    return any(word in excerpt for word in REFUSALS)


async def run(criu: Criu, action: str, args: Sequence[str], *, log: Path,
              prefix: Sequence[str] = (), pass_fds: Sequence[int] = ()) -> None:
    """Run `criu <action> <args> -o <log>` (through `prefix`, e.g. a cgroup-joining shell)
    and raise `CheckpointError` — `CheckpointUnavailable` when the kernel refused — with
    CRIU's own log lines when it fails."""
    argv = [*prefix, criu.path, action, *args, "-o", log.name, "-v2"]
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False,
                                  pass_fds=tuple(pass_fds), env={"PATH": CRIU_PATH},
                                  stdin=subprocess.DEVNULL)
    if done.returncode == 0:
        return
    excerpt = log_excerpt(log)
    output = (done.stdout + done.stderr).decode(errors="replace").strip()
    if output and excerpt.startswith("("):
        excerpt = output[-2000:]
    message = f"criu {action} failed (exit status {done.returncode}):\n{excerpt}"
    if refused_by_kernel(excerpt):
        raise CheckpointUnavailable(f"{message}\nThe kernel refused it: check `criu check` and "
                                    f"that the daemon runs as root ({SETUP_HINT})")
    raise CheckpointError(message)
