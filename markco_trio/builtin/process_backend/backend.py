"""`ProcessBackend`: users' editors and runtimes as detached local processes.

Fit for a small team (DESIGN §5.2) when the daemon runs as root: each user's workloads run as a
uid/gid of their own (allocated from `uid_range`, recorded in storage, no /etc/passwd entry), in
their own PID, mount and NETWORK namespaces (loopback only: nothing on the host can connect to a
workload, and a workload can connect to nothing but itself), with a clean, explicit environment,
in cgroups of their own where the machine allows. The daemon reaches a workload by opening its
socket inside the workload's namespace (`markco_trio.dial`, the `netns:` address form). The
user's directory is 0700 and theirs; `users/` is 0711. What it does not isolate — one kernel,
shared /tmp, CPU side channels... — is in docs/compute.md.

Each workload runs detached (own session, logs to files, no pipe to the daemon) so it survives a
daemon restart. A stop kills the whole tree. Processes are tracked by pid + start time + boot
id, so a recycled PID is never adopted (nor its network namespace dialled).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ... import userdirs
from ...dial import netns_address
from ...errors import BackendError, Conflict, NotFound
from ...records import WorkloadRole
from ...roles import (
    LABEL_DEPLOYMENT,
    LABEL_ROLE,
    LABEL_USER,
    STATUS_CRASHED,
    STATUS_CREATED,
    STATUS_EXITED,
    STATUS_OOM_KILLED,
    STATUS_RUNNING,
    BackendCapabilities,
    ContainerInfo,
    ContainerSpec,
    ContainerStats,
)
from . import cgroups, launch, ports, procs
from .accounts import Accounts, MemoryAccounts, parse_uid_range, range_conflicts
from .checkpointing import ProcessCheckpointing
from .state import (
    LOG_FILE,
    PID_FILE,
    STATUS_FILE,
    WorkloadState,
    load,
    read_exit_status,
    save,
    tail_lines,
)

BIND_HOST = "127.0.0.1"
KILL_DEADLINE = 10.0  # seconds to wait for a SIGKILLed tree to disappear


@dataclass(frozen=True)
class ProcessOptions:
    """`[compute.process]` — the built-in process backend, the embedded default.

    When the daemon runs as root (with `namespaces` on), users are isolated from each other:
    each user's workloads run as a uid/gid of their own and in network namespaces of their own
    (see the module doc and docs/compute.md for what is and is not isolated). Not as root,
    every workload runs as the daemon's own account on the host's network: one person only.

    - `uid_range`: where per-user uids (and gids, the same numbers) are allocated, once per
      user, recorded in storage, never reused. Pick a range no host account or subordinate-id
      range (/etc/subuid) uses. The user directories are given to these accounts.
    - `run_as`: obsolete (workloads used to share this one account); ignored. Directories it
      owned are given to their user's own account at the next start.
    - `namespaces`: each workload in a PID, mount and network namespace of its own (`unshare`
      from util-linux; `ip` from iproute2 brings its loopback up), so no descendant escapes a
      stop, checkpoints restore cleanly, and nothing but the daemon can connect to it.
    - `cgroups`: a cgroup per workload under the writable cgroup v1 controllers (memory, cpu,
      cpuacct, pids, freezer) at `<controller>/<cgroup_parent>/<deployment id>/<name>`; without
      them limits are not enforced and stats come from /proc.
    - `port_range`: where listening ports are chosen (never inside the kernel's ephemeral range).
    - `state_dir`: where workload records and logs live (default `<data_dir>/workloads`).
    - `pids_max`: the most processes a workload may have (0: unlimited).
    - `path`: the workloads' PATH.
    """

    run_as: str = ""
    uid_range: str = "200000-299999"
    namespaces: bool = True
    cgroups: bool = True
    cgroup_parent: str = "markco"
    port_range: str = "20000-32000"
    state_dir: str = ""
    pids_max: int = 4096
    path: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    def __post_init__(self) -> None:
        ports.parse_range(self.port_range)
        parse_uid_range(self.uid_range)
        if "/" in self.cgroup_parent or self.cgroup_parent in ("", ".", ".."):
            raise ValueError("cgroup_parent: one directory name, such as 'markco'")
        if self.pids_max < 0:
            raise ValueError("pids_max: zero (unlimited) or more")


def _valid_name(handle: str) -> bool:
    return bool(handle) and "/" not in handle and handle not in (".", "..") and \
        "\0" not in handle and len(handle) <= 200


class ProcessBackend(ProcessCheckpointing):
    """The `process` ContainerBackend (see the module doc). Handles are workload names."""

    name = "process"

    def __init__(self, options: ProcessOptions, *, deployment_id: str, data_dir: Path,
                 accounts: Accounts | None = None) -> None:
        self.options = options
        self.deployment_id = deployment_id
        self.data_dir = Path(data_dir)
        self.state_dir = Path(options.state_dir) if options.state_dir else \
            self.data_dir / "workloads"
        if not self.state_dir.is_absolute():
            self.state_dir = self.data_dir / self.state_dir
        self.port_range = ports.parse_range(options.port_range)
        self.uid_range = parse_uid_range(options.uid_range)
        # Where per-user accounts are recorded: the daemon's storage; in memory for tests.
        self._accounts_book: Accounts = accounts if accounts is not None else MemoryAccounts()
        self._accounts: dict[str, tuple[int, int]] = {}
        self._per_user = False  # root: each user's workloads run as their own uid/gid
        self._ip: str | None = None  # iproute2's ip, when workloads get network namespaces
        self._mount = shutil.which("mount", path=f"{options.path}:/usr/bin:/bin")
        self._cgroup_parents: dict[str, Path] = {}
        self._namespaces = False
        self._unshare = "unshare"
        self._setpriv = "setpriv"
        self._notes: list[str] = []
        self._locks: dict[str, trio.Lock] = {}
        self._setsid = "setsid"
        # Ports handed out by `_pick_port` (which runs in worker threads), by workload, so two
        # starts at once never get the same one before either is saved.
        self._picked: dict[str, int] = {}
        self._port_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ProcessBackend({str(self.state_dir)!r}, deployment={self.deployment_id!r})"

    # ------------------------------------------------------------------ provider lifecycle

    async def __aenter__(self) -> ProcessBackend:
        await trio.to_thread.run_sync(self._prepare)
        if self._per_user:
            for account in await self._accounts_book.list_workload_accounts():
                self._accounts[account.user_id] = (account.uid, account.gid)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Workloads are deliberately left running: they outlive the daemon.
        return None

    def _prepare(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        opts = self.options
        setsid = shutil.which("setsid", path=opts.path)
        if setsid is None:
            raise BackendError("process backend: `setsid` (util-linux) is not installed; it "
                               "detaches workloads from the daemon (apt-get install util-linux)")
        self._setsid = setsid
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise BackendError("process backend: `setpriv` (util-linux) is not installed "
                                   "and is needed to run workloads as their users' accounts; "
                                   "install util-linux (apt-get install util-linux)")
            self._setpriv = setpriv
            self._per_user = True
            conflicts = range_conflicts(self.uid_range)
            if conflicts:
                raise BackendError(
                    f"process backend: [compute.process] uid_range {opts.uid_range} holds ids "
                    f"of {', '.join(conflicts[:5])}: users' workloads would share them. Choose "
                    f"a range clear of host accounts and subordinate id ranges")
        else:
            self._notes.append("the daemon is not root: every workload runs as the daemon's "
                               "account, on the host's network (one person only)")
        if opts.cgroups:
            self._cgroup_parents = cgroups.probe(opts.cgroup_parent, self.deployment_id)
            if "memory" not in self._cgroup_parents:
                self._notes.append("no writable cgroup v1 memory controller: memory limits are "
                                   "not enforced and stats come from /proc")
        else:
            self._notes.append("cgroups disabled: limits are not enforced, stats from /proc")
        if opts.namespaces:
            self._namespaces = self._probe_namespaces()
            if not self._namespaces:
                self._notes.append("cannot create PID/mount namespaces (unshare failed): "
                                   "workloads share the daemon's namespaces and network")
            else:
                self._ip = self._probe_network()
                if self._ip is None:
                    self._notes.append("cannot create network namespaces (unshare --net, or "
                                       "iproute2's `ip` missing): workloads share the host's "
                                       "network")
        if self._per_user and self._ip is None:
            self._notes.append("WITHOUT network namespaces users are NOT isolated from each "
                               "other: any local process can reach their workloads' ports")

    def _probe_namespaces(self) -> bool:
        unshare = shutil.which("unshare")
        if unshare is None:
            return False
        self._unshare = unshare
        return self._probe([unshare, "--pid", "--mount", "--ipc", "--fork", "--kill-child",
                            "--mount-proc", "--", "/bin/true"])

    def _probe_network(self) -> str | None:
        ip = shutil.which("ip", path=f"{self.options.path}:/usr/sbin:/sbin")
        if ip is None:
            return None
        ok = self._probe([self._unshare, "--net", "--", ip, "link", "set", "lo", "up"])
        return ip if ok else None

    def _probe(self, argv: list[str]) -> bool:
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=10,
                                  env={"PATH": self.options.path})
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    def capabilities(self) -> BackendCapabilities:
        """Limits live and enforced with cgroups; a network namespace per workload (when the
        machine allows); host paths."""
        has_memory = "memory" in self._cgroup_parents
        return BackendCapabilities(
            update_limits_live=has_memory, checkpoint=self._namespaces,
            isolated_network=self._ip is not None, per_user_cgroup=has_memory,
            enforces_limits=has_memory and "cpu" in self._cgroup_parents,
            mounts=False, pid_namespace=self._namespaces,
            notes=("one kernel for all users: see docs/compute.md for what is not isolated",
                   *self._notes))

    async def prepare_user(self, user_id: str) -> None:
        """Allocate the user's own uid/gid (once: recorded by the accounts book, storage in the
        daemon) when the daemon is root; nothing otherwise."""
        if not self._per_user or user_id in self._accounts:
            return
        account = await self._accounts_book.allocate_workload_account(
            user_id, uid_min=self.uid_range[0], uid_max=self.uid_range[1], now=time.time())
        self._accounts[user_id] = (account.uid, account.gid)

    def workload_owner(self, user_id: str) -> tuple[int, int] | None:
        """The user's own (uid, gid) when the daemon is root (after `prepare_user`), else
        None (workloads run as the daemon's account)."""
        if not self._per_user:
            return None
        owner = self._accounts.get(user_id)
        if owner is None:
            raise BackendError(f"process backend: no account prepared for user {user_id!r} "
                               f"(prepare_user first)")
        return owner

    # ------------------------------------------------------------------ helpers

    def _dir(self, handle: str) -> Path:
        return self.state_dir / handle

    def _load(self, handle: str) -> WorkloadState:
        state = load(self._dir(handle)) if _valid_name(handle) else None
        if state is None or state.labels.get(LABEL_DEPLOYMENT) != self.deployment_id:
            raise NotFound(f"process backend: no workload {handle!r} in this deployment "
                           f"({self.deployment_id!r})")
        return state

    async def _load_async(self, handle: str) -> WorkloadState:
        """`_load` in a worker thread: the state is a JSON file (no disk I/O on trio's)."""
        return await trio.to_thread.run_sync(self._load, handle)

    async def _info_async(self, state: WorkloadState) -> ContainerInfo:
        """`_info` in a worker thread: it reads /proc, the cgroups and the status file."""
        return await trio.to_thread.run_sync(self._info, state)

    def _lock(self, handle: str) -> trio.Lock:
        return self._locks.setdefault(handle, trio.Lock())

    def _cgroups(self, state: WorkloadState) -> cgroups.WorkloadCgroups:
        return cgroups.WorkloadCgroups({k: Path(v) for k, v in state.cgroups.items()})

    def _alive(self, state: WorkloadState) -> bool:
        identity = state.identity()
        if identity is None:
            return False
        if procs.is_alive(identity):
            return True
        procs.reap(identity)  # our zombie child when the daemon is a subreaper (restores)
        return False

    def _members(self, state: WorkloadState) -> list[int]:
        """Every live process of the workload: its cgroups' and its session's (the session
        is the fallback without cgroups; it only counts while the root is ours)."""
        found = set(self._cgroups(state).pids())
        if self._alive(state) and state.pid is not None:
            found.update(procs.session_members(state.pid))
            found.update(procs.descendants(state.pid))  # a PID namespace's own session
            found.add(state.pid)
        found.discard(os.getpid())
        return sorted(found)

    def _info(self, state: WorkloadState) -> ContainerInfo:
        address = None
        if state.port is not None:
            address = f"{BIND_HOST}:{state.port}"
            if state.network and state.pid is not None and state.start_ticks is not None:
                # Reached only inside the workload's own network namespace.
                address = netns_address(state.pid, state.start_ticks, BIND_HOST, state.port)
        status, exit_code, finished = self._status(state)
        return ContainerInfo(handle=state.name, name=state.name, user_id=state.user_id,
                             role=WorkloadRole(state.role), status=status, address=address,
                             labels=dict(state.labels), exit_code=exit_code,
                             started_at=state.started_at, finished_at=finished)

    def outdated(self, state: WorkloadState) -> str | None:
        """Why a workload started before this backend isolated users must not be adopted
        (None: it may): it runs without the network namespace the backend now gives, or as
        another account than its user's own (the old shared `run_as`). It is reported as
        exited, so reconciliation removes it and the next start replaces it."""
        if self._ip is not None and state.namespaces and not state.network:
            return "started without a network namespace of its own (before an upgrade)"
        owner = self._accounts.get(state.user_id)
        if self._per_user and owner is not None and (state.uid, state.gid) != owner:
            return "runs as another account than its user's own (before an upgrade)"
        return None

    def _status(self, state: WorkloadState) -> tuple[str, int | None, float | None]:
        if state.pid is None:
            return STATUS_CREATED, None, None
        if self._alive(state):
            if self.outdated(state) is not None:
                return STATUS_EXITED, None, None
            return STATUS_RUNNING, None, None
        ended = read_exit_status(self._dir(state.name))
        exit_code, finished = (ended if ended else (state.exit_code, state.finished_at))
        if state.stop_requested:
            return STATUS_EXITED, exit_code, finished or state.finished_at
        if self._cgroups(state).oom_kills() > state.oom_baseline:
            return STATUS_OOM_KILLED, exit_code, finished
        if exit_code == 0:
            return STATUS_EXITED, 0, finished
        # Non-zero, or gone without a status (the waiter itself was killed, or a reboot).
        return STATUS_CRASHED, exit_code, finished

    async def _save(self, state: WorkloadState) -> None:
        await trio.to_thread.run_sync(save, self._dir(state.name), state)

    def _reserved_ports(self, except_name: str) -> set[int]:
        reserved = {port for name, port in self._picked.items() if name != except_name}
        for directory in self.state_dir.iterdir():
            if directory.name == except_name:
                continue
            other = load(directory)
            if other is not None and other.port is not None:
                reserved.add(other.port)
        return reserved

    # ------------------------------------------------------------------ the role

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        """Record the workload and make its cgroups; nothing runs until `start`."""
        if not _valid_name(spec.name):
            raise BackendError(f"process backend: {spec.name!r} is not a valid workload name")
        async with self._lock(spec.name):
            directory = self._dir(spec.name)
            if await trio.to_thread.run_sync(load, directory) is not None:
                raise Conflict(f"process backend: a workload named {spec.name!r} exists")
            executable = await trio.to_thread.run_sync(
                launch.find_executable, spec.command[0], self.options.path) \
                if spec.command else None
            if executable is None:
                raise BackendError(f"process backend: cannot find {spec.command[:1]!r} on the "
                                   f"workload PATH ({self.options.path}); give an absolute path")
            await self.prepare_user(spec.user_id)
            owner = self.workload_owner(spec.user_id)
            await trio.to_thread.run_sync(self._prepare_user_dir, spec.user_dir, owner)
            if owner is not None:
                who = self._who(owner)
                await trio.to_thread.run_sync(
                    lambda: launch.check_runnable(executable, *owner, who=who))
            labels = {**spec.labels, LABEL_DEPLOYMENT: self.deployment_id,
                      LABEL_USER: spec.user_id, LABEL_ROLE: WorkloadRole(spec.role).value}
            groups = cgroups.WorkloadCgroups.for_workload(self._cgroup_parents, spec.name)
            state = WorkloadState(
                name=spec.name, user_id=spec.user_id, role=WorkloadRole(spec.role).value,
                labels=labels, command=[executable, *spec.command[1:]], env=dict(spec.env),
                user_dir=spec.user_dir, memory_bytes=spec.memory_bytes, cpus=spec.cpus,
                stop_signal=spec.stop_signal, spec_port=spec.port, created_at=time.time(),
                uid=owner[0] if owner else None, gid=owner[1] if owner else None,
                namespaces=self._namespaces, network=self._ip is not None,
                cgroups={k: str(v) for k, v in groups.dirs.items()})
            await trio.to_thread.run_sync(lambda: directory.mkdir(mode=0o700, exist_ok=True))
            await self._save(state)
            return await self._info_async(state)

    def _who(self, owner: tuple[int, int]) -> str:
        return f"the workloads' account (uid {owner[0]})"

    def _prepare_user_dir(self, user_dir: str, owner: tuple[int, int] | None) -> None:
        """Make the user directory exist, 0700, and belong to the user's account; `users/`
        stays the daemon's (0711). Everything inside is the user's and may hold planted links,
        so it is only ever touched through held fds without following one (`userdirs`). A
        directory whose top is not the user's yet (new, or from the old shared account) is
        given to them whole."""
        path = Path(user_dir)
        if owner is None:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            return
        uid, gid = owner
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        # Directories of the data dir are ours to open up for traversal (x only, no listing);
        # anything above it is the operator's, and we say what to change instead.
        for parent in reversed(path.parents):
            if parent == self.data_dir or self.data_dir in parent.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, (mode & 0o7777) | 0o001)
        blocked = launch.unreachable_part(str(path.parent), uid, gid)
        if blocked is not None:
            raise BackendError(
                f"process backend: {self._who(owner)} cannot reach {path}: {blocked} is not "
                f"traversable; allow it (chmod o+x {blocked}) or move [server] data_dir")
        with userdirs.open_user_dir(path, owner=owner):
            pass

    def _private_tmp(self, state: WorkloadState, command: list[str],
                     env: dict[str, str]) -> tuple[str, ...]:
        """The temporary directories to make private to this workload (see
        `launch.private_tmp_dirs`): only with namespaces, for a per-user account."""
        if not state.network or state.uid is None or self._mount is None:
            return ()
        paths = [state.user_dir, str(self.state_dir), *command, *env.values(),
                 *(os.path.realpath(c) for c in command[:1])]
        interpreter = launch.interpreter_of(command[0]) if command else None
        if interpreter:
            paths.append(interpreter)
        return launch.private_tmp_dirs([p for p in paths if p.startswith("/")])

    async def start(self, handle: str) -> ContainerInfo:
        """Launch the workload (see `launch`); a running one is returned as it is."""
        async with self._lock(handle):
            state = await self._load_async(handle)
            if await trio.to_thread.run_sync(self._alive, state):
                return await self._info_async(state)
            await self._kill_tree(state)  # leftovers of a previous run, if any
            directory = self._dir(handle)
            groups = self._cgroups(state)
            await trio.to_thread.run_sync(self._prepare_cgroups, state, groups)
            state.port = await trio.to_thread.run_sync(self._pick_port, state)
            host, port = BIND_HOST, state.port
            command = [launch.resolve(a, host=host, port=port, user_dir=state.user_dir)
                       for a in state.command]
            env = launch.build_env(
                {k: launch.resolve(v, host=host, port=port, user_dir=state.user_dir)
                 for k, v in state.env.items()}, path=self.options.path, home=state.user_dir)
            private_tmp = await trio.to_thread.run_sync(self._private_tmp, state, command, env)
            argv = launch.build_argv(
                command=command, cgroup_procs=groups.procs_files(),
                status_file=str(directory / STATUS_FILE), pid_file=str(directory / PID_FILE),
                log_file=str(directory / LOG_FILE), namespaces=state.namespaces,
                user=(state.uid, state.gid) if state.uid is not None and state.gid is not None
                else None, unshare=self._unshare, setpriv=self._setpriv, setsid=self._setsid,
                ip=self._ip if state.network else None, mount=self._mount or "mount",
                private_tmp=private_tmp)

            def spawn() -> tuple[int, procs.ProcessIdentity | None, int]:
                (directory / STATUS_FILE).unlink(missing_ok=True)
                pid = launch.spawn(argv, env=env, cwd=state.user_dir,
                                   log_path=directory / LOG_FILE, pid_file=directory / PID_FILE)
                return pid, procs.identify(pid), groups.oom_kills()

            pid, identity, oom_kills = await trio.to_thread.run_sync(spawn)
            state.pid = pid
            state.start_ticks = identity.start_ticks if identity else None
            state.boot_id = identity.boot_id if identity else procs.boot_id()
            state.started_at = time.time()
            state.finished_at = None
            state.exit_code = None
            state.stop_requested = False
            state.oom_baseline = oom_kills
            await self._save(state)
            return await self._info_async(state)

    def _prepare_cgroups(self, state: WorkloadState, groups: cgroups.WorkloadCgroups) -> None:
        groups.create()
        groups.freeze(False)  # a stop interrupted half-way may have left it frozen
        groups.set_limits(memory_bytes=state.memory_bytes, cpus=state.cpus,
                          pids_max=self.options.pids_max)

    def _pick_port(self, state: WorkloadState) -> int:
        """The port `state` is to listen on (blocking: reads every workload's state, binds to
        test ports; run it in a worker thread). Picks are serialised and remembered, so two
        starts at once never get one port."""
        if state.spec_port is not None:
            return state.spec_port
        with self._port_lock:
            reserved = self._reserved_ports(state.name)
            if state.port is not None and state.port not in reserved and \
                    ports.is_free(state.port, BIND_HOST):
                port = state.port  # keep the address stable across restarts when possible
            else:
                port = ports.choose_port(self.port_range, reserved, host=BIND_HOST)
            self._picked[state.name] = port
            return port

    async def stop(self, handle: str, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        # `timeout` is the grace period between the stop signal and SIGKILL (as in Docker's
        # API), not a deadline for the call: a caller wanting one uses a cancel scope.
        """Stop signal to the command, up to `timeout` to exit, then SIGKILL the whole tree."""
        async with self._lock(handle):
            state = await self._load_async(handle)
            if state.pid is None:
                return
            if not state.stop_requested:
                state.stop_requested = True
                await self._save(state)
            if await trio.to_thread.run_sync(self._alive, state):
                signum = signal.Signals[state.stop_signal] \
                    if state.stop_signal in signal.Signals.__members__ else signal.SIGTERM
                if signum != signal.SIGKILL and timeout > 0:
                    await trio.to_thread.run_sync(self._signal_payload, state, signum)
                    with trio.move_on_after(timeout):
                        await self._wait_exit(state)
            await self._kill_tree(state)
            ended = await trio.to_thread.run_sync(read_exit_status, self._dir(handle))
            state.exit_code = ended[0] if ended else state.exit_code
            state.finished_at = ended[1] if ended else time.time()
            await self._save(state)

    async def _wait_exit(self, state: WorkloadState) -> None:
        """Wait until the root process exits. A pidfd (Linux >= 5.3) turns readable when the
        process ends, for any process, not only our children; it is opened only after the
        identity matched, so a recycled PID cannot be waited on by mistake."""
        identity = state.identity()
        if identity is None:
            return
        try:
            pidfd = os.pidfd_open(identity.pid)
        except ProcessLookupError:
            return
        try:
            if procs.is_alive(identity):
                await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)

    def _signal_payload(self, state: WorkloadState, signum: int) -> None:
        """Signal the workload's own processes, not the wrappers around it: the namespace's
        PID 1 (the waiter) ignores signals from outside, and unshare would die and take the
        namespace down with SIGKILL before the command could exit cleanly."""
        for pid in self._members(state):
            if pid == state.pid:
                continue
            chain = procs.namespace_pids(pid)
            if state.namespaces and len(chain) > 1 and chain[-1] == 1:
                continue
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    async def _kill_tree(self, state: WorkloadState) -> None:
        """SIGKILL everything of the workload until nothing is left. The freezer (when there
        is one) stops the tree first, so nothing forks while it is being killed.

        Each round (scanning /proc and the cgroups, signalling) runs in a worker thread; the
        killed processes are then waited for through their pidfds, which turn readable when
        they exit, instead of polling. A round that finds only the same processes again (an
        exit nobody has reaped yet) waits 10 ms before the next."""
        groups = self._cgroups(state)
        previous: list[int] = []
        with trio.move_on_after(KILL_DEADLINE):
            while True:
                members, pidfds = await trio.to_thread.run_sync(self._kill_round, state, groups)
                try:
                    for pidfd in pidfds:
                        await trio.lowlevel.wait_readable(pidfd)
                finally:
                    for pidfd in pidfds:
                        os.close(pidfd)
                if not members:
                    break
                if members == previous:
                    await trio.sleep(0.01)
                previous = members
        survivors = await trio.to_thread.run_sync(self._members, state)
        if survivors:
            raise BackendError(f"process backend: {state.name}: processes survived SIGKILL "
                               f"for {KILL_DEADLINE:g} s: {survivors}")

    def _kill_round(self, state: WorkloadState,
                    groups: cgroups.WorkloadCgroups) -> tuple[list[int], list[int]]:
        """One round of `_kill_tree` (blocking: run in a worker thread): the members found,
        and a pidfd for each member signalled. The signal goes through the pidfd, so it
        reaches the very process the pidfd waits for even if a pid is reused meanwhile."""
        members = self._members(state)
        if not members:
            return members, []
        frozen = groups.freeze(True)
        pidfds: list[int] = []
        try:
            for pid in members:
                try:
                    pidfd = os.pidfd_open(pid)
                except ProcessLookupError:
                    continue
                except OSError:
                    # No pidfd for it (out of descriptors, say): signal it by pid; the next
                    # round finds it again if it has not gone by then.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    continue
                try:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                except ProcessLookupError:
                    os.close(pidfd)
                    continue
                pidfds.append(pidfd)
        finally:
            if frozen:
                groups.freeze(False)
        return members, pidfds

    async def remove(self, handle: str) -> None:
        """Kill what runs, remove the cgroups, delete the record and logs."""
        async with self._lock(handle):
            state = await self._load_async(handle)
            state.stop_requested = True
            await self._kill_tree(state)
            groups = self._cgroups(state)
            with trio.move_on_after(2):
                # The kernel frees a cgroup a moment after its last process is reaped; there
                # is no event to wait on (release notifications need a helper binary).
                while await trio.to_thread.run_sync(groups.remove):  # noqa: ASYNC110
                    await trio.sleep(0.02)
            await trio.to_thread.run_sync(
                lambda: shutil.rmtree(self._dir(handle), ignore_errors=True))
        self._locks.pop(handle, None)
        self._picked.pop(handle, None)

    async def inspect(self, handle: str) -> ContainerInfo:
        """The workload's current status (read from /proc, its cgroups and its status file)."""
        return await trio.to_thread.run_sync(lambda: self._info(self._load(handle)))

    async def list(self, *, user_id: str | None = None) -> list[ContainerInfo]:
        """Workloads of this deployment in the state dir, optionally of one user."""
        return await trio.to_thread.run_sync(self._list, user_id)

    def _list(self, user_id: str | None) -> builtins.list[ContainerInfo]:
        infos = []
        for directory in sorted(self.state_dir.iterdir()):
            state = load(directory)
            if state is None or state.labels.get(LABEL_DEPLOYMENT) != self.deployment_id:
                continue
            if user_id is not None and state.user_id != user_id:
                continue
            infos.append(self._info(state))
        return infos

    async def stats(self, handle: str) -> ContainerStats:
        """Working set and limit from the memory cgroup, CPU from cpuacct; /proc otherwise."""
        return await trio.to_thread.run_sync(self._stats, handle)

    def _stats(self, handle: str) -> ContainerStats:
        state = self._load(handle)
        if not self._alive(state):
            raise BackendError(f"process backend: {handle} is not running, so it has no stats")
        groups = self._cgroups(state)
        memory = groups.memory()
        cpu = groups.cpu_seconds()
        if memory is None or cpu is None:
            rss, cpu_fallback = procs.usage(self._members(state))
            memory = memory or (rss, state.memory_bytes)
            cpu = cpu if cpu is not None else cpu_fallback
        return ContainerStats(memory_working_set=memory[0], memory_limit=memory[1],
                              cpu_usage_seconds=cpu, sampled_at=time.time())

    async def logs(self, handle: str, *, tail: int = 200) -> str:
        """The last `tail` lines of the workload's output."""
        await self._load_async(handle)
        return await trio.to_thread.run_sync(tail_lines, self._dir(handle) / LOG_FILE, tail)

    async def update_limits(self, handle: str, *, memory_bytes: int, cpus: float) -> None:
        """New limits, applied at once to a running workload and kept for its next start."""
        async with self._lock(handle):
            state = await self._load_async(handle)
            groups = self._cgroups(state)

            def apply() -> None:
                if groups.exist():
                    groups.set_limits(memory_bytes=memory_bytes, cpus=cpus,
                                      pids_max=self.options.pids_max)

            await trio.to_thread.run_sync(apply)
            state.memory_bytes = memory_bytes
            state.cpus = cpus
            await self._save(state)

    def statistics(self) -> dict[str, Any]:
        """Counts for metrics."""
        return {"locks": len(self._locks)}
