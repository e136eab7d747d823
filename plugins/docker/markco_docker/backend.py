"""`DockerBackend`: users' editors and runtimes as containers on a Docker or Podman engine.

Each user's two containers live on a network of their own (`markco-<deployment>-<user>`,
created on demand, removed with the user's last container). By default that network is
`internal`: no route out of it, so no internet, no cloud metadata and no other user's network;
the daemon, on the engine's host, reaches the containers at their addresses on it, and no
port is published at all. Containers run unprivileged: a non-root user, every capability
dropped, `no-new-privileges`, a read-only root filesystem with a tmpfs /tmp, memory (no swap),
CPU and PID limits, and a tiny init as PID 1.

Every container carries the deployment id as a label, and every operation on a handle checks
it: two daemons sharing one engine never see, stop or remove each other's containers.
"""

from __future__ import annotations

import builtins  # `list` is a method of the backend: annotations below it need the type
import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import trio

from markco_trio import userdirs
from markco_trio.errors import BackendError, Conflict, NotFound
from markco_trio.records import WorkloadRole
from markco_trio.roles import (
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
    EngineFacts,
)

from . import cgroups, checkpointing, firewall, localimage, oom
from .engine import Engine, engine_message
from .ledger import Ledger, Remembered
from .multiplex import demultiplex
from .naming import bridge_name, label_filters, network_name
from .options import DockerOptions
from .translation import container_address, create_body, network_body, parse_time

# Engine states, mapped to markco's.
_CREATED_STATES = frozenset({"created", "configured", "initialized"})
_RUNNING_STATES = frozenset({"running", "paused", "restarting", "stopping"})
# Exit status of a process killed by SIGKILL: a stop's last resort, and the kernel's OOM kill.
_SIGKILL_EXIT = 128 + 9
_CPU_PERIOD_US = 100_000
# How many engine calls `list` makes at once (one inspect per container).
_LIST_CONCURRENCY = 8


class DockerBackend:
    """The `docker` ContainerBackend (see the module doc). Handles are engine container ids;
    names are accepted wherever a handle is."""

    name = "docker"

    def __init__(self, options: DockerOptions, *, deployment_id: str, state_dir: Path,
                 log: logging.Logger | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.deployment_id = deployment_id
        self.engine = Engine(options.engine_url, timeout=options.timeout_seconds,
                             api_version=options.api_version, tls_ca_file=options.tls_ca_file,
                             tls_cert_file=options.tls_cert_file,
                             tls_key_file=options.tls_key_file)
        self.ledger = Ledger(state_dir)
        self.log = log or logging.getLogger("markco.docker")
        self._clock = clock
        # The engine runs on this host: its bind-mount sources, container processes, cgroups
        # and kernel log are ours to look at.
        self.local = urlsplit(options.engine_url).scheme == "unix"
        self._network_locks: dict[str, trio.Lock] = {}
        self._oom_verdicts: dict[tuple[str, str], bool] = {}
        self._engine_facts: EngineFacts | None = None  # asked by `checkpointing`, once
        # Several hosts (`hosts`): engines other than the first name their bridges apart, so
        # two engines on ONE machine (the tests') never share a user's bridge.
        self.bridge_salt = ""
        self._entered = False

    def __repr__(self) -> str:
        return f"DockerBackend({self.engine.url!r}, deployment={self.deployment_id!r})"

    # ------------------------------------------------------------------ provider lifecycle

    async def __aenter__(self) -> DockerBackend:
        await self.engine.__aenter__()
        try:
            for key in ("runtime_image", "editor_image"):
                await self._check_image(key, getattr(self.options, key))
            await firewall.check_at_start(self.options.network, local=self.local, log=self.log)
        except BaseException:
            await self.engine.__aexit__()
            raise
        self._entered = True
        version = self.engine.version
        self.log.info("docker backend: %s %s at %s (API %s), deployment %r", version.product,
                      version.version, self.engine.url, version.api_version, self.deployment_id)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Containers are deliberately left running: they outlive the daemon.
        self._entered = False
        await self.engine.__aexit__()

    async def _check_image(self, key: str, image: str) -> None:
        response = await self.engine.request("GET", f"/images/{quote(image, safe='/:@')}/json")
        if response.status_code == 404:
            raise BackendError(
                f"image {image!r} is not on the container engine at {self.engine.url}: build "
                f"it (`scripts/setup-podman` builds the local development images; the "
                f"markco-docker README shows a production Dockerfile), pull it, or change "
                f"[compute.docker] {key}")
        self.engine.check(response, f"looking up image {image!r}")
        missing = localimage.unmounted(localimage.host_paths_needed(response.json()),
                                       self.options.host_mounts)
        if missing:
            # Found now rather than as "executable file not found" at each user's start.
            raise BackendError(
                f"image {image!r} is a local markco image: it runs the host's "
                f"{', '.join(missing)}, which [compute.docker] mounts does not mount, so its "
                f"command would not be found. Add the mounts `scripts/setup-podman "
                f"--print-config` prints, or use images with everything inside "
                f"(plugins/docker/README.md)")

    # ------------------------------------------------------------------ what it can do

    def capabilities(self) -> BackendCapabilities:
        """Live limits, enforced; per-user networks; containers' own filesystems and PIDs."""
        podman = self._entered and self.engine.version.is_podman
        notes = [
            f"network mode {self.options.network!r}: " + (
                "user networks are internal (no egress); the daemon must run on the engine's "
                "host to reach containers at their addresses"
                if self.options.network == "internal" else
                "user networks have egress; users are kept apart and away from cloud "
                "metadata by markco's host firewall (`scripts/setup-podman --firewall`), "
                "which the backend requires at start"),
            "host services listening on all addresses are reachable from containers through "
            "their network's gateway unless the host firewall drops it",
        ]
        if podman:
            notes.append("podman: live limit updates use the libpod API and are applied "
                         "again at each start (podman 4 does not persist them)")
        return BackendCapabilities(
            update_limits_live=True, checkpoint=podman, isolated_network=True,
            per_user_cgroup=True, enforces_limits=True, mounts=True, pid_namespace=True,
            notes=tuple(notes))

    async def prepare_user(self, user_id: str) -> None:
        """Nothing to prepare: every container runs as one configured account."""
        return None

    def workload_owner(self, user_id: str) -> tuple[int, int] | None:
        """The (uid, gid) every container runs as (`[compute.docker] user`)."""
        return self.options.uid_gid

    # ------------------------------------------------------------------ helpers

    def _not_found(self, handle: str) -> NotFound:
        return NotFound(f"docker backend: no workload {handle!r} of deployment "
                        f"{self.deployment_id!r} on the engine at {self.engine.url}")

    async def _inspect_raw(self, handle: str) -> dict[str, Any]:
        """The engine's inspect answer for one of OUR containers; `NotFound` otherwise."""
        if not handle or "/" in handle:
            raise self._not_found(handle)
        response = await self.engine.request("GET", f"/containers/{quote(handle)}/json")
        if response.status_code == 404:
            raise self._not_found(handle)
        self.engine.check(response, f"inspecting {handle!r}")
        data: dict[str, Any] = response.json()
        labels = (data.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_DEPLOYMENT) != self.deployment_id:
            # Another deployment's (or nobody's) container: not ours to see or touch.
            raise self._not_found(handle)
        return data

    async def _remembered(self, container_id: str) -> Remembered:
        return await trio.to_thread.run_sync(self.ledger.get, container_id)

    async def _remember(self, container_id: str, **changes: Any) -> None:
        def update() -> None:
            current = self.ledger.get(container_id)
            self.ledger.put(container_id, dataclasses.replace(current, **changes))

        await trio.to_thread.run_sync(update)

    async def _info(self, data: dict[str, Any]) -> ContainerInfo:
        labels: dict[str, str] = dict((data.get("Config") or {}).get("Labels") or {})
        state = data.get("State") or {}
        raw = str(state.get("Status", "")).lower()
        exit_code: int | None = None
        finished_at: float | None = None
        if raw in _CREATED_STATES:
            status = STATUS_CREATED
        elif raw in _RUNNING_STATES:
            status = STATUS_RUNNING
        else:
            exit_code = int(state.get("ExitCode") or 0)
            finished_at = parse_time(state.get("FinishedAt"))
            status = await self._ended_status(data["Id"], state, exit_code)
        return ContainerInfo(
            handle=data["Id"], name=str(data.get("Name", "")).lstrip("/"),
            user_id=labels.get(LABEL_USER, ""), role=WorkloadRole(labels.get(LABEL_ROLE)),
            status=status, address=container_address(data, running=status == STATUS_RUNNING),
            labels=labels, exit_code=exit_code, started_at=parse_time(state.get("StartedAt")),
            finished_at=finished_at)

    async def _ended_status(self, container_id: str, state: dict[str, Any],
                            exit_code: int) -> str:
        """exited (asked to stop, or a clean exit), oom-killed, or crashed."""
        started = str(state.get("StartedAt", ""))
        if state.get("OOMKilled"):
            return STATUS_OOM_KILLED
        if (await self._remembered(container_id)).stopped_run == started:
            return STATUS_EXITED
        if exit_code == 0:
            return STATUS_EXITED
        if exit_code == _SIGKILL_EXIT and self.local and await self._kernel_oom(container_id,
                                                                                   started):
            return STATUS_OOM_KILLED
        return STATUS_CRASHED

    async def _kernel_oom(self, container_id: str, started: str) -> bool:
        key = (container_id, started)
        if key not in self._oom_verdicts:
            self._oom_verdicts[key] = await trio.to_thread.run_sync(oom.kernel_reports_oom,
                                                                    container_id)
        return self._oom_verdicts[key]

    def _network_lock(self, network: str) -> trio.Lock:
        return self._network_locks.setdefault(network, trio.Lock())

    async def _ensure_network(self, network: str, user_id: str) -> None:
        """Create the user's network when missing (and check an existing one is this
        deployment's). The caller holds the network's lock."""
        response = await self.engine.request("GET", f"/networks/{quote(network)}")
        if response.status_code == 200:
            owner = (response.json().get("Labels") or {}).get(LABEL_DEPLOYMENT)
            if owner != self.deployment_id:
                raise BackendError(
                    f"network {network!r} on the engine at {self.engine.url} exists but is "
                    f"not deployment {self.deployment_id!r}'s (label {LABEL_DEPLOYMENT}="
                    f"{owner!r}): remove it or choose another [server] deployment_id")
            return
        if response.status_code != 404:
            self.engine.check(response, f"looking up network {network!r}")
        body = network_body(network, deployment_id=self.deployment_id, user_id=user_id,
                            bridge=bridge_name(network + self.bridge_salt),
                            internal=self.options.network == "internal")
        response = await self.engine.request("POST", "/networks/create", json=body)
        if response.status_code != 409:  # 409: created meanwhile by another caller
            self.engine.check(response, f"creating network {network!r}")

    async def _remove_network_if_unused(self, network: str, user_id: str) -> bool:
        """Remove the user's network unless a container of theirs still exists; whether it
        went. The caller holds the network's lock."""
        if await self._container_ids(user_id):
            return False
        response = await self.engine.request("DELETE", f"/networks/{quote(network)}")
        if response.status_code >= 400 and response.status_code != 404:
            # In use after all (a container created meanwhile by hand): keep it.
            self.log.info("docker backend: network %s kept: %s", network, response.text)
            return False
        return True

    async def _container_ids(self, user_id: str | None) -> list[str]:
        response = await self.engine.request(
            "GET", "/containers/json",
            params={"all": "true", "filters": label_filters(self.deployment_id, user_id)})
        self.engine.check(response, "listing containers")
        return [str(item["Id"]) for item in response.json()]

    def _prepare_user_dir(self, user_dir: str) -> None:
        """Make the user's directory exist and belong to the containers' user, so the mount is
        theirs to write (recursively, but only when its top is not theirs yet)."""
        path = Path(user_dir)
        if not path.is_absolute():
            raise BackendError(f"docker backend: the user directory {user_dir!r} must be an "
                               f"absolute host path")
        if os.geteuid() != 0:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            return  # not ours to give away; the daemon's own uid owns it
        # The directory's contents are the user's (links included): never followed, only
        # touched through held fds (markco_trio.userdirs).
        with userdirs.open_user_dir(path, owner=self.options.uid_gid):
            pass

    # ------------------------------------------------------------------ the role

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        """Create (not start) the container on the user's network; `Conflict` when the name
        is taken."""
        if self.local:
            await trio.to_thread.run_sync(self._prepare_user_dir, spec.user_dir)
        network = network_name(self.deployment_id, spec.user_id)
        body = create_body(spec, self.options, deployment_id=self.deployment_id,
                           network=network, podman=self.engine.version.is_podman)
        # Held from the network's creation to the container's: a concurrent remove of the
        # user's last container cannot take the network away in between.
        async with self._network_lock(network):
            await self._ensure_network(network, spec.user_id)
            response = await self._create_container(spec, body, network)
        return await self.inspect(str(response.json()["Id"]))

    async def _create_container(self, spec: ContainerSpec, body: dict[str, Any],
                                network: str) -> httpx.Response:
        """`POST /containers/create`, its errors in markco's terms."""
        try:
            response = await self.engine.request("POST", "/containers/create",
                                                 params={"name": spec.name}, json=body)
            message = response.text
            if response.status_code == 409 or (response.status_code >= 400
                                               and "already in use" in message):
                raise Conflict(f"docker backend: a workload named {spec.name!r} exists on the "
                               f"engine at {self.engine.url}")
            if response.status_code == 404 and "image" in message.lower():
                raise BackendError(f"image {body['Image']!r} is not on the container engine "
                                   f"at {self.engine.url}: build it (`scripts/setup-podman`) "
                                   f"or pull it")
            self.engine.check(response, f"creating container {spec.name!r}")
        except BaseException:
            # Nothing was created: do not leave the network of a user who has no container.
            with trio.CancelScope(shield=True):
                await self._remove_network_if_unused(network, spec.user_id)
            raise
        return response

    async def start(self, handle: str) -> ContainerInfo:
        """Start it; a running container is returned as it is. Limits updated live earlier are
        applied again (Podman does not keep them)."""
        data = await self._inspect_raw(handle)
        container_id = data["Id"]
        if str((data.get("State") or {}).get("Status", "")).lower() in _RUNNING_STATES:
            return await self._info(data)
        response = await self.engine.request("POST", f"/containers/{container_id}/start")
        if response.status_code >= 400 and response.status_code != 404:
            raise await self._start_refused(data, response)
        if response.status_code != 304:  # 304: started meanwhile
            self.engine.check(response, f"starting {handle!r}",
                              not_found=str(self._not_found(handle)))
        remembered = await self._remembered(container_id)
        if remembered.memory_bytes is not None and remembered.cpus is not None:
            await self._apply_limits(container_id, remembered.memory_bytes, remembered.cpus)
        return await self.inspect(container_id)

    async def _start_refused(self, data: dict[str, Any],
                             response: httpx.Response) -> BackendError:
        """The error for a start the engine refused: the workload's own error (the engine's
        message: a command not found, a mount missing...), its exit status and last output."""
        name = str(data.get("Name", "")).lstrip("/") or data["Id"][:12]
        message = engine_message(response)
        detail = ""
        try:
            state = (await self._inspect_raw(data["Id"])).get("State") or {}
            status = str(state.get("Status", "")).lower()
            if state.get("Error") and str(state["Error"]) not in message:
                message += f"; the engine recorded: {state['Error']}"
            if status not in _CREATED_STATES and status not in _RUNNING_STATES:
                detail += f" (exit status {int(state.get('ExitCode') or 0)})"
            tail = (await self.logs(data["Id"], tail=20)).strip()
            if tail:
                detail += f"; its last output:\n{tail}"
        except (NotFound, BackendError):
            pass
        return BackendError(f"docker backend: {name} did not start: {message}{detail}")

    async def stop(self, handle: str, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """The container's stop signal, `timeout` seconds (rounded up: the engine counts whole
        seconds), then SIGKILL. Recorded first, so the exit is never taken for a crash."""
        data = await self._inspect_raw(handle)
        state = data.get("State") or {}
        if str(state.get("Status", "")).lower() not in _RUNNING_STATES:
            return
        await self._remember(data["Id"], stopped_run=str(state.get("StartedAt", "")))
        grace = max(0, math.ceil(timeout))
        response = await self.engine.request(
            "POST", f"/containers/{data['Id']}/stop", params={"t": str(grace)},
            wait_seconds=grace + self.options.timeout_seconds)
        if response.status_code != 304:  # 304: it had stopped already
            self.engine.check(response, f"stopping {handle!r}",
                              not_found=str(self._not_found(handle)))

    async def remove(self, handle: str) -> None:
        """Kill it if it runs, remove it, and the user's network with their last container."""
        data = await self._inspect_raw(handle)
        container_id = data["Id"]
        user_id = ((data.get("Config") or {}).get("Labels") or {}).get(LABEL_USER, "")
        response = await self.engine.request(
            "DELETE", f"/containers/{container_id}", params={"force": "true", "v": "true"},
            wait_seconds=self.options.timeout_seconds + 10)
        if response.status_code != 404:  # 404: removed meanwhile
            self.engine.check(response, f"removing {handle!r}")
        await trio.to_thread.run_sync(self.ledger.forget, container_id)
        network = network_name(self.deployment_id, user_id)
        async with self._network_lock(network):
            await self._remove_network_if_unused(network, user_id)

    async def inspect(self, handle: str) -> ContainerInfo:
        """What the engine says about it, in markco's terms."""
        return await self._info(await self._inspect_raw(handle))

    async def list(self, *, user_id: str | None = None) -> list[ContainerInfo]:
        """This deployment's containers (of one user), by name."""
        ids = await self._container_ids(user_id)
        found: list[ContainerInfo] = []
        limiter = trio.CapacityLimiter(_LIST_CONCURRENCY)

        async def one(container_id: str) -> None:
            async with limiter:
                try:
                    found.append(await self.inspect(container_id))
                except NotFound:
                    pass  # removed between the listing and the inspect

        async with trio.open_nursery() as nursery:
            for container_id in ids:
                nursery.start_soon(one, container_id)
        return sorted(found, key=lambda info: info.name)

    async def stats(self, handle: str) -> ContainerStats:
        """One sample: working set (usage minus inactive file cache), the live limit and the
        cumulative CPU time. Podman's figures are corrected from the cgroup files when the
        engine is on this host (see `cgroups`)."""
        data = await self._inspect_raw(handle)
        state = data.get("State") or {}
        if str(state.get("Status", "")).lower() not in _RUNNING_STATES:
            raise BackendError(f"docker backend: {handle!r} is not running "
                               f"({state.get('Status')}): no stats")
        container_id = data["Id"]
        response = await self.engine.request(
            "GET", f"/containers/{container_id}/stats",
            params={"stream": "false", "one-shot": "true"})
        self.engine.check(response, f"reading the stats of {handle!r}",
                          not_found=str(self._not_found(handle)))
        sample = response.json()
        memory = sample.get("memory_stats") or {}
        details = memory.get("stats") or {}
        usage = int(memory.get("usage") or 0)
        inactive = details.get("total_inactive_file", details.get("inactive_file"))
        working_set = max(usage - int(inactive or 0), 0)
        limit = int(memory.get("limit") or 0) or int(
            (data.get("HostConfig") or {}).get("Memory") or 0)
        measured = None
        if self.local:
            measured = await trio.to_thread.run_sync(
                cgroups.container_memory, int(state.get("Pid") or 0), container_id)
        if measured is not None:
            working_set = measured.working_set
            limit = measured.limit or limit
        elif self.engine.version.is_podman:
            remembered = await self._remembered(container_id)
            limit = remembered.memory_bytes or limit
        cpu = (sample.get("cpu_stats") or {}).get("cpu_usage") or {}
        return ContainerStats(memory_working_set=working_set, memory_limit=limit,
                              cpu_usage_seconds=int(cpu.get("total_usage") or 0) / 1e9,
                              sampled_at=self._clock())

    async def logs(self, handle: str, *, tail: int = 200) -> str:
        """The last `tail` lines of stdout and stderr, interleaved as written."""
        data = await self._inspect_raw(handle)
        response = await self.engine.request(
            "GET", f"/containers/{data['Id']}/logs",
            params={"stdout": "true", "stderr": "true", "tail": str(max(tail, 0))})
        self.engine.check(response, f"reading the logs of {handle!r}",
                          not_found=str(self._not_found(handle)))
        return demultiplex(response.content)

    async def update_limits(self, handle: str, *, memory_bytes: int, cpus: float) -> None:
        """Change memory (no swap on top) and CPU, live when it runs; remembered for the next
        start either way."""
        data = await self._inspect_raw(handle)
        container_id = data["Id"]
        await self._remember(container_id, memory_bytes=memory_bytes, cpus=cpus)
        running = str((data.get("State") or {}).get("Status", "")).lower() in _RUNNING_STATES
        if running or not self.engine.version.is_podman:
            await self._apply_limits(container_id, memory_bytes, cpus)

    async def _apply_limits(self, container_id: str, memory_bytes: int, cpus: float) -> None:
        if self.engine.version.is_podman:
            # Podman 4 has no Docker-compatible update; its own API changes the cgroup.
            body: dict[str, Any] = {
                "memory": {"limit": memory_bytes, "swap": memory_bytes},
                "cpu": {"quota": max(1000, int(cpus * _CPU_PERIOD_US)),
                        "period": _CPU_PERIOD_US}}
            response = await self.engine.request("POST", f"/containers/{container_id}/update",
                                                 json=body, libpod=True)
        else:
            response = await self.engine.request(
                "POST", f"/containers/{container_id}/update",
                json={"Memory": memory_bytes, "MemorySwap": memory_bytes,
                      "NanoCpus": int(round(cpus * 1e9))})
        self.engine.check(response, f"updating the limits of {container_id[:12]}",
                          not_found=str(self._not_found(container_id)))

    # ------------------------------------------------------------------ for a checkpointer
    # `markco_trio.roles.EngineCheckpointing`, implemented in `checkpointing`.

    async def engine_facts(self) -> EngineFacts:
        """The engine's kind, versions and host kernel."""
        return await checkpointing.engine_facts(self)

    async def image_id(self, image: str) -> str | None:
        """The engine's id of `image`; None when it has none."""
        return await checkpointing.image_id(self, image)

    async def export_checkpoint(self, handle: str, write: Any, *, leave_running: bool,
                                tcp_established: bool = False) -> dict[str, Any]:
        """Checkpoint `handle` through the engine, streaming the archive to `write`."""
        return dict(await checkpointing.export_checkpoint(
            self, handle, write, leave_running=leave_running, tcp_established=tcp_established))

    async def import_checkpoint(self, spec: ContainerSpec, chunks: Any, *,
                                tcp_established: bool = False) -> ContainerInfo:
        """Create and run `spec.name` from an archive streamed as `chunks`."""
        return await checkpointing.import_checkpoint(self, spec, chunks,
                                                     tcp_established=tcp_established)

    # ------------------------------------------------------------------ housekeeping

    async def remove_unused_networks(self) -> builtins.list[str]:
        """Remove this deployment's user networks that no container uses (left behind by a
        crash between a remove and its network's removal); return their names."""
        response = await self.engine.request(
            "GET", "/networks", params={"filters": label_filters(self.deployment_id)})
        self.engine.check(response, "listing networks")
        removed: builtins.list[str] = []
        for network in response.json():
            user_id = (network.get("Labels") or {}).get(LABEL_USER)
            if user_id is None:
                continue
            async with self._network_lock(network["Name"]):
                if await self._remove_network_if_unused(network["Name"], user_id):
                    removed.append(network["Name"])
        return removed
