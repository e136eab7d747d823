"""What the docker backend offers a checkpointer (`markco_trio.roles.EngineCheckpointing`).

Podman checkpoints a container with CRIU through its libpod API, on the same socket as the
Docker API: `POST /libpod/containers/{id}/checkpoint?export=true` answers with a tar of the
container's configuration and CRIU images, and `POST /libpod/containers/{name}/restore?
import=true&name=N` creates a container from such a tar. Docker Engine's own checkpoint API is
experimental (and 404 on Podman): it is not spoken here — on Docker, checkpointing is
`CheckpointUnavailable`.

What Podman 4.3 lets a restore change is the name (and published ports): labels, networks and
limits come from the archive. So the backend rewrites the labels in the archive's `config.dump`
as it streams (the spec's, stamped like `create` stamps them), checks that the restored
container is of its own deployment, user and role (and removes it otherwise), restores on the
user's network (created first when the user has no container left), and applies the spec's
limits right after.

These are functions of the backend (`backend.py` delegates to them): they use its helpers, as
any module of this plugin may; a checkpointer only ever sees the Protocol's methods.
"""

from __future__ import annotations

import http.client
import json
import socket
import tarfile
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import trio

from markco_trio.errors import (
    BackendError,
    CheckpointError,
    CheckpointUnavailable,
    Conflict,
    RestoreIncompatible,
)
from markco_trio.roles import (
    LABEL_DEPLOYMENT,
    LABEL_ROLE,
    LABEL_USER,
    ContainerInfo,
    ContainerSpec,
    EngineFacts,
)

from .engine import LIBPOD_PREFIX, engine_message
from .naming import network_name
from .translation import LABEL_PORT, container_port, nano_cpus, workload_labels

if TYPE_CHECKING:
    from .backend import DockerBackend

# A checkpoint's first byte comes only once the engine has frozen, dumped and packed the
# container; a restore answers once the container runs again. Large runtimes take seconds.
CHECKPOINT_WAIT_SECONDS = 600.0
# What an engine's refusal says when CRIU cannot run at all (missing, too old, unsupported).
_NO_CRIU = ("checkpoint/restore requires", "does not support checkpoint",
            "executable file not found", "criu: not found")
_RUNNING = frozenset({"running"})
# How much of an archive is handed on at once.
STREAM_BLOCK = 4 << 20


async def engine_facts(backend: DockerBackend) -> EngineFacts:
    """The engine's kind and versions, and (Podman) its host's kernel and OCI runtime, from
    `/libpod/info` — asked once per backend."""
    if backend._engine_facts is not None:
        return backend._engine_facts
    version = backend.engine.version
    kernel = oci_runtime = ""
    if version.is_podman:
        response = await backend.engine.request("GET", "/info", libpod=True)
        backend.engine.check(response, "asking its host's facts")
        host = response.json().get("host") or {}
        kernel = str(host.get("kernel") or "")
        runtime = host.get("ociRuntime") or {}
        oci_runtime = f"{runtime.get('name', '')} {runtime.get('version', '')}".strip()
    facts = EngineFacts(kind=version.product, version=version.version,
                        api_version=version.api_version, kernel=kernel,
                        oci_runtime=oci_runtime.splitlines()[0] if oci_runtime else "",
                        local=backend.local, checkpoint_api=version.is_podman)
    backend._engine_facts = facts
    return facts


def _unavailable(backend: DockerBackend) -> CheckpointUnavailable:
    version = backend.engine.version
    return CheckpointUnavailable(
        f"the container engine at {backend.engine.url} is {version.product} {version.version}: "
        f"markco checkpoints containers through Podman's libpod API only (Docker Engine's "
        f"checkpoint API is experimental and not supported). Use Podman (>= 4, with CRIU >= "
        f"4 on its host) as [compute.docker] engine_url, or the process backend")


async def image_id(backend: DockerBackend, image: str) -> str | None:
    """The engine's id of `image`; None when it has no such image."""
    response = await backend.engine.request("GET", f"/images/{quote(image, safe='')}/json")
    if response.status_code == 404:
        return None
    backend.engine.check(response, f"looking up image {image!r}")
    return str(response.json().get("Id") or "") or None


def _refusal(backend: DockerBackend, doing: str, status: int, message: str, *,
             restoring: bool = False) -> CheckpointError:
    """The error for an engine's refusal: CRIU missing (`CheckpointUnavailable`), CRIU failing
    to restore an archive whose integrity was checked (`RestoreIncompatible`: something it
    depends on changed — a mapped file, the kernel — so the caller starts cold), or the rest."""
    text = f"the container engine at {backend.engine.url} refused {doing} ({status}): {message}"
    lowered = message.lower()
    if any(words in lowered for words in _NO_CRIU):
        return CheckpointUnavailable(text + " — is CRIU >= 4 installed on the engine's host, "
                                            "ahead of the system's on PATH "
                                            "(`scripts/setup-criu`)?")
    if restoring and ("criu" in lowered or "oci runtime" in lowered):
        return RestoreIncompatible(text + " — the archive is whole, but CRIU cannot restore it "
                                          "here (see the restore.log it names)")
    return CheckpointError(text)


async def export_checkpoint(backend: DockerBackend, handle: str,
                            write: Callable[[bytes], Awaitable[None]], *, leave_running: bool,
                            tcp_established: bool = False) -> Mapping[str, Any]:
    """See `EngineCheckpointing.export_checkpoint`."""
    facts = await engine_facts(backend)
    if not facts.checkpoint_api:
        raise _unavailable(backend)
    data = await backend._inspect_raw(handle)
    container_id = str(data["Id"])
    state = data.get("State") or {}
    if str(state.get("Status", "")).lower() not in _RUNNING:
        raise CheckpointError(f"docker backend: {handle!r} is {state.get('Status')!r}, not "
                              f"running: there is nothing to checkpoint")
    labels = (data.get("Config") or {}).get("Labels") or {}
    before = await backend._remembered(container_id)
    if not leave_running:
        # The engine reports a checkpointed container as stopped: it was asked to, it did not
        # crash. Recorded before, undone if the checkpoint fails.
        await backend._remember(container_id, stopped_run=str(state.get("StartedAt", "")))
    params = {"export": "true", "leaveRunning": str(leave_running).lower(),
              "tcpEstablished": str(tcp_established).lower(),
              # The root filesystem is read-only: no diff to compute and pack.
              "ignoreRootFS": str(backend.options.read_only_rootfs).lower()}
    try:
        status, message = await _exchange(backend, f"/containers/{container_id}/checkpoint",
                                          params, sink=write, doing=f"checkpointing {handle!r}")
        if status == 404:
            raise backend._not_found(handle)
        if status >= 400:
            raise _refusal(backend, f"checkpointing {handle!r}", status, message)
    except BaseException:
        if not leave_running:
            with trio.CancelScope(shield=True):
                await _resume(backend, container_id, handle)
                await backend._remember(container_id, stopped_run=before.stopped_run)
        raise
    return {"image": str((data.get("Config") or {}).get("Image") or ""),
            "image_id": str(data.get("Image") or ""),
            "user_id": labels.get(LABEL_USER, ""), "role": labels.get(LABEL_ROLE, ""),
            "port": labels.get(LABEL_PORT, "")}


async def _resume(backend: DockerBackend, container_id: str, handle: str) -> None:
    """After a failed checkpoint that was to stop the workload: if the engine did stop it (the
    archive was lost on our side: a full disk, a broken stream), restore it in place from the
    CRIU images the engine keeps in the container's directory, so it runs as it was."""
    try:
        data = await backend._inspect_raw(container_id)
        if str((data.get("State") or {}).get("Status", "")).lower() in _RUNNING:
            return
        response = await backend.engine.request(
            "POST", f"/containers/{container_id}/restore", libpod=True,
            wait_seconds=CHECKPOINT_WAIT_SECONDS)
        backend.engine.check(response, f"resuming {handle!r} from its checkpoint")
        backend.log.warning("docker backend: the checkpoint of %s failed after the engine "
                            "stopped it: resumed from the engine's copy", handle)
    except (BackendError, OSError) as exc:
        backend.log.error("docker backend: the checkpoint of %s failed after the engine stopped "
                          "it, and resuming it failed too: %s", handle, exc)


async def import_checkpoint(backend: DockerBackend, spec: ContainerSpec,
                            chunks: AsyncIterable[bytes], *,
                            tcp_established: bool = False) -> ContainerInfo:
    """See `EngineCheckpointing.import_checkpoint`."""
    facts = await engine_facts(backend)
    if not facts.checkpoint_api:
        raise _unavailable(backend)
    existing = await backend.engine.request("GET", f"/containers/{quote(spec.name)}/json")
    if existing.status_code != 404:
        backend.engine.check(existing, f"looking up {spec.name!r}")
        raise Conflict(f"docker backend: a workload named {spec.name!r} exists on the engine "
                       f"at {backend.engine.url}")
    network = network_name(backend.deployment_id, spec.user_id)
    params = {"import": "true", "name": spec.name, "tcpEstablished": str(tcp_established).lower(),
              # A new container gets an address of its own: the source may still hold its own.
              "ignoreStaticIP": "true", "ignoreStaticMAC": "true",
              "ignoreRootFS": str(backend.options.read_only_rootfs).lower()}
    async with backend._network_lock(network):
        # The user's network goes with their last container: a sleeping runtime's may be gone.
        await backend._ensure_network(network, spec.user_id)
        try:
            labels = workload_labels(spec, deployment_id=backend.deployment_id,
                                     network=network, port=container_port(spec, backend.options))
            status, message = await _exchange(backend, f"/containers/{quote(spec.name)}/restore",
                                              params, content=_with_labels(chunks, labels,
                                                                           backend.log),
                                              doing=f"restoring {spec.name!r}")
            if status >= 400:
                if "already in use" in message:
                    raise Conflict(f"docker backend: a workload named {spec.name!r} exists "
                                   f"on the engine at {backend.engine.url}")
                raise _refusal(backend, f"restoring {spec.name!r}", status, message,
                               restoring=True)
        except Conflict:
            raise  # not ours to discard
        except BaseException:
            with trio.CancelScope(shield=True):
                await _discard(backend, spec.name)
                await backend._remove_network_if_unused(network, spec.user_id)
            raise
    try:
        data = await _restored(backend, spec)
        host = data.get("HostConfig") or {}
        if (host.get("Memory"), host.get("NanoCpus")) == (spec.memory_bytes,
                                                         nano_cpus(spec.cpus)):
            return await backend._info(data)  # the archive's limits are the spec's
        await backend.update_limits(str(data["Id"]), memory_bytes=spec.memory_bytes,
                                    cpus=spec.cpus)
        return await backend.inspect(str(data["Id"]))
    except BaseException:
        with trio.CancelScope(shield=True):
            await _discard(backend, spec.name)
            async with backend._network_lock(network):
                await backend._remove_network_if_unused(network, spec.user_id)
        raise


# ------------------------------------------------------------------------------ relabelling

CONFIG_DUMP = "config.dump"
_BLOCK = 512
_RELABEL_WITHIN = 1 << 20  # config.dump is among the archive's first members


def relabelled_config(config: bytes, labels: Mapping[str, str]) -> bytes:
    """Podman's `config.dump` with the workload's labels: the archive's own `markco.*` labels
    (but the image's) replaced by `labels`; everything else as it was."""
    data = json.loads(config)
    old = data.get("labels") or {}
    kept = {key: value for key, value in old.items()
            if not key.startswith("markco.") or key.startswith("markco.image.")}
    data["labels"] = {**kept, **labels}
    if old.get(LABEL_PORT):  # where the checkpointed process listens, whatever the spec says
        data["labels"][LABEL_PORT] = old[LABEL_PORT]
    # The source container's own run-directory files (issue 16): Podman 4.3 keeps them on
    # import, so conmon fails ("Failed to write conmon pidfile") wherever that container's
    # directory is gone — on another host, or here once it was removed. Without them the
    # restored container gets its own.
    for key in ("conmonPidFile", "pid_file"):
        data.pop(key, None)
    return json.dumps(data, separators=(",", ":")).encode()


async def _with_labels(chunks: AsyncIterable[bytes],
                       labels: Mapping[str, str], log: Any) -> AsyncIterator[bytes]:
    """The archive's tar stream with `config.dump` relabelled (Podman 4.3's restore takes the
    labels from it and cannot change them). Members are walked header by header until
    `config.dump`; anything unexpected before it (extended headers, a damaged header, no
    config.dump in the first MiB) leaves the stream as it is, with the archive's labels."""
    iterator = chunks.__aiter__()
    buffer = bytearray()
    position = 0  # the next header's offset in `buffer`
    done = False
    async for chunk in iterator:
        buffer += chunk
        while not done:
            if len(buffer) < position + _BLOCK:
                break
            header = bytes(buffer[position:position + _BLOCK])
            if not any(header) or position > _RELABEL_WITHIN:
                done = True
                break
            try:
                info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
            except tarfile.TarError:
                done = True
                break
            if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
                done = True  # extended headers and the like: not walked here
                break
            padded = info.size + (-info.size % _BLOCK)
            end = position + _BLOCK + padded
            if len(buffer) < end:
                break
            if info.name.removeprefix("./") == CONFIG_DUMP and info.type != tarfile.DIRTYPE:
                try:
                    config = relabelled_config(
                        bytes(buffer[position + _BLOCK:position + _BLOCK + info.size]), labels)
                except (ValueError, AttributeError) as exc:
                    log.warning("docker backend: config.dump of an archive not relabelled "
                                "(%s): the archive's labels are kept", exc)
                else:
                    info.size = len(config)
                    replacement = (info.tobuf(format=tarfile.USTAR_FORMAT) + config
                                   + bytes(-len(config) % _BLOCK))
                    buffer[position:end] = replacement
                done = True
                break
            position = end
        if done:
            yield bytes(buffer)
            buffer.clear()
            break
    async for chunk in iterator:
        yield chunk
    if buffer:
        yield bytes(buffer)


# ------------------------------------------------------------------------------ streaming


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the engine's unix socket, blocking (used from a worker thread)."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("engine", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _message(status: int, body: bytes) -> str:
    return engine_message(httpx.Response(status, content=body))


async def _exchange(backend: DockerBackend, path: str, params: dict[str, str], *,
                    doing: str, content: AsyncIterable[bytes] | None = None,
                    sink: Callable[[bytes], Awaitable[None]] | None = None) -> tuple[int, str]:
    """POST a libpod `path`, streaming `content` up and (on success) the answer's body down to
    `sink`; return the status and, on failure, the engine's message.

    With a local engine (a unix socket) the bytes are moved by a worker thread with a blocking
    socket: several times faster than the async client for archives of hundreds of MB (they are
    handed to `sink` in blocks of `STREAM_BLOCK`)."""
    parts = urlsplit(backend.engine.url)
    target = f"{LIBPOD_PREFIX}{path}?{urlencode(params)}"
    sink_failed: list[BaseException] = []  # the sink's own errors (a full disk): not the engine

    async def guarded(block: bytes) -> None:
        assert sink is not None
        try:
            await sink(block)
        except BaseException as exc:
            sink_failed.append(exc)
            raise

    try:
        if parts.scheme != "unix":
            return await _exchange_async(backend, path, params, content,
                                         guarded if sink is not None else None)
        if sink is None:
            return await trio.to_thread.run_sync(
                _exchange_blocking, parts.path, target, content, None)
        return await _exchange_threaded(parts.path, target, content, guarded)
    except (OSError, http.client.HTTPException, httpx.HTTPError) as exc:
        if sink_failed:
            raise sink_failed[0] from None
        raise CheckpointError(f"the container engine at {backend.engine.url} broke off "
                              f"{doing} ({type(exc).__name__}: {exc})") from exc


async def _exchange_threaded(socket_path: str, target: str,
                             content: AsyncIterable[bytes] | None,
                             sink: Callable[[bytes], Awaitable[None]]) -> tuple[int, str]:
    """`_exchange_blocking` in a worker thread, its blocks written by this task meanwhile (a
    few blocks in between). Neither side's error escapes the nursery as a group."""
    send, receive = trio.open_memory_channel[bytes](4)
    outcome: list[tuple[int, str]] = []
    failures: list[BaseException] = []

    async def read() -> None:
        async with send:
            try:
                outcome.append(await trio.to_thread.run_sync(
                    _exchange_blocking, socket_path, target, content, send.send))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the writer gave up: its error is the one to raise
            except BaseException as exc:  # re-raised below
                failures.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        async with receive:
            try:
                async for block in receive:
                    await sink(block)
            except BaseException as exc:  # re-raised below
                failures.insert(0, exc)
    if failures:
        raise failures[0]
    return outcome[0]


def _exchange_blocking(socket_path: str, target: str, content: AsyncIterable[bytes] | None,
                       sink: Callable[[bytes], Awaitable[None]] | None) -> tuple[int, str]:
    connection = _UnixConnection(socket_path, CHECKPOINT_WAIT_SECONDS)
    try:
        if content is None:
            connection.request("POST", target)
        else:
            iterator = content.__aiter__()

            async def next_chunk() -> bytes:
                return await iterator.__anext__()

            def body() -> Iterator[bytes]:
                while True:
                    try:
                        chunk = trio.from_thread.run(next_chunk)
                    except StopAsyncIteration:
                        return
                    if chunk:
                        yield chunk

            # An iterable body goes out with chunked transfer encoding.
            connection.request("POST", target, body=body(),
                               headers={"Content-Type": "application/x-tar"})
        response = connection.getresponse()
        if response.status >= 400 or sink is None:
            answer = response.read()
            return response.status, _message(response.status, answer) if answer else ""
        block = bytearray()
        while piece := response.read1(STREAM_BLOCK):
            block += piece
            if len(block) >= STREAM_BLOCK:
                trio.from_thread.run(sink, bytes(block))
                block.clear()
        if block:
            trio.from_thread.run(sink, bytes(block))
        return response.status, ""
    finally:
        connection.close()


async def _exchange_async(backend: DockerBackend, path: str, params: dict[str, str],
                          content: AsyncIterable[bytes] | None,
                          sink: Callable[[bytes], Awaitable[None]] | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/x-tar"} if content is not None else None
    async with backend.engine.stream("POST", path, params=params, content=content,
                                     headers=headers, libpod=True,
                                     wait_seconds=CHECKPOINT_WAIT_SECONDS) as response:
        if response.status_code >= 400 or sink is None:
            await response.aread()
            return response.status_code, engine_message(response)
        async for chunk in response.aiter_bytes(STREAM_BLOCK):
            await sink(chunk)
        return response.status_code, ""


async def _restored(backend: DockerBackend, spec: ContainerSpec) -> dict[str, Any]:
    """The restored container's inspect answer, checked to be the spec's workload: of this
    deployment, user and role (Podman keeps the archive's labels)."""
    response = await backend.engine.request("GET", f"/containers/{quote(spec.name)}/json")
    backend.engine.check(response, f"inspecting the restored {spec.name!r}")
    data: dict[str, Any] = response.json()
    labels = (data.get("Config") or {}).get("Labels") or {}
    wanted = {LABEL_DEPLOYMENT: backend.deployment_id, LABEL_USER: spec.user_id,
              LABEL_ROLE: spec.role.value}
    wrong = {key: labels.get(key) for key, value in wanted.items() if labels.get(key) != value}
    if wrong:
        raise CheckpointError(f"docker backend: the archive restored as {spec.name!r} is not "
                              f"this workload's ({wrong}, expected {wanted}): an archive is "
                              f"restored for the same deployment, user and role only")
    return data


async def _discard(backend: DockerBackend, name: str) -> None:
    """Remove what a failed restore left (a container it created, of this deployment)."""
    try:
        found = await backend.engine.request("GET", f"/containers/{quote(name)}/json")
        if found.status_code != 200:
            return
        labels = (found.json().get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_DEPLOYMENT) != backend.deployment_id:
            return
        response = await backend.engine.request(
            "DELETE", f"/containers/{quote(name)}", params={"force": "true", "v": "true"},
            wait_seconds=backend.options.timeout_seconds + 10)
    except BackendError:
        return
    if response.status_code < 400:
        backend.log.info("docker backend: removed %s after a failed restore", name)

