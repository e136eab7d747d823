"""Several container engines ("hosts") behind one backend: placement, routing, down hosts.

`[compute.docker]`'s `engine_url` is one host (named `host_name`, "local" by default: a
deployment with one engine is configured exactly as before). Each `[[compute.docker.hosts]]`
adds another: its engine endpoint (a unix socket, or `https://` with client certificates read
from files), its labels (`gpu`, `big-memory`) and a memory budget. `MultiHostBackend` is then
the backend the daemon sees: every call on a workload goes to the engine that holds it (found
from the handle, remembered), a new workload goes where placement puts it, and a host that
stops answering is marked down — nothing is placed on it, and its users' workloads read as
unavailable (`HostDown`) rather than crashed.

Moves between hosts (`markco_trio.builtin.compute.moves`) use `backend_on(host)` to stream a
checkpoint from one engine's API into another's.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import trio

from markco_trio.errors import BackendError, NotFound
from markco_trio.roles import (
    BackendCapabilities,
    ContainerInfo,
    ContainerSpec,
    ContainerStats,
    EngineFacts,
)

from . import checkpointing
from .backend import DockerBackend
from .hostoptions import HostOptions
from .options import DockerOptions

log = logging.getLogger("markco.docker.hosts")

# (user_id, memory_bytes, labels wanted) → the host's name; raises when no host has room.
Placer = Callable[[str, int, Sequence[str]], Awaitable[str]]


class HostDown(BackendError):
    """The engine of a host does not answer: its workloads are unavailable, not failed."""

    host_down = True  # what compute looks for (it does not import this plugin)


class NoRoom(BackendError):
    """No host that is up, matches the labels and has room in its memory budget."""


def host_list(options: DockerOptions) -> list[HostOptions]:
    """Every configured host, the `engine_url` one first (named `options.host_name`)."""
    first = HostOptions(name=options.host_name, engine_url=options.engine_url,
                        tls_ca_file=options.tls_ca_file, tls_cert_file=options.tls_cert_file,
                        tls_key_file=options.tls_key_file, labels=list(options.host_labels),
                        memory_budget_mb=options.memory_budget_mb)
    hosts = [first, *options.hosts]
    seen: set[str] = set()
    for host in hosts:
        if host.name in seen:
            raise ValueError(f"[compute.docker] hosts: the name {host.name!r} is used twice "
                             f"(the engine_url host is named {options.host_name!r})")
        seen.add(host.name)
    return hosts


def _is_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, (httpx.TransportError, OSError)) or (
        isinstance(exc, BackendError) and "does not answer" in str(exc))


class MultiHostBackend:
    """The `docker` backend over several engines (see the module doc)."""

    name = "docker"

    def __init__(self, options: DockerOptions, *, deployment_id: str, state_dir: Path,
                 log: logging.Logger | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.options = options
        self.deployment_id = deployment_id
        self.log = log or logging.getLogger("markco.docker")
        self.host_options = {h.name: h for h in host_list(options)}
        self.primary = options.host_name
        self.backends: dict[str, DockerBackend] = {}
        for host in self.host_options.values():
            sub = dataclasses.replace(options, engine_url=host.engine_url,
                                      tls_ca_file=host.tls_ca_file,
                                      tls_cert_file=host.tls_cert_file,
                                      tls_key_file=host.tls_key_file, hosts=[])
            # The first host keeps the one-engine state directory: upgrading keeps its ledger.
            directory = state_dir if host.name == self.primary else state_dir / "hosts" / host.name
            self.backends[host.name] = DockerBackend(sub, deployment_id=deployment_id,
                                                     state_dir=directory, log=self.log,
                                                     clock=clock)
            if host.name != self.primary:
                self.backends[host.name].bridge_salt = f"@{host.name}"
        self.down: dict[str, str] = {}  # host → why it is down
        self.draining: set[str] = set()
        self.placer: Placer | None = None
        self.assigned: dict[str, str] = {}  # user → host their runtime is (to be) on
        # user → host their next workloads go on whatever the placement (a move wakes a
        # sleeper where its image was made, even on a draining host).
        self.pinned: dict[str, str] = {}
        self._where: dict[str, str] = {}  # handle or name → host
        self._entered: list[str] = []

    def __repr__(self) -> str:
        return f"MultiHostBackend({sorted(self.backends)}, deployment={self.deployment_id!r})"

    # ------------------------------------------------------------------ hosts

    @property
    def engine(self) -> Any:
        """The first host's engine (what single-engine tools look at)."""
        return self.backends[self.primary].engine

    @property
    def local(self) -> bool:
        """Whether the first host's engine is on this machine."""
        return self.backends[self.primary].local

    def host_names(self) -> list[str]:
        """Every configured host, the first one first."""
        return list(self.backends)

    def backend_on(self, host: str) -> DockerBackend:
        """The backend of one host; `NotFound` naming the configured ones otherwise."""
        try:
            return self.backends[host]
        except KeyError:
            raise NotFound(f"no host {host!r}: the configured hosts are "
                           f"{', '.join(self.backends)}") from None

    def is_up(self, host: str) -> bool:
        """The host answered its last check."""
        return host in self.backends and host not in self.down

    def mark_down(self, host: str, why: str) -> None:
        """Stop placing on `host`; its workloads read as unavailable until it answers."""
        if host not in self.down:
            self.log.warning("docker hosts: %s is down: %s", host, why)
        self.down[host] = why

    def mark_up(self, host: str) -> None:
        """`host` answers again."""
        if self.down.pop(host, None) is not None:
            self.log.info("docker hosts: %s answers again", host)

    async def check_hosts(self) -> dict[str, str | None]:
        """Ping every host's engine; mark each up or down. Host → why it is down (None: up)."""
        results: dict[str, str | None] = {}

        async def one(name: str, backend: DockerBackend) -> None:
            try:
                with trio.fail_after(min(5.0, backend.options.timeout_seconds)):
                    if name not in self._entered:
                        await backend.__aenter__()
                        self._entered.append(name)
                    response = await backend.engine.request("GET", "/_ping")
                    if response.status_code != 200:
                        raise BackendError(f"/_ping answered {response.status_code}")
            except (trio.TooSlowError, BackendError, httpx.HTTPError, OSError) as exc:
                why = str(exc) or type(exc).__name__
                self.mark_down(name, why)
                results[name] = why
                return
            self.mark_up(name)
            results[name] = None

        async with trio.open_nursery() as nursery:
            for name, backend in self.backends.items():
                nursery.start_soon(one, name, backend)
        return results

    async def resume_on(self, host: str, handle: str) -> ContainerInfo | None:
        """Make `handle` on `host` run again: restored in place from the engine's own copy of
        its checkpoint when a checkpoint stopped it (a move's roll back); its info, None when
        it is not there."""
        backend = self.backend_on(host)
        try:
            info = await backend.inspect(handle)
        except NotFound:
            return None
        if info.status != "running":
            await checkpointing._resume(backend, info.handle, handle)
            info = await backend.inspect(handle)
        return info

    def located(self, handle: str) -> str | None:
        """The host `handle` was last seen on (None: not seen yet)."""
        return self._where.get(handle)

    def host_of_user(self, user_id: str) -> str:
        """The host the user's runtime is on, or will be started on."""
        return self.assigned.get(user_id, self.primary)

    def assign(self, user_id: str, host: str) -> None:
        """The user's workloads are (from now on) on `host` (a placement, or a move's switch)."""
        self.backend_on(host)
        self.assigned[user_id] = host

    def remember(self, handle: str, host: str) -> None:
        """`handle` is on `host` (a move's target, a record read back after a restart)."""
        self._where[handle] = host

    async def place(self, user_id: str, memory_bytes: int,
                    labels: Sequence[str] = ()) -> str:
        """The host for a new workload of `user_id`: where they are already, else the placer's
        choice (the storage ledger), else the up host with the most room left in memory."""
        pinned = self.pinned.get(user_id)
        if pinned is not None:
            return pinned
        current = self.assigned.get(user_id)
        if current is not None and self.is_up(current) and current not in self.draining \
                and set(labels) <= set(self.host_options[current].labels):
            return current
        if self.placer is not None:
            host = await self.placer(user_id, memory_bytes, labels)
        else:
            host = self.choose(memory_bytes, labels, used={})
        self.assign(user_id, host)
        return host

    def candidates(self, labels: Sequence[str] = ()) -> list[HostOptions]:
        """Hosts that are up, not draining and carry every label in `labels`."""
        return [h for name, h in self.host_options.items()
                if self.is_up(name) and name not in self.draining
                and set(labels) <= set(h.labels)]

    def choose(self, memory_bytes: int, labels: Sequence[str], *,
               used: dict[str, int]) -> str:
        """The candidate with the most room for `memory_bytes` given what is `used` on each;
        `NoRoom` saying what was looked at otherwise."""
        best: tuple[float, str] | None = None
        for host in self.candidates(labels):
            budget = host.memory_budget_bytes
            room = math.inf if budget is None else budget - used.get(host.name, 0)
            if room >= memory_bytes and (best is None or room > best[0]):
                best = (room, host.name)
        if best is None:
            wanted = f" with labels {', '.join(labels)}" if labels else ""
            down = f" (down: {', '.join(sorted(self.down))})" if self.down else ""
            raise NoRoom(f"no host{wanted} has {memory_bytes >> 20} MiB of room left{down}: "
                         f"add a host, raise a memory_budget_mb, or wait for room")
        return best[1]

    # ------------------------------------------------------------------ provider lifecycle

    async def __aenter__(self) -> MultiHostBackend:
        failures: dict[str, str] = {}
        for name, backend in self.backends.items():
            try:
                await backend.__aenter__()
            except BackendError as exc:
                if name == self.primary and len(self.backends) == 1:
                    raise
                failures[name] = str(exc)
                self.mark_down(name, str(exc))
                continue
            self._entered.append(name)
        if not self._entered:
            raise BackendError("no container host answers: " + "; ".join(
                f"{name}: {why}" for name, why in failures.items()))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for name in reversed(self._entered):
            await self.backends[name].__aexit__()
        self._entered.clear()

    # ------------------------------------------------------------------ routing

    def capabilities(self) -> BackendCapabilities:
        """The first host's (hosts are meant to be alike)."""
        caps = self.backends[self.primary].capabilities()
        return dataclasses.replace(caps, notes=(*caps.notes, f"{len(self.backends)} hosts: "
                                                f"{', '.join(self.backends)}"))

    async def prepare_user(self, user_id: str) -> None:
        """Nothing to prepare (as on one host)."""
        return None

    def workload_owner(self, user_id: str) -> tuple[int, int] | None:
        """The configured workload account (the same on every host)."""
        return self.options.uid_gid

    async def _host_for(self, handle: str) -> str:
        known = self._where.get(handle)
        if known is not None:
            return known
        found: list[tuple[str, ContainerInfo]] = []

        async def look(name: str) -> None:
            try:
                found.append((name, await self.backends[name].inspect(handle)))
            except NotFound:
                pass
            except (BackendError, httpx.HTTPError, OSError) as exc:
                if _is_unreachable(exc):
                    self.mark_down(name, str(exc))

        async with trio.open_nursery() as nursery:
            for name in self.backends:
                if self.is_up(name):
                    nursery.start_soon(look, name)
        if not found:
            down = [name for name in self.backends if not self.is_up(name)]
            # A user placed on a host that answers has nothing on the down ones (a new
            # user's first start, while another host is down): simply not found.
            placed = self.assigned.get(self._user_of(handle) or "")
            if down and (placed is None or placed in down):
                raise HostDown(f"workload {handle!r} is not on any host that answers "
                               f"(down: {', '.join(down)}): it is unavailable until they do")
            raise NotFound(f"docker backend: no workload {handle!r} of deployment "
                           f"{self.deployment_id!r} on any host")
        # During a move the same name may be on two hosts: the running one is the user's.
        found.sort(key=lambda item: (item[1].status != "running",
                                     item[0] != self.assigned.get(item[1].user_id)))
        host, info = found[0]
        self._where[handle] = self._where[info.handle] = host
        return host

    def _user_of(self, handle: str) -> str | None:
        """The user of a workload named by markco (`markco-<deployment>-<user>-<role>`)."""
        prefix = f"markco-{self.deployment_id}-"
        if not handle.startswith(prefix):
            return None
        user, _, role = handle.removeprefix(prefix).rpartition("-")
        return user if user and role else None

    async def _call(self, handle: str, method: str, *args: Any, **kwargs: Any) -> Any:
        host = await self._host_for(handle)
        if host in self.down:
            raise HostDown(f"host {host} does not answer ({self.down[host]}): workload "
                           f"{handle!r} is unavailable until it does")
        try:
            return await getattr(self.backends[host], method)(handle, *args, **kwargs)
        except NotFound:
            self._where.pop(handle, None)
            raise
        except (BackendError, httpx.HTTPError, OSError) as exc:
            if _is_unreachable(exc):
                self.mark_down(host, str(exc))
                raise HostDown(f"host {host} does not answer: {exc}") from exc
            raise

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        """Create on the host placement picks for the user."""
        host = await self.place(spec.user_id, spec.memory_bytes)
        info = await self.backends[host].create(spec)
        self._where[info.handle] = self._where[spec.name] = host
        return info

    async def start(self, handle: str) -> ContainerInfo:
        """Start on the workload's host."""
        info: ContainerInfo = await self._call(handle, "start")
        return info

    async def stop(self, handle: str, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Stop on the workload's host."""
        await self._call(handle, "stop", timeout=timeout)

    async def remove(self, handle: str) -> None:
        """Remove on the workload's host."""
        await self._call(handle, "remove")
        self._where.pop(handle, None)

    async def inspect(self, handle: str) -> ContainerInfo:
        """Inspect on the workload's host."""
        info: ContainerInfo = await self._call(handle, "inspect")
        return info

    async def list(self, *, user_id: str | None = None) -> builtins.list[ContainerInfo]:
        """Every host's workloads (of `user_id`); hosts that do not answer are marked down."""
        result: builtins.list[ContainerInfo] = []

        async def one(name: str) -> None:
            try:
                infos = await self.backends[name].list(user_id=user_id)
            except (BackendError, httpx.HTTPError, OSError) as exc:
                self.mark_down(name, str(exc))
                return
            for info in infos:
                self._where.setdefault(info.handle, name)
            result.extend(infos)

        async with trio.open_nursery() as nursery:
            for name in self.backends:
                if self.is_up(name):
                    nursery.start_soon(one, name)
        return result

    async def stats(self, handle: str) -> ContainerStats:
        """Stats from the workload's host."""
        stats: ContainerStats = await self._call(handle, "stats")
        return stats

    async def logs(self, handle: str, *, tail: int = 200) -> str:
        """Logs from the workload's host."""
        text: str = await self._call(handle, "logs", tail=tail)
        return text

    async def update_limits(self, handle: str, *, memory_bytes: int, cpus: float) -> None:
        """Limits on the workload's host."""
        await self._call(handle, "update_limits", memory_bytes=memory_bytes, cpus=cpus)

    # ------------------------------------------------------------------ checkpoints

    async def engine_facts(self) -> EngineFacts:
        """The first host's facts (archives record them; hosts are meant to be alike)."""
        return await self.backends[self.primary].engine_facts()

    async def image_id(self, image: str) -> str | None:
        """The image's id on the first host."""
        return await self.backends[self.primary].image_id(image)

    async def export_checkpoint(self, handle: str, write: Any, *, leave_running: bool,
                                tcp_established: bool = False) -> Any:
        """Checkpoint on the workload's host."""
        return await self._call(handle, "export_checkpoint", write,
                                leave_running=leave_running, tcp_established=tcp_established)

    async def import_checkpoint(self, spec: ContainerSpec, chunks: Any, *,
                                tcp_established: bool = False) -> ContainerInfo:
        """Restore on the host placement picks for the user (a wake lands where they are)."""
        host = await self.place(spec.user_id, spec.memory_bytes)
        info = await self.backends[host].import_checkpoint(spec, chunks,
                                                           tcp_established=tcp_established)
        self._where[info.handle] = self._where[spec.name] = host
        return info

    async def remove_unused_networks(self) -> builtins.list[str]:
        """Every host's unused networks of this deployment, removed."""
        removed: builtins.list[str] = []
        for name in self.backends:
            if self.is_up(name):
                removed += await self.backends[name].remove_unused_networks()
        return removed
