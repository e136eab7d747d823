"""What the process backend offers a checkpointer: `markco_trio.roles.ProcessTreeCheckpointing`.

A workload with namespaces of its own is a tree rooted at the init of its PID namespace (the
waiter, see `launch`): the checkpointer (CRIU, in the `markco-criu` plugin) dumps that tree and
restores it, and this module is the backend's side of it — which process is the root, which
cgroups and files the tree has, and how a restored tree becomes a workload of the backend again
(tracked by pid + start time + boot id like any other, stopped, inspected and removed as usual).

A normally started workload's root process (what `WorkloadState.pid` names) is `unshare`, the
namespace init's parent outside the namespace; a restored one's is the namespace init itself
(CRIU restores the tree, not `unshare`). `_namespace_init` finds the init either way.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import trio

from ...errors import CheckpointError
from ...records import WorkloadRole
from ...roles import ContainerInfo, ContainerSpec, ProcessTree, RestoreTarget
from . import cgroups, procs
from .state import LOG_FILE, STATUS_FILE, WorkloadState


class _Backend(Protocol):
    """What of `ProcessBackend` this module uses (the mixin's self)."""

    _namespaces: bool
    _ip: str | None

    def _load(self, handle: str) -> WorkloadState: ...

    def _lock(self, handle: str) -> trio.Lock: ...

    def _alive(self, state: WorkloadState) -> bool: ...

    def _cgroups(self, state: WorkloadState) -> cgroups.WorkloadCgroups: ...

    def _dir(self, handle: str) -> Path: ...

    def _info(self, state: WorkloadState) -> ContainerInfo: ...

    def _prepare_cgroups(self, state: WorkloadState,
                         groups: cgroups.WorkloadCgroups) -> None: ...

    async def _save(self, state: WorkloadState) -> None: ...

    async def _kill_tree(self, state: WorkloadState) -> None: ...

    async def create(self, spec: ContainerSpec) -> ContainerInfo: ...

    async def remove(self, handle: str) -> None: ...


def _is_namespace_init(pid: int) -> bool:
    chain = procs.namespace_pids(pid)
    return len(chain) > 1 and chain[-1] == 1


def _namespace_init(state: WorkloadState) -> int | None:
    """The host pid of the init of the workload's PID namespace (None: it has none)."""
    if state.pid is None:
        return None
    if _is_namespace_init(state.pid):
        return state.pid
    for child in procs.children(state.pid):
        if _is_namespace_init(child):
            return child
    return None


class ProcessCheckpointing:
    """`ProcessTreeCheckpointing` for `ProcessBackend` (mixed into it)."""

    def process_tree_support(self: _Backend) -> tuple[str, ...]:
        """The namespaces each new workload gets: "pid" and "mnt", plus "net" when workloads
        get a network of their own; () without namespaces (nothing to dump as a tree)."""
        if not self._namespaces:
            return ()
        return ("pid", "mnt", "net") if self._ip is not None else ("pid", "mnt")

    async def checkpoint_target(self: _Backend, handle: str) -> ProcessTree:
        """The running workload's tree, rooted at its PID namespace's init."""
        state = self._load(handle)
        if not self._alive(state):
            raise CheckpointError(f"process backend: {handle} is not running: nothing to "
                                  f"checkpoint")
        if not state.namespaces:
            raise CheckpointError(f"process backend: {handle} has no PID namespace of its own "
                                  f"([compute.process] namespaces = false): it cannot be "
                                  f"checkpointed as a tree")
        root = _namespace_init(state)
        identity = procs.identify(root) if root is not None else None
        if root is None or identity is None:
            raise CheckpointError(f"process backend: {handle}: the init of its PID namespace "
                                  f"is gone (the workload is ending)")
        namespaces = ("pid", "mnt", "net") if getattr(state, "network", False) else \
            ("pid", "mnt")
        groups = self._cgroups(state)
        directory = self._dir(handle)
        return ProcessTree(
            handle=handle, root_pid=root, start_ticks=identity.start_ticks,
            boot_id=identity.boot_id, namespaces=namespaces,
            cgroup_dirs={k: str(v) for k, v in groups.dirs.items()},
            cgroup_procs=tuple(groups.procs_files()), log_path=str(directory / LOG_FILE),
            status_path=str(directory / STATUS_FILE), port=state.port,
            user_id=state.user_id, role=WorkloadRole(state.role), uid=state.uid)

    async def mark_checkpointed(self: _Backend, handle: str) -> None:
        """The dump ended the tree: stopped on request (`exited`), record kept."""
        async with self._lock(handle):
            state = self._load(handle)
            state.stop_requested = True
            state.finished_at = time.time()
            await self._kill_tree(state)  # normally nothing is left; unshare may linger
            await self._save(state)

    async def prepare_restore(self: _Backend, spec: ContainerSpec, *,
                              port: int | None) -> RestoreTarget:
        """Create the workload (as `create` does: `Conflict` when the name is taken) and its
        cgroups with the spec's limits; it will listen on `port`."""
        await self.create(spec)
        async with self._lock(spec.name):
            state = self._load(spec.name)
            state.port = port
            groups = self._cgroups(state)
            self._prepare_cgroups(state, groups)
            await self._save(state)
            directory = self._dir(spec.name)
            for name in (LOG_FILE, STATUS_FILE):
                (directory / name).touch(mode=0o600)
            (directory / STATUS_FILE).write_bytes(b"")
            namespaces = ("pid", "mnt", "net") if getattr(state, "network", False) else \
                ("pid", "mnt")
            return RestoreTarget(handle=spec.name, cgroup_procs=tuple(groups.procs_files()),
                                 log_path=str(directory / LOG_FILE),
                                 status_path=str(directory / STATUS_FILE),
                                 namespaces=namespaces if state.namespaces else ())

    async def adopt_restored(self: _Backend, handle: str, root_pid: int) -> ContainerInfo:
        """Track the restored tree (its root: `root_pid`) as the running workload `handle`."""
        async with self._lock(handle):
            state = self._load(handle)
            identity = procs.identify(root_pid)
            if identity is None:
                raise CheckpointError(f"process backend: the restored {handle} (pid "
                                      f"{root_pid}) ended at once; see its log")
            state.pid = root_pid
            state.start_ticks = identity.start_ticks
            state.boot_id = identity.boot_id
            state.started_at = time.time()
            state.finished_at = None
            state.exit_code = None
            state.stop_requested = False
            state.oom_baseline = self._cgroups(state).oom_kills()
            await self._save(state)
            return self._info(state)

    async def abandon_restore(self: _Backend, handle: str) -> None:
        """Remove what `prepare_restore` made (and anything a failed restore left running)."""
        await self.remove(handle)
