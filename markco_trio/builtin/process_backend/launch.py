"""How a workload process is started: detached, in its cgroups, namespaces and user, with a
clean environment, and with a waiter that records its exit status.

The chain, from the daemon:

    setsid --fork           forks and exits at once: the workload is never the daemon's child
    └ /bin/sh (launcher)    own session; records its pid, joins the workload's cgroups (writes
      │                     its pid to each cgroup.procs), then execs — so every descendant is
      │                     accounted from the start
      └ unshare --pid --mount --ipc --net --fork --mount-proc (namespaces on; --net
          │                                              when the workload gets its own network)
          └ /bin/sh (waiter, PID 1 of the namespace)  brings `lo` up (its network has nothing
              │                                        else), runs the command, then writes its
              │                                        exit status to a file the daemon reads
              └ setpriv --reuid U --regid G ...       (when the daemon is root)
                  └ the command (mrmd-python, the editor...)

stdin is /dev/null and stdout/stderr are appended to the workload's log file: no pipe to the
daemon, so the workload outlives the daemon. Not being the daemon's child, it is the same
workload before and after a daemon restart (no zombie to reap, no exit status to collect from
the kernel), and signal dispositions are left alone (no `&`, which would ignore SIGINT — the
signal mrmd-python interrupts a cell with). The waiter's status file is how the daemon, never
the parent, learns the exit code. When the namespace's PID 1 (the waiter) ends, the kernel
kills everything left in the namespace; `--kill-child` does the same when unshare dies.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from ...errors import BackendError

# $1 = the pid file, then cgroup.procs files, then "--", then the command to exec.
LAUNCHER = """\
echo $$ > "$1.tmp" && mv -f "$1.tmp" "$1" || exit 125
shift
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  echo $$ > "$1" || { echo "markco: cannot join cgroup $1" >&2; exit 125; }
  shift
done
shift
exec "$@"
"""

# $1 = status file, $2 = log file, then the command. stdin, the log and the status file are
# opened again HERE, inside the workload's namespaces: files opened before `unshare --mount`
# belong to the daemon's mount namespace, which a checkpoint of the workload could not name.
# The status file is held open (fd 3, not passed to the command) and the exit code written to
# it at the end — one small write, so the daemon never reads half a number; an empty file means
# "still running". Holding descriptors rather than reopening paths lets a restored copy under
# another name be given its own files (CRIU's --inherit-fd).
WAITER = """\
status=$1; log=$2; shift 2
unset PWD OLDPWD  # the shell's own: the workload's environment is exactly what we built
exec </dev/null >>"$log" 2>&1 3>"$status"
"$@" 3>&-
code=$?
echo "$code" >&3
exit "$code"
"""

# Prepended to the waiter when the workload has a network namespace of its own ($1 = the path of
# iproute2's `ip`): root inside the namespace (before setpriv drops privileges) brings up its
# only interface, the loopback.
WAITER_NETWORK = """\
"$1" link set lo up || { echo "markco: cannot bring lo up in its network" >&2; exit 125; }
shift
"""

# Prepended when the workload gets private temporary directories ($1 = their paths joined by
# ":", $2 = the path of `mount`): root inside the mount namespace mounts a fresh tmpfs on each, so
# what one user leaves in /tmp, /var/tmp or /dev/shm no other user sees (the mount namespace is
# private: nothing propagates back to the host). Its pages are charged to the workload's memory
# cgroup.
WAITER_TMP = """\
IFS=:
for dir in $1; do
  "$2" -t tmpfs -o nosuid,nodev,mode=1777 markco-tmp "$dir" ||
    { echo "markco: cannot make $dir private" >&2; exit 125; }
done
unset IFS
shift 2
"""

TEMPORARY_DIRS = ("/tmp", "/var/tmp", "/dev/shm")

PLACEHOLDERS = ("{host}", "{port}", "{user_dir}")


def resolve(template: str, *, host: str, port: int | None, user_dir: str) -> str:
    """Replace the spec placeholders. Plain replacement, not `str.format`: commands and env
    values may contain braces of their own."""
    return (template.replace("{host}", host)
            .replace("{port}", "" if port is None else str(port))
            .replace("{user_dir}", user_dir))


def build_env(spec_env: Mapping[str, str], *, path: str, home: str) -> dict[str, str]:
    """The workload's whole environment: PATH, LANG, HOME and the spec's variables. Nothing
    else of the daemon's environment (its secrets, DATABASE_URL...) reaches a workload."""
    env = {"PATH": path, "LANG": os.environ.get("LANG", "C.UTF-8") or "C.UTF-8", "HOME": home}
    env.update(spec_env)
    return env


def build_argv(*, command: list[str], cgroup_procs: list[str], status_file: str,
               pid_file: str, namespaces: bool, user: tuple[int, int] | None,
               unshare: str = "unshare", setpriv: str = "setpriv",
               setsid: str = "setsid", ip: str | None = None,
               log_file: str = "/dev/null", private_tmp: tuple[str, ...] = (),
               mount: str = "mount") -> list[str]:
    """The launcher's argv for `command` (see the module doc for the chain). With `ip` (the
    path of iproute2's `ip`) and `namespaces`, the workload also gets a network namespace of
    its own, loopback only; with `private_tmp` (and `namespaces`), a fresh tmpfs on each of
    those directories (`mount`: the path of util-linux's mount)."""
    inner = list(command)
    if user is not None:
        uid, gid = user
        # No capabilities, not even in the bounding set, and no way to gain any (setuid
        # programs of the host included).
        inner = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                 "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--", *inner]
    network = namespaces and ip is not None
    tmp = namespaces and bool(private_tmp)
    waiter = (WAITER_NETWORK if network else "") + (WAITER_TMP if tmp else "") + WAITER
    waited = ["/bin/sh", "-c", waiter, "markco-waiter", *([ip] if network and ip else []),
              *([":".join(private_tmp), mount] if tmp else []), status_file, log_file, *inner]
    if namespaces:
        # The waiter leads a session of its own inside the namespace (`setsid` without a fork:
        # it is not a group leader there), so the tree can be checkpointed — CRIU refuses a
        # session whose leader is outside the PID namespace. No `--kill-child`: CRIU restores
        # a parent-death signal, which would kill the restored tree when `criu restore -d`
        # exits; a stop kills the namespace's processes itself (cgroups, or the tree).
        # --ipc: System V shared memory, semaphores and message queues of its own (another
        # user's segments are not even visible).
        waited = [unshare, "--pid", "--mount", "--ipc", *(["--net"] if network else []), "--fork",
                  "--mount-proc", "--", setsid, *waited]
    return [setsid, "--fork", "/bin/sh", "-c", LAUNCHER, "markco-launcher", pid_file,
            *cgroup_procs, "--", *waited]


def spawn(argv: list[str], *, env: Mapping[str, str], cwd: str, log_path: Path,
          pid_file: Path, timeout: float = 10.0) -> int:
    """Start the launcher detached; return the pid of the workload's root process (the
    launcher, which execs into the chain). Blocking: call it from a worker thread."""
    pid_file.unlink(missing_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        forker = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                  env=dict(env), cwd=cwd, close_fds=True)
    finally:
        os.close(fd)
    forker.wait(timeout)  # setsid --fork returns as soon as it has forked
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(pid_file.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.001)
    raise BackendError(f"process backend: the workload did not start within {timeout:g} s "
                       f"(see {log_path})")


def private_tmp_dirs(paths: list[str]) -> tuple[str, ...]:
    """Which of /tmp, /var/tmp and /dev/shm can be made private to a workload: those that
    exist and hold none of `paths` (its command, files, sockets: a tmpfs over them would hide
    them — a data directory under /tmp keeps /tmp shared)."""
    kept = []
    for directory in TEMPORARY_DIRS:
        if not os.path.isdir(directory) or os.path.islink(directory):
            continue
        inside = any(os.path.abspath(p) == directory or
                     os.path.abspath(p).startswith(directory + "/") for p in paths)
        if not inside:
            kept.append(directory)
    return tuple(kept)


def find_executable(name: str, path: str) -> str | None:
    """`name` resolved against `path` (the workload's PATH, not the daemon's)."""
    if "/" in name:
        return name if os.access(name, os.X_OK) else None
    return shutil.which(name, path=path)


def _may(st: os.stat_result, uid: int, gid: int, bit: int) -> bool:
    """Whether uid/gid gets permission `bit` (4 read, 2 write, 1 execute) on a file."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid == gid:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def unreachable_part(path: str, uid: int, gid: int, *, execute: bool = False) -> str | None:
    """The first directory on the way to `path` that uid/gid cannot traverse (or `path` itself
    when it needs execute permission and lacks it); None when reachable."""
    parts = Path(os.path.abspath(path)).parts
    current = Path(parts[0])
    for part in parts[1:]:
        if not _may(current.stat(), uid, gid, 1):
            return str(current)
        current = current / part
    if execute:
        st = current.stat()
        if stat.S_ISREG(st.st_mode) and not _may(st, uid, gid, 1):
            return str(current)
    return None


def interpreter_of(path: str) -> str | None:
    """The interpreter of a `#!` script (None for binaries), symlinks resolved."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip().split()
    return os.path.realpath(line[0].decode()) if line else None


def check_runnable(executable: str, uid: int, gid: int, who: str) -> None:
    """Raise a `BackendError` saying what to change when `who` (the run_as user) cannot run
    `executable` — checked up front, because a workload failing with "permission denied" in
    its log file is much harder to understand."""
    for target in (executable, os.path.realpath(executable), interpreter_of(executable)):
        if target is None:
            continue
        blocked = unreachable_part(target, uid, gid, execute=True)
        if blocked is not None:
            raise BackendError(
                f"process backend: {who} cannot run {executable}: {blocked} is not accessible to "
                f"it (needed for {target}). Install the program (and its interpreter) where "
                f"{who} can read it — e.g. a virtual environment outside /root — or change "
                f"[compute.process] run_as")
