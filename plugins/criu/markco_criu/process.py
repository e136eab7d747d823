"""CRIU on the `process` backend: dump a workload's process tree into one archive and restore it.

The backend is reached only through `markco_trio.roles.ProcessTreeCheckpointing`. A workload
there is a tree rooted at the init of its own PID namespace, with its own mount namespace (and
network namespace when the backend gives it one), in cgroups of its own:

- **Dump**: `criu dump -t <namespace init>`. The mount namespace is a copy of the host's, so
  every mount in it is declared external and found again at restore (`--external mnt[]:m`,
  restore `--root / --external mnt[]`): nothing of the host's filesystems is copied into the
  images; mounts of container engines and scratch mounts the runtime does not use are left
  out (`transient_mounts`). A network namespace of the workload's own is external too (its
  sockets are dumped with the processes; the restore gets a fresh loopback-only one).
  Established TCP connections are closed (`--tcp-close`: the runtime front's connections are
  drained before a sleep; a runtime's own outbound connections end, as after a network
  blip). A checkpoint that ends the workload dumps with `--leave-stopped`, writes the archive,
  and only then kills the tree — when the archive cannot be written (disk full) the tree is
  resumed (SIGCONT), so a failed checkpoint never loses the workload.
- **Restore**: the archive is verified (its sha256 — the body's against its trailer and the
  whole file's against the digest the caller recorded, both in the one pass that extracts it —
  and what it depends on: CRIU, kernel, mrmd-python, the interpreter) before anything is
  created; the backend then creates the workload (`Conflict` when the name is taken), and
  `criu restore -d` runs INSIDE the new workload's cgroups (a shell joins them, then execs
  criu; `--manage-cgroups=ignore`), so the restored memory is charged to the workload and its
  limits hold from the first page. The tree's log and exit-status files are the new
  workload's (`--inherit-fd`), so a copy restored under another name (a fork next to its
  source) writes to its own files. The daemon is a child subreaper (see `plugin`), so the
  restored root becomes its child when `criu` exits; the backend tracks it by pid + start
  time + boot id and reaps only that pid.
"""

from __future__ import annotations

import dataclasses
import fcntl
import importlib.metadata
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Collection, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import trio

from markco_trio.errors import CheckpointError, CheckpointUnavailable, RestoreIncompatible
from markco_trio.roles import (
    CheckpointCapabilities,
    CheckpointResult,
    ContainerInfo,
    ContainerSpec,
    ProcessTree,
    ProcessTreeCheckpointing,
)

from . import archive, binary
from .binary import Criu

FORMAT = "markco-process-checkpoint/1"
SHM = "/dev/shm"
SHM_MARGIN = 256 << 20

# A workload's own network (loopback only) is not dumped: it is declared external and a fresh
# one is given to the restore — CRIU's dump and restore of a network namespace (ip addr/route/
# rule save and restore, four iptables-save runs, sysctls) cost more than the rest of an idle
# runtime's checkpoint. What a workload's network holds that matters — its sockets — is dumped
# with the processes. The key names it in the images.
NETNS_KEY = "markco-netns"
NETNS_FD = 9  # where the restore's shell holds the fresh network (the passed fds are >= 10)
# Prepended to JOIN_CGROUPS when the restore runs in a fresh network (under `unshare --net`):
# bring its loopback up and hold it open for CRIU.
FRESH_NETWORK = f"""\
ip link set lo up || {{ echo "markco: cannot bring lo up" >&2; exit 125; }}
exec {NETNS_FD}</proc/self/ns/net
"""
# $@ = cgroup.procs files, "--", the command: join the cgroups, then exec the command.
JOIN_CGROUPS = """\
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  echo $$ > "$1" || { echo "markco: cannot join cgroup $1" >&2; exit 125; }
  shift
done
shift
exec "$@"
"""


def _high_fd(fd: int) -> int:
    """`fd` moved to 10 or above (close-on-exec), clear of the shell's single-digit fds."""
    if fd >= 10:
        return fd
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    finally:
        os.close(fd)


def _relative(path: str) -> str:
    """A path as CRIU names a file resource (relative to the root, no leading slash)."""
    return path.lstrip("/")


def _mrmd_python_version() -> str | None:
    try:
        return importlib.metadata.version("mrmd-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def _executables(tree: ProcessTree) -> dict[str, dict[str, int]]:
    """The programs the tree runs (`/proc/<pid>/exe`), with size and mtime: a restore needs
    the very same files (CRIU maps them again)."""
    found: dict[str, dict[str, int]] = {}
    for pid in tree_pids(tree.root_pid):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            st = os.stat(exe)
        except OSError:
            continue
        found[exe] = {"size": st.st_size, "mtime": int(st.st_mtime)}
    return found


# Mounts a workload's mount namespace copied from the host that belong to container engines
# or other namespaces: they come and go with containers on the host, so a checkpoint that
# recorded them could not be restored once they are gone. The workload never needs them.
SKIPPED_FSTYPES = frozenset({"nsfs", "overlay", "fuse.fuse-overlayfs", "shm"})
SKIPPED_UNDER = ("/run/netns", "/var/run/netns", "/var/lib/containers", "/run/containers",
                 "/var/lib/docker", "/run/docker", "/var/lib/kubelet", "/run/user",
                 "/run/criu")


def _unescape(field: str) -> str:
    """A mountinfo path (spaces and such are octal escapes, e.g. `\\040`)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


# Where mounts come and go (tests' and tools' scratch mounts, removable media, runtime state):
# a mount strictly below one of these is left out unless the tree uses a path on it (its own
# private /tmp, /var/tmp or /dev/shm is AT one of them, and is kept with its contents).
VOLATILE_UNDER = ("/tmp", "/var/tmp", "/mnt", "/media", "/run", "/var/run", "/dev/shm")


def _below(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def tree_pids(root: int) -> list[int]:
    """`root` and its live descendants."""
    found: list[int] = []
    pending = [root]
    while pending:
        pid = pending.pop()
        if pid in found:
            continue
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    pending.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return found


def paths_in_use(root: int) -> set[str]:
    """The paths the tree uses, as it sees them: working directories, programs, open files
    and mapped files."""
    used: set[str] = set()
    for pid in tree_pids(root):
        for link in ("cwd", "exe"):
            try:
                used.add(os.readlink(f"/proc/{pid}/{link}"))
            except OSError:
                pass
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            fds = []
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("/"):
                used.add(target.removesuffix(" (deleted)"))
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    fields = line.split(maxsplit=5)
                    if len(fields) == 6 and fields[5].startswith("/"):
                        used.add(fields[5].rstrip("\n").removesuffix(" (deleted)"))
        except OSError:
            pass
    return used


def transient_mounts(pid: int, in_use: Collection[str] = ()) -> list[str]:
    """Mount points of `pid`'s mount namespace that a checkpoint should leave out, deepest
    first: those of container engines and other namespaces (`SKIPPED_FSTYPES`,
    `SKIPPED_UNDER`), and those below a volatile place (`VOLATILE_UNDER`) holding none of the
    paths `in_use` — a mount that is gone by the time of the restore would make it fail."""
    skipped = []
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        try:
            separator = fields.index("-")
        except ValueError:
            continue
        mountpoint, fstype = _unescape(fields[4]), fields[separator + 1]
        if mountpoint == "/":
            continue
        if fstype in SKIPPED_FSTYPES or any(_below(mountpoint, top) for top in SKIPPED_UNDER):
            skipped.append(mountpoint)
        elif any(_below(mountpoint, top) and mountpoint != top for top in VOLATILE_UNDER) and \
                not any(_below(path, mountpoint) for path in in_use):
            skipped.append(mountpoint)
    return sorted(set(skipped), key=lambda m: (-m.count("/"), m))


def current_dependencies(criu: Criu | None) -> dict[str, Any]:
    """What a checkpoint made here now would depend on (compared at restore)."""
    return {"criu": criu.version if criu else None, "kernel": platform.release(),
            "arch": platform.machine(), "mrmd_python": _mrmd_python_version()}


def incompatibilities(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """What changed since the archive was made that its restore depends on (empty: none)."""
    found = []
    for key in ("kernel", "arch", "mrmd_python"):
        then, now = recorded.get(key), current.get(key)
        if then is not None and then != now:
            found.append(f"{key} was {then}, is {now}")
    then_criu, now_criu = recorded.get("criu"), current.get("criu")
    if then_criu is not None and (now_criu is None or
                                  str(then_criu).split(".")[:2] != str(now_criu).split(".")[:2]):
        found.append(f"criu was {then_criu}, is {now_criu}")
    for exe, then_stat in (recorded.get("executables") or {}).items():
        try:
            st = os.stat(exe)
        except OSError:
            found.append(f"{exe} is gone")
            continue
        if then_stat.get("size") != st.st_size or then_stat.get("mtime") != int(st.st_mtime):
            found.append(f"{exe} changed")
    return found


def tree_backend(backend: object) -> ProcessTreeCheckpointing:
    """The backend's `ProcessTreeCheckpointing` face; `CheckpointUnavailable` without one."""
    if not isinstance(backend, ProcessTreeCheckpointing):
        raise CheckpointUnavailable(
            f"the {getattr(backend, 'name', type(backend).__name__)!r} backend offers no "
            f"process-tree checkpoints (markco_trio.roles.ProcessTreeCheckpointing)")
    return backend


@dataclasses.dataclass
class ProcessCheckpointer:
    """CRIU checkpoints of the `process` backend's workloads (see the module doc).

    `criu`: the located binary (None: not installed), `unavailable`: why checkpoints cannot
    work here (CRIU missing, `criu check` failing), `work_dir`: where image directories are
    made (default: next to the archive, so the archive is written on the same filesystem),
    `ghost_limit`: the largest deleted-but-open file CRIU copies into the images.
    """

    criu: Criu | None
    unavailable: str | None = None
    work_dir: str = ""
    ghost_limit: int = 64 << 20
    pre_copy: bool = False
    _tidying: list[threading.Thread] = dataclasses.field(default_factory=list, repr=False)

    def _criu(self) -> Criu:
        if self.criu is None or self.unavailable:
            raise CheckpointUnavailable(self.unavailable or
                                        f"criu is not installed: {binary.SETUP_HINT}")
        return self.criu

    def capabilities(self, backend: object) -> CheckpointCapabilities:
        """True only for what the contract kit proves on the process backend."""
        if not isinstance(backend, ProcessTreeCheckpointing):
            return CheckpointCapabilities(checkpoint=False, notes=(
                "the backend offers no process-tree checkpoints",))
        if self.criu is None or self.unavailable:
            return CheckpointCapabilities(checkpoint=False, notes=(
                self.unavailable or f"criu is not installed: {binary.SETUP_HINT}",))
        namespaces = backend.process_tree_support()
        if "pid" not in namespaces or "mnt" not in namespaces:
            return CheckpointCapabilities(checkpoint=False, notes=(
                "workloads have no PID and mount namespaces of their own "
                "([compute.process] namespaces, or unshare failed)",))
        notes = ["established TCP connections are closed by a checkpoint (--tcp-close)",
                 "no pre-copy: this kernel has no soft-dirty memory tracking"
                 if not self.pre_copy else "pre-copy is possible but not used yet"]
        forks = "net" in namespaces
        if not forks:
            notes.append("a restore under another name while the source runs needs network "
                         "namespaces (the copy listens on the same port)")
        return CheckpointCapabilities(checkpoint=True, leave_running=True,
                                      restore_as_new=forks, established_tcp=False,
                                      pre_copy=False, notes=tuple(notes))

    def _workspace(self, archive_path: str, prefix: str, need_bytes: int,
                   memory_cgroup: str | None = None) -> Path:
        """A fresh 0700 directory for CRIU's images: `work_dir` when set; else a tmpfs
        (/dev/shm) when it has room for `need_bytes` and a margin — images written and read
        at memory speed (a wake reads them once, right away) — else next to the archive."""
        base = Path(self.work_dir) if self.work_dir else Path(archive_path).parent
        if memory_cgroup:  # a dump: as much as the workload uses
            try:
                need_bytes = int(Path(memory_cgroup, "memory.usage_in_bytes").read_text())
            except (OSError, ValueError):
                pass
        if not self.work_dir and os.path.isdir(SHM):
            try:
                st = os.statvfs(SHM)
                if st.f_bavail * st.f_frsize > 2 * need_bytes + SHM_MARGIN:
                    base = Path(SHM)
            except OSError:
                pass
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=base))

    # ------------------------------------------------------------------------------- dump

    async def checkpoint(self, backend: object, handle: str, *, archive_path: str,
                         leave_running: bool) -> CheckpointResult:
        """Dump `handle`'s tree into one archive at `archive_path` (see the module doc)."""
        criu = self._criu()
        trees = tree_backend(backend)
        started = time.monotonic()
        tree = await trees.checkpoint_target(handle)
        work = await trio.to_thread.run_sync(self._workspace, archive_path, ".criu-dump-",
                                             1 << 30, tree.cgroup_dirs.get("memory"))
        done = False
        try:
            images = work / "images"
            images.mkdir(mode=0o700)
            log = images / "dump.log"
            args = ["-t", str(tree.root_pid), "-D", str(images), "--external", "mnt[]:m",
                    "--manage-cgroups=ignore", "--tcp-close", "--network-lock", "skip",
                    "--file-locks", "--ghost-limit", str(self.ghost_limit),
                    "--leave-running" if leave_running else "--leave-stopped"]
            executables = _executables(tree)
            in_use = await trio.to_thread.run_sync(paths_in_use, tree.root_pid)
            for mountpoint in transient_mounts(tree.root_pid, in_use):
                args += ["--skip-mnt", mountpoint]
            if "net" in tree.namespaces:
                netns = os.stat(f"/proc/{tree.root_pid}/ns/net").st_ino
                args += ["--external", f"net[{netns}]:{NETNS_KEY}"]
            await binary.run(criu, "dump", args, log=log)
            dumped_ms = int((time.monotonic() - started) * 1000)
            manifest = {
                "format": FORMAT, "created_at": time.time(),
                "depends_on": {**current_dependencies(criu), "executables": executables},
                "workload": {"source": handle, "user_id": tree.user_id,
                             "role": tree.role.value, "port": tree.port, "uid": tree.uid,
                             "namespaces": list(tree.namespaces),
                             "log_path": tree.log_path, "status_path": tree.status_path},
                "criu": {"tcp": "close", "leave_running": leave_running,
                         "dump_ms": dumped_ms},
            }
            log.unlink(missing_ok=True)
            try:
                size, digest = await trio.to_thread.run_sync(
                    archive.write_archive, images, manifest, archive_path)
            except BaseException:
                if not leave_running:
                    self._resume(tree)
                raise
            if not leave_running:
                await trees.mark_checkpointed(handle)
            self.remove_later(work)  # archived: the images are not on the sleep's path
            done = True
        except OSError as exc:
            raise CheckpointError(f"checkpoint of {handle}: {exc}") from exc
        finally:
            if not done:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(shutil.rmtree, work, True)
        depends_on = dict(manifest["depends_on"])  # type: ignore[call-overload]
        return CheckpointResult(path=str(archive_path), size_bytes=size, sha256=digest,
                                duration_ms=int((time.monotonic() - started) * 1000),
                                depends_on=depends_on)

    @staticmethod
    def _resume(tree: ProcessTree) -> None:
        """SIGCONT the tree CRIU left stopped (the archive could not be written)."""
        for pid in tree_pids(tree.root_pid):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                continue

    # ---------------------------------------------------------------------------- restore

    def verify(self, archive_path: str) -> dict[str, Any]:
        """The archive's manifest, after checking it is ours and that what it depends on is
        unchanged (`RestoreIncompatible` otherwise). Blocking."""
        manifest = archive.read_manifest(archive_path, (FORMAT,))
        changed = incompatibilities(manifest.get("depends_on") or {},
                                    current_dependencies(self.criu))
        if changed:
            raise RestoreIncompatible(f"{archive_path} cannot be restored here: "
                                      f"{'; '.join(changed)}")
        return manifest

    async def restore(self, backend: object, archive_path: str, *,
                      spec: ContainerSpec, sha256: str | None = None) -> ContainerInfo:
        """Restore the archive as the new workload `spec.name` (see the module doc); `sha256`:
        the whole file's digest recorded when it was made, checked in the pass that extracts
        it, before anything is created."""
        criu = self._criu()
        trees = tree_backend(backend)
        manifest = await trio.to_thread.run_sync(self.verify, archive_path)
        workload = manifest.get("workload") or {}
        port = workload.get("port")
        # The restored runtime listens where it listened. In a network of its own that port
        # is private to it (its address names the namespace), so the spec's port is moot;
        # on the host's network it must be the same.
        own_network = "net" in (workload.get("namespaces") or ())
        if spec.port is not None and spec.port != port and not own_network:
            raise RestoreIncompatible(f"{archive_path}: the runtime listens on port {port}; a "
                                      f"restore cannot move it to {spec.port}")
        if workload.get("user_id") not in (None, spec.user_id):
            raise RestoreIncompatible(f"{archive_path} is a checkpoint of user "
                                      f"{workload.get('user_id')!r}, not {spec.user_id!r}")
        work: Path | None = await trio.to_thread.run_sync(
            self._workspace, archive_path, ".criu-restore-",
            int(manifest.get("body_bytes", 1 << 30)))
        assert work is not None
        created = False
        try:
            images = work / "images"
            images.mkdir(mode=0o700)
            # Verified (the body's sha256, and the whole file's against `sha256`) while
            # extracted: before anything is created.
            await trio.to_thread.run_sync(partial(archive.extract_archive, archive_path,
                                                  manifest, images, sha256=sha256))
            target = await trees.prepare_restore(spec, port=port)
            created = True
            recorded = tuple(workload.get("namespaces") or ())
            if set(recorded) != set(target.namespaces):
                raise RestoreIncompatible(
                    f"{archive_path} was made with namespaces {list(recorded)}, workloads here "
                    f"get {list(target.namespaces)}")
            root = await self._restore_tree(criu, images, workload, target.log_path,
                                            target.status_path, target.cgroup_procs)
            info = await trees.adopt_restored(spec.name, root)
            created = False
            self.remove_later(work)  # the images are used up: not on the wake's path
            work = None
            return info
        finally:
            with trio.CancelScope(shield=True):
                if created:
                    await trees.abandon_restore(spec.name)
                if work is not None:
                    await trio.to_thread.run_sync(shutil.rmtree, work, True)

    def remove_later(self, work: Path) -> None:
        """Remove a used-up work directory in a thread of its own, off the caller's path
        (freeing a 200 MB runtime's images on a tmpfs takes ~50 ms of a busy core; the
        operation does not wait for it). `finish_tidying` waits for what is left."""
        self._tidying = [t for t in self._tidying if t.is_alive()]
        thread = threading.Thread(target=shutil.rmtree, args=(work, True),
                                  name="markco-criu-tidy", daemon=True)
        thread.start()
        self._tidying.append(thread)

    def finish_tidying(self) -> None:
        """Wait until the work directories `remove_later` was given are gone. Blocking."""
        for thread in self._tidying:
            thread.join()
        self._tidying.clear()

    async def _restore_tree(self, criu: Criu, images: Path, workload: Mapping[str, Any],
                            log_path: str, status_path: str,
                            cgroup_procs: tuple[str, ...]) -> int:
        """`criu restore -d` inside the cgroups; the restored root's host pid."""
        log_fd = _high_fd(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                                  os.O_CLOEXEC, 0o600))
        status_fd = _high_fd(os.open(status_path, os.O_WRONLY | os.O_TRUNC | os.O_CREAT |
                                     os.O_CLOEXEC, 0o600))
        try:
            pidfile = images / "restored.pid"
            args = ["-D", str(images), "-d", "--pidfile", str(pidfile), "--root", "/",
                    "--external", "mnt[]", "--manage-cgroups=ignore", "--tcp-close",
                    "--network-lock", "skip", "--file-locks",
                    "--inherit-fd", f"fd[{log_fd}]:{_relative(str(workload['log_path']))}",
                    "--inherit-fd",
                    f"fd[{status_fd}]:{_relative(str(workload['status_path']))}"]
            script = JOIN_CGROUPS
            prefix: list[str] = []
            if "net" in (workload.get("namespaces") or ()):
                # A fresh network of its own, loopback up, for the restored tree.
                args += ["--inherit-fd", f"fd[{NETNS_FD}]:{NETNS_KEY}"]
                script = FRESH_NETWORK + JOIN_CGROUPS
                prefix = ["unshare", "--net", "--"]
            prefix += ["/bin/sh", "-c", script, "markco-criu-restore", *cgroup_procs, "--"]
            try:
                await binary.run(criu, "restore", args, log=images / "restore.log",
                                 prefix=prefix, pass_fds=(log_fd, status_fd))
            except CheckpointError as exc:
                text = str(exc)
                if "has bad size" in text or "build-id" in text.lower():
                    raise RestoreIncompatible(
                        f"a file the checkpointed runtime held open changed since the "
                        f"checkpoint, so it cannot be restored as it was:\n{text}") from exc
                if "mnt: " in text or "mnt-v2: " in text:
                    raise RestoreIncompatible(
                        f"a filesystem mounted when the runtime was checkpointed is gone, so "
                        f"it cannot be restored as it was:\n{text}") from exc
                raise
            return int(pidfile.read_text().strip())
        finally:
            os.close(log_fd)
            os.close(status_fd)
