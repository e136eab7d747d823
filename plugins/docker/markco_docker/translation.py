"""From markco's `ContainerSpec` to the engine's create request, and from the engine's inspect
answer back to a `ContainerInfo`. Pure functions: no I/O, so the tests feed them directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from markco_trio.records import WorkloadRole
from markco_trio.roles import LABEL_DEPLOYMENT, LABEL_ROLE, LABEL_USER, ContainerSpec

from .naming import LABEL_NETWORK
from .options import DockerOptions

# The port the workload listens on inside its container, stamped on it so that `inspect` can
# say where it answers without a record of our own.
LABEL_PORT = "markco.port"
# Inside its own network namespace a workload binds every address; the network keeps it apart.
CONTAINER_BIND_HOST = "0.0.0.0"
# HOME when the spec gives none: the root filesystem is read-only and /tmp is the container's
# own tmpfs (mrmd-python keeps its run files under ~/.mrmd; they must not outlive the container).
DEFAULT_HOME = "/tmp"
# RLIMIT_NPROC counts every process of a uid on the whole host, and all workloads share one uid:
# it cannot bound a container (the pids cgroup limit does). It is set because with any Ulimits
# given, podman fills the rest with "unlimited", which a root without CAP_SYS_RESOURCE may not set.
NPROC_LIMIT = 32768


def resolve(template: str, *, port: int, workspace: str) -> str:
    """Replace the spec's placeholders (`{host}`, `{port}`, `{user_dir}`) with what they are
    inside the container. Plain replacement, not `str.format`: commands hold code with braces."""
    return (template.replace("{host}", CONTAINER_BIND_HOST)
            .replace("{port}", str(port))
            .replace("{user_dir}", workspace))


def container_port(spec: ContainerSpec, options: DockerOptions) -> int:
    """The port the workload listens on inside the container."""
    if spec.port is not None:
        return spec.port
    return options.editor_port if spec.role == WorkloadRole.EDITOR else options.runtime_port


def image_for(spec: ContainerSpec, options: DockerOptions) -> str:
    """The spec's image, else the configured one for its role."""
    if spec.image:
        return spec.image
    return options.editor_image if spec.role == WorkloadRole.EDITOR else options.runtime_image


def publishes(role: WorkloadRole, options: DockerOptions) -> bool:
    """Whether the workload's port is published on the host. Never for a runtime (the daemon's
    runtime front is the only way to it); for the editor only in `egress` mode — an `internal`
    network cannot publish, and the daemon reaches the editor at its container address."""
    return role == WorkloadRole.EDITOR and options.network == "egress"


def workload_labels(spec: ContainerSpec, *, deployment_id: str, network: str,
                    port: int) -> dict[str, str]:
    """The spec's labels, with deployment, user and role stamped by the backend (so a spec can
    never place a workload in another deployment), the network and the port."""
    labels = dict(spec.labels)
    labels.update({LABEL_DEPLOYMENT: deployment_id, LABEL_USER: spec.user_id,
                   LABEL_ROLE: spec.role.value, LABEL_NETWORK: network, LABEL_PORT: str(port)})
    return labels


def create_body(spec: ContainerSpec, options: DockerOptions, *, deployment_id: str,
                network: str, podman: bool) -> dict[str, Any]:
    """The body of `POST /containers/create` for `spec`: unprivileged, limited, on the user's
    network, with the user's directory at `workspace_path` and nothing else writable but /tmp."""
    port = container_port(spec, options)
    workspace = options.workspace_path
    env = {key: resolve(value, port=port, workspace=workspace) for key, value in spec.env.items()}
    env.setdefault("HOME", DEFAULT_HOME)
    mounts = [{"Type": "bind", "Source": spec.user_dir, "Target": workspace, "ReadOnly": False}]
    for source, target, read_only in [*options.host_mounts, *spec.mounts]:
        mounts.append({"Type": "bind", "Source": source, "Target": target,
                       "ReadOnly": read_only})
    host_config: dict[str, Any] = {
        "NetworkMode": network,
        "Mounts": mounts,
        "Memory": spec.memory_bytes,
        "MemorySwap": spec.memory_bytes,  # equal to Memory: no swap on top of the limit
        "NanoCpus": nano_cpus(spec.cpus),
        "PidsLimit": options.pids_limit,
        "Ulimits": [{"Name": "nofile", "Soft": options.nofile_limit,
                     "Hard": options.nofile_limit},
                    {"Name": "nproc", "Soft": NPROC_LIMIT, "Hard": NPROC_LIMIT}],
        "Privileged": False,
        "CapDrop": ["ALL"],
        "CapAdd": [cap.removeprefix("CAP_") for cap in options.cap_add],
        "SecurityOpt": ["no-new-privileges"],
        "ReadonlyRootfs": options.read_only_rootfs,
        "Tmpfs": {"/tmp": f"rw,nosuid,nodev,size={options.tmpfs_size_mb}m,mode=1777"},
        # Podman's init is a host file bind-mounted into the container, which CRIU 4.1's
        # mount engine cannot restore ("Can't remount ... with MS_PRIVATE"): the runtime, the
        # one workload that is checkpointed, runs as PID 1 itself (it is stopped with SIGKILL,
        # which PID 1 receives from outside its namespace like any process).
        "Init": options.init and spec.role != WorkloadRole.RUNTIME,
        # The daemon restarts crashed workloads itself, with backoff and a crash count: an
        # engine restarting them too would hide crashes and fight the daemon.
        "RestartPolicy": {"Name": "no"},
    }
    if not podman:
        # Docker's json-file driver keeps logs forever by default (Podman bounds them with
        # containers.conf's log_size_max).
        host_config["LogConfig"] = {"Type": "json-file",
                                    "Config": {"max-size": "10m", "max-file": "2"}}
    if publishes(spec.role, options):
        # An empty HostPort lets the engine pick a free one; only on `publish_host`.
        host_config["PortBindings"] = {f"{port}/tcp": [{"HostIp": options.publish_host,
                                                         "HostPort": ""}]}
    return {
        "Image": image_for(spec, options),
        "Cmd": [resolve(part, port=port, workspace=workspace) for part in spec.command],
        "Env": [f"{key}={value}" for key, value in env.items()],
        "User": options.user,
        "WorkingDir": workspace,
        "Hostname": spec.role.value,
        "Labels": workload_labels(spec, deployment_id=deployment_id, network=network,
                                  port=port),
        "ExposedPorts": {f"{port}/tcp": {}},
        "StopSignal": spec.stop_signal,
        "HostConfig": host_config,
    }


def nano_cpus(cpus: float) -> int:
    """CPUs as the engine's NanoCpus (1 CPU = 10^9)."""
    return int(round(cpus * 1_000_000_000))


def network_body(name: str, *, deployment_id: str, user_id: str, bridge: str,
                 internal: bool) -> dict[str, Any]:
    """The body of `POST /networks/create` for a user's network."""
    return {
        "Name": name,
        "CheckDuplicate": True,
        "Driver": "bridge",
        "Internal": internal,
        "Labels": {LABEL_DEPLOYMENT: deployment_id, LABEL_USER: user_id, LABEL_NETWORK: name},
        # Honoured by Docker and Podman alike: a predictable host interface for firewall rules.
        "Options": {"com.docker.network.bridge.name": bridge},
    }


def parse_time(text: str | None) -> float | None:
    """An engine timestamp (RFC 3339 with nanoseconds) as POSIX seconds; None for the zero time
    engines use for "never"."""
    if not text or text.startswith("0001-01-01"):
        return None
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    # Python parses at most microseconds: trim the fraction to 6 digits.
    head, dot, rest = value.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits):]
        value = f"{head}.{digits[:6]}{zone}"
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def container_address(data: Mapping[str, Any], *, running: bool) -> str | None:
    """Where the daemon reaches the workload's port: the published host address when there is
    one, else the container's address on its user network. None unless it runs."""
    if not running:
        return None
    labels = (data.get("Config") or {}).get("Labels") or {}
    port = labels.get(LABEL_PORT)
    if not port:
        return None
    settings = data.get("NetworkSettings") or {}
    for binding in ((settings.get("Ports") or {}).get(f"{port}/tcp") or []):
        if binding and binding.get("HostPort"):
            return f"{binding.get('HostIp') or '127.0.0.1'}:{binding['HostPort']}"
    networks = settings.get("Networks") or {}
    network = networks.get(labels.get(LABEL_NETWORK, "")) or next(iter(networks.values()), None)
    if network and network.get("IPAddress"):
        return f"{network['IPAddress']}:{port}"
    return None
