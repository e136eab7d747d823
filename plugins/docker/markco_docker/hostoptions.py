"""`[[compute.docker.hosts]]`: one more container engine of a deployment (see `hosts`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_NAME_CHARS = NAME_CHARS


def check_host_name(name: str) -> str:
    """A host name is short, lower case, `[a-z0-9-_]`: it appears in paths, logs and the CLI."""
    if not name or len(name) > 63 or not set(name) <= _NAME_CHARS:
        raise ValueError(f"host name {name!r}: use 1-63 characters a-z, 0-9, - and _")
    return name


@dataclass(frozen=True)
class HostOptions:
    """One `[[compute.docker.hosts]]` entry.

    - `name`: how operators and the CLI name it (`markco runtimes move USER --to NAME`).
    - `engine_url`: `unix:///path.sock` (an engine on this machine) or `https://HOST:PORT`
      (a remote one; Docker's `--tlsverify` with client certificates).
    - `tls_ca_file`, `tls_cert_file`, `tls_key_file`: files (mode 0600 for the key), never
      inline secrets. `ssh://` is not spoken: tunnel the engine's socket (`ssh -L`) to a local
      unix socket instead.
    - `labels`: what placement can ask for (`gpu`, `big-memory`).
    - `memory_budget_mb`: memory the host gives users' runtimes (0: no limit).
    """

    name: str
    engine_url: str
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    labels: list[str] = field(default_factory=list)
    memory_budget_mb: int = 0

    def __post_init__(self) -> None:
        check_host_name(self.name)
        scheme = urlsplit(self.engine_url).scheme
        if scheme == "ssh":
            raise ValueError(f"hosts.{self.name}.engine_url: ssh:// is not supported; forward "
                             f"the engine's socket (ssh -L /run/markco/{self.name}.sock:"
                             f"/run/podman/podman.sock HOST) and use unix:// to it")
        if self.memory_budget_mb < 0:
            raise ValueError(f"hosts.{self.name}.memory_budget_mb: must be 0 (no limit) or more")
        for label in self.labels:
            if not label or not set(label) <= _NAME_CHARS:
                raise ValueError(f"hosts.{self.name}.labels: {label!r} is not a label "
                                 f"(a-z, 0-9, - and _)")

    @property
    def memory_budget_bytes(self) -> int | None:
        """The budget in bytes; None when unlimited."""
        return self.memory_budget_mb << 20 if self.memory_budget_mb else None


def check_authenticated(host: HostOptions) -> None:
    """A `[[compute.docker.hosts]]` engine is reached with authentication: a unix socket
    (forwarded over SSH for a remote one), https:// with client certificates, or plain TCP on
    loopback only. (The `engine_url` host keeps its one-engine rules, for compatibility.)"""
    scheme = urlsplit(host.engine_url).scheme
    parts = urlsplit(host.engine_url)
    if scheme not in ("unix", "tcp", "http", "https"):
        raise ValueError(f"hosts.{host.name}.engine_url: expected unix:///path.sock or "
                         f"https://HOST:PORT, got {host.engine_url!r}")
    if scheme in ("tcp", "http") and parts.hostname not in ("127.0.0.1", "::1",
                                                             "localhost"):
        # An engine's API is root on its machine: never unauthenticated over a network.
        raise ValueError(f"hosts.{host.name}.engine_url: {scheme}:// reaches the engine "
                         f"without authentication; use https:// with tls_cert_file and "
                         f"tls_key_file (Docker's --tlsverify), or a forwarded unix socket")
    if scheme == "https" and (host.tls_cert_file is None or host.tls_key_file is None):
        raise ValueError(f"hosts.{host.name}: an https:// engine needs tls_cert_file and "
                         f"tls_key_file (client certificates: the engine must know markco)")
    if scheme != "https" and (host.tls_ca_file or host.tls_cert_file or host.tls_key_file):
        raise ValueError(f"hosts.{host.name}: tls_* files are only for an https:// engine")
