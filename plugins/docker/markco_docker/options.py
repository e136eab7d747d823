"""`[compute.docker]`: the options of the Docker/Podman container backend, validated by the core."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from .hostoptions import NAME_CHARS, HostOptions, check_authenticated, check_host_name

# The workloads' default uid and gid: not 0, and not one a host account commonly has (1000 is
# the first user of most Linux machines: without user namespaces, a workload running as 1000
# would own that person's files on the host). Debian reserves 65000-65533 and never allocates
# them to accounts; 65532 is also distroless' "nonroot".
WORKLOAD_UID = 65532
DEFAULT_USER = f"{WORKLOAD_UID}:{WORKLOAD_UID}"

# Linux capability names as the engines take them ("NET_BIND_SERVICE" or "CAP_NET_BIND_SERVICE").
_CAPABILITY = re.compile(r"^(CAP_)?[A-Z_]+$")
_UID_GID = re.compile(r"^(\d+):(\d+)$")

DEFAULT_ENGINE_URL = "unix:///run/podman/podman.sock"


def parse_mount(text: str) -> tuple[str, str, bool]:
    """`HOST[:CONTAINER][:ro|rw]` → (host path, container path, read only). Read-only unless
    `:rw` says otherwise: these are the image's dependencies, never the user's data."""
    parts = text.split(":")
    mode = "ro"
    if parts[-1] in ("ro", "rw"):
        mode = parts.pop()
    if len(parts) == 1:
        parts.append(parts[0])
    if len(parts) != 2 or not all(p.startswith("/") for p in parts):
        raise ValueError(f"mounts: {text!r} is not HOST[:CONTAINER][:ro|rw] with absolute paths")
    return parts[0], parts[1], mode == "ro"


@dataclass(frozen=True)
class DockerOptions:
    """`[compute.docker]`.

    - `engine_url`: where the engine's API is: `unix:///run/podman/podman.sock` (podman, the
      default: `podman system service --time=0 unix:///run/podman/podman.sock`),
      `unix:///var/run/docker.sock` (Docker), or `tcp://HOST:PORT` / `https://HOST:PORT`
      (a remote engine: see the README — container addresses must be routable from the daemon).
    - `tls_ca_file`, `tls_cert_file`, `tls_key_file`: for an `https://` engine with client
      certificates (Docker's `--tlsverify`).
    - `api_version`: pin the API version ("1.41"); by default the highest both sides speak.
    - `timeout_seconds`: for each engine call (a stop waits its own grace period on top).
    - `runtime_image`, `editor_image`: the images of the two workloads (`scripts/setup-podman`
      builds local development ones; the README shows a production Dockerfile).
    - `mounts`: host directories mounted into EVERY workload, `HOST[:CONTAINER][:ro|rw]`,
      read-only unless `:rw` — the host `/usr`, Python and virtual environment of the local
      development images (`scripts/setup-podman --print-config` prints them). Empty with real
      images.
    - `workspace_path`: where the user's directory appears inside the containers.
    - `runtime_port`, `editor_port`: the port each workload listens on inside its container
      (when the spec does not fix one).
    - `user`: `UID:GID` the workloads run as (never root); the daemon makes the user's files
      and runtime-front socket theirs.
    - `network`: `internal` (default) — each user's network has no route out: no internet, no
      cloud metadata, no other user's network; the daemon (on the engine's host) reaches the
      editor and runtime at their container addresses and nothing is published. `egress` — the
      user's network is NATed to the outside (pip install works), the editor's port is published
      on `publish_host` only; keeping users apart and away from metadata then NEEDS the host
      firewall rules of `scripts/setup-podman --firewall` (see the README).
    - `publish_host`: the host address the editor's port is published on in `egress` mode.
    - `read_only_rootfs`, `tmpfs_size_mb`: the image is read-only; /tmp is a tmpfs of that size
      (it counts against the memory limit).
    - `pids_limit`, `nofile_limit`: per-container process and open-file limits.
    - `cap_add`: capabilities given back after dropping ALL (none are needed by mrmd-python or
      the built-in editor).
    - `init`: run a tiny init as PID 1 (signals forwarded, zombies reaped; a program that is
      PID 1 itself ignores SIGTERM unless it handles it) — in the editor: the runtime never has
      one, so that CRIU can checkpoint and restore it (see `translation.create_body`).
    """

    engine_url: str = DEFAULT_ENGINE_URL
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    api_version: str | None = None
    timeout_seconds: float = 30.0
    runtime_image: str = "localhost/markco-runtime:dev"
    editor_image: str = "localhost/markco-editor:dev"
    mounts: list[str] = field(default_factory=list)
    workspace_path: str = "/workspace"
    runtime_port: int = 8888
    editor_port: int = 8080
    user: str = DEFAULT_USER
    network: Literal["internal", "egress"] = "internal"
    publish_host: str = "127.0.0.1"
    read_only_rootfs: bool = True
    tmpfs_size_mb: int = 256
    pids_limit: int = 512
    nofile_limit: int = 8192
    cap_add: list[str] = field(default_factory=list)
    init: bool = True
    # Several hosts (see `hosts`): `engine_url` is the host named `host_name`; `hosts` adds
    # others. With no `hosts`, one engine exactly as before.
    host_name: str = "local"
    host_labels: list[str] = field(default_factory=list)
    memory_budget_mb: int = 0
    hosts: list[HostOptions] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_host_name(self.host_name)
        if self.memory_budget_mb < 0:
            raise ValueError("memory_budget_mb: must be 0 (no limit) or more")
        for label in self.host_labels:
            if not label or not set(label) <= NAME_CHARS:
                raise ValueError(f"host_labels: {label!r} is not a label (a-z, 0-9, - and _)")
        for host in self.hosts:
            check_authenticated(host)
        names = [self.host_name, *(h.name for h in self.hosts)]
        if len(set(names)) != len(names):
            raise ValueError(f"hosts: every host needs a name of its own, got {names}")
        parts = urlsplit(self.engine_url)
        if parts.scheme == "unix":
            if not parts.path.startswith("/"):
                raise ValueError(f"engine_url: expected unix:///absolute/path.sock, got "
                                 f"{self.engine_url!r}")
        elif parts.scheme in ("tcp", "http", "https"):
            if not parts.hostname or parts.port is None:
                raise ValueError(f"engine_url: expected {parts.scheme}://HOST:PORT, got "
                                 f"{self.engine_url!r}")
        else:
            raise ValueError(f"engine_url: expected unix://, tcp://, http:// or https://, got "
                             f"{self.engine_url!r}")
        tls = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        if any(tls) and parts.scheme != "https":
            raise ValueError("tls_ca_file, tls_cert_file, tls_key_file: only meaningful with an "
                             "https:// engine_url")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.api_version is not None and not re.fullmatch(r"1\.\d+", self.api_version):
            raise ValueError(f"api_version: expected 1.N such as 1.41, got {self.api_version!r}")
        if not 0 < self.timeout_seconds <= 600:
            raise ValueError("timeout_seconds: must be more than 0 and at most 600")
        for image_key in ("runtime_image", "editor_image"):
            if not getattr(self, image_key).strip():
                raise ValueError(f"{image_key}: must not be empty")
        for mount in self.mounts:
            parse_mount(mount)
        if not self.workspace_path.startswith("/") or self.workspace_path == "/":
            raise ValueError(f"workspace_path: expected an absolute path below /, got "
                             f"{self.workspace_path!r}")
        for port_key in ("runtime_port", "editor_port"):
            if not 1 <= getattr(self, port_key) <= 65535:
                raise ValueError(f"{port_key}: expected a port number 1-65535")
        match = _UID_GID.match(self.user)
        if match is None:
            raise ValueError(f"user: expected numeric UID:GID such as 65532:65532, got "
                             f"{self.user!r}")
        if int(match.group(1)) == 0:
            raise ValueError("user: workloads never run as root (uid 0)")
        if self.tmpfs_size_mb < 1:
            raise ValueError("tmpfs_size_mb: must be at least 1")
        if self.pids_limit < 16:
            raise ValueError("pids_limit: must be at least 16")
        if self.nofile_limit < 64:
            raise ValueError("nofile_limit: must be at least 64")
        for cap in self.cap_add:
            if not _CAPABILITY.match(cap) or cap.removeprefix("CAP_") == "SYS_ADMIN":
                raise ValueError(f"cap_add: {cap!r} is not a capability markco gives back "
                                 f"(SYS_ADMIN never is)")

    @property
    def uid_gid(self) -> tuple[int, int]:
        """`user` as numbers."""
        uid, gid = self.user.split(":")
        return int(uid), int(gid)

    @property
    def host_mounts(self) -> list[tuple[str, str, bool]]:
        """`mounts`, parsed."""
        return [parse_mount(m) for m in self.mounts]
