"""Loading the configuration file, in two phases (DESIGN §2).

Phase one reads the TOML and its `[plugins]` table and loads the plugins. Phase two validates
every section: the core's own, the role sections (`[storage]`, `[compute]`, `[checkpoint]`,
`[oauth]`, each naming providers whose options live in a sub-table), and the sections plugins
declare. Any error names the file, the section and the key; an unknown section names the plugin
that is missing or disabled.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .errors import ConfigError, PluginError
from .hookspecs import ConfigSection, ProviderSpec
from .options import Secret, SecretResolver, parse_options
from .plugins import ROLE_HOOKS, MarkcoPluginManager, collect_providers, make_plugin_manager


@dataclass(frozen=True)
class ServerOptions:
    """`[server]`: where the daemon listens and keeps its data."""

    listen: str = "127.0.0.1:3000"
    public_url: str = "http://127.0.0.1:3000"
    data_dir: str = "data"
    trusted_proxies: list[str] = field(default_factory=list)
    drain_seconds: float = 10.0
    deployment_id: str = "markco"
    # Connections open at once from one client address (0: no cap). A trusted proxy's own
    # connections are not capped; the WebSockets it forwards are, per forwarded client.
    max_connections_per_client: int = 256
    # Per-user editor origins: user X's editor at <scheme>://X.<editor_domain>[:port]/u/X/
    # (the public URL's scheme and port), with its own cookie. "" = one origin, /u/X/.
    editor_domain: str = ""

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if (not sep or not host or not port.isascii() or not port.isdigit()
                or not 0 <= int(port) <= 65535):
            raise ValueError(f"listen: expected HOST:PORT such as 127.0.0.1:3000, "
                             f"got {self.listen!r}")
        if not self.public_url.startswith(("http://", "https://")):
            raise ValueError(f"public_url: must start with http:// or https://, "
                             f"got {self.public_url!r}")
        if self.drain_seconds < 0:
            raise ValueError("drain_seconds: must be zero or more")
        if self.max_connections_per_client < 0:
            raise ValueError("max_connections_per_client: must be 0 (no cap) or more")
        if not self.deployment_id.replace("-", "").isalnum() or len(self.deployment_id) > 32:
            raise ValueError("deployment_id: letters, digits and '-' only, at most 32 characters")
        if self.editor_domain:
            _check_editor_domain(self.editor_domain, self.public_url)

    @property
    def host(self) -> str:
        """The host part of `listen`."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return int(self.listen.rpartition(":")[2])


_DNS_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def _check_editor_domain(domain: str, public_url: str) -> None:
    labels = domain.split(".")
    if domain != domain.lower() or len(labels) < 2 or not all(map(_DNS_LABEL.match, labels)):
        raise ValueError(f"editor_domain: a lower-case DNS name such as u.example.org (each "
                         f"user's editor is served at <userId>.<editor_domain>), got {domain!r}")
    public_host = (urlsplit(public_url).hostname or "").lower()
    if public_host == domain or public_host.endswith("." + domain):
        raise ValueError(f"editor_domain: {domain!r} must not contain the public URL's host "
                         f"{public_host!r} (the platform and the editors are separate origins)")


@dataclass(frozen=True)
class PluginsOptions:
    """`[plugins]`: what to block and which extra modules to load (phase one)."""

    disable: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoggingOptions:
    """`[logging]`: level and format of the daemon's log (stderr)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    # The proxy's access log (logger `markco.access`, written in one batch a second): "off",
    # "sampled" (one response in access_sample_every, and every 5xx) or "full" (every response).
    access: Literal["off", "sampled", "full"] = "sampled"
    access_sample_every: int = 100

    def __post_init__(self) -> None:
        if self.access_sample_every < 1:
            raise ValueError("access_sample_every: must be 1 or more (1 keeps every response; "
                             "or set access = \"full\")")


def is_loopback_host(host: str) -> bool:
    """Whether `host` is a loopback address (an IP literal, or exactly `localhost`): a prefix
    test would let `127.0.0.1.example.org` through, and DNS would decide the bind address."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class MetricsOptions:
    """`[metrics]`: Prometheus `/metrics` on its own address, never the public front door.

    Off unless `listen` is set. Only a loopback address is accepted unless `allow_remote` is
    true (then keep the address private: a firewall or a private network); `token_env` /
    `token_file` then makes scrapes present `Authorization: Bearer <token>`."""

    listen: str = ""
    allow_remote: bool = False
    token: Secret | None = None

    def __post_init__(self) -> None:
        if not self.listen:
            return
        host, sep, port = self.listen.rpartition(":")
        if (not sep or not host or not port.isascii() or not port.isdigit()
                or not 0 <= int(port) <= 65535):
            raise ValueError(f"listen: expected HOST:PORT such as 127.0.0.1:9464, "
                             f"got {self.listen!r}")
        if not is_loopback_host(host) and not self.allow_remote:
            raise ValueError(f"listen: {self.listen!r} is not a loopback address, so anyone "
                             f"who reaches this machine could read the metrics; use "
                             f"127.0.0.1:<port>, or set allow_remote = true (and keep that "
                             f"address private, with a token)")

    @property
    def host(self) -> str:
        """The host part of `listen`."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class SupervisionOptions:
    """`[supervision]`: how crashed services are restarted, and when to give up."""

    max_crashes: int = 5
    window_seconds: float = 60.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        if self.max_crashes < 1:
            raise ValueError("max_crashes: must be at least 1")
        if self.backoff_initial <= 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_initial must be > 0 and backoff_max >= backoff_initial")


@dataclass(frozen=True)
class RoleChoice:
    """The providers chosen for a role and their validated options."""

    role: str
    names: tuple[str, ...]
    specs: Mapping[str, ProviderSpec]
    options: Mapping[str, Any]

    def make(self, name: str, ctx: Any) -> Any:
        """Call provider `name`'s factory with its validated options; the result is an async
        context manager the caller enters."""
        return self.specs[name].factory(self.options[name], ctx)


# Role sections: the key that names the provider(s), whether one is required, and the default.
_ROLE_KEYS: dict[str, tuple[str, bool, str | list[str] | None]] = {
    "storage": ("provider", True, "sqlite"),
    "compute": ("backend", False, None),
    "checkpoint": ("provider", False, None),
    "oauth": ("providers", False, []),
    # Default `builtin` when a loaded plugin provides one (the auth and compute plugins);
    # with that plugin disabled and no choice, the role is simply not filled.
    "sessions": ("provider", False, "builtin"),
    "compute_control": ("provider", False, "builtin"),
}

_CORE_SECTIONS: dict[str, type[Any]] = {
    "server": ServerOptions,
    "plugins": PluginsOptions,
    "logging": LoggingOptions,
    "supervision": SupervisionOptions,
    "metrics": MetricsOptions,
}


@dataclass(frozen=True)
class Config:
    """A validated configuration. `sections` holds the plugin-owned sections."""

    path: Path
    server: ServerOptions
    plugins: PluginsOptions
    logging: LoggingOptions
    supervision: SupervisionOptions
    roles: Mapping[str, RoleChoice]
    sections: Mapping[str, Any]
    metrics: MetricsOptions = field(default_factory=MetricsOptions)

    @property
    def base_dir(self) -> Path:
        """The config file's folder: relative paths in the file are relative to it."""
        return self.path.parent

    @property
    def data_dir(self) -> Path:
        """The data directory, absolute."""
        return (self.base_dir / self.server.data_dir).resolve()

    def section(self, name: str) -> Any:
        """The validated options of a plugin-owned section."""
        return self.sections[name]


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse the TOML file; syntax errors name the file and the line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_config(path: Path | str, *, environ: Mapping[str, str] | None = None,
                entry_points: bool = True) -> tuple[Config, MarkcoPluginManager]:
    """Both phases: return the validated config and the loaded plugin manager."""
    path = Path(path)
    raw = read_config_file(path)
    secrets = SecretResolver(environ, base_dir=path.parent)
    plugins = parse_options(PluginsOptions, _table(raw, "plugins", path), f"{path}: [plugins]",
                            secrets)
    try:
        pm = make_plugin_manager(disable=plugins.disable, modules=plugins.modules,
                                 entry_points=entry_points)
    except PluginError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return validate_config(path, raw, pm, secrets), pm


def validate_config(path: Path, raw: Mapping[str, Any], pm: MarkcoPluginManager,
                    secrets: SecretResolver) -> Config:
    """Phase two: validate every section against the loaded plugins."""
    core = {name: parse_options(cls, _table(raw, name, path), f"{path}: [{name}]", secrets)
            for name, cls in _CORE_SECTIONS.items()}
    metrics, server = core["metrics"], core["server"]
    if metrics.listen and metrics.port != 0 and metrics.port == server.port and \
            metrics.host in (server.host, "0.0.0.0", "::"):
        raise ConfigError(f"{path}: [metrics] listen: {metrics.listen!r} is the front door's "
                          f"address ([server] listen = {server.listen!r}); /metrics is never "
                          f"served there: give it a port of its own, e.g. 127.0.0.1:9464")
    roles = {role: _parse_role(role, _table(raw, role, path), pm, path, secrets)
             for role in ROLE_HOOKS}
    declared: dict[str, ConfigSection] = {}
    for impl in pm.hook.markco_config_sections.get_hookimpls():
        contributed: list[ConfigSection] = impl.function() or []  # type: ignore[assignment]
        for section in contributed:
            if section.name in declared or section.name in _CORE_SECTIONS or \
                    section.name in ROLE_HOOKS:
                raise ConfigError(f"{path}: plugin {impl.plugin_name!r} declares section "
                                  f"[{section.name}], which is already taken")
            declared[section.name] = section
    for name in raw:
        if name not in declared and name not in _CORE_SECTIONS and name not in ROLE_HOOKS:
            raise ConfigError(
                f"{path}: unknown section [{name}]: no loaded plugin declares it (is the plugin "
                f"that provides it installed, or disabled in [plugins] disable?)")
    sections = {name: parse_options(s.options, _table(raw, name, path), f"{path}: [{name}]",
                                    secrets)
                for name, s in declared.items()}
    return Config(path=path, server=core["server"], plugins=core["plugins"],
                  logging=core["logging"], supervision=core["supervision"], roles=roles,
                  sections=sections, metrics=core["metrics"])


def _table(raw: Mapping[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{name}] must be a table, got {value!r}")
    return value


def _parse_role(role: str, table: Mapping[str, Any], pm: MarkcoPluginManager, path: Path,
                secrets: SecretResolver) -> RoleChoice:
    key, required, default = _ROLE_KEYS[role]
    where = f"{path}: [{role}]"
    try:
        specs = collect_providers(pm, role)
    except PluginError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    known = ", ".join(sorted(specs)) or "none installed"
    chosen = table.get(key, default)
    if key not in table and not required and isinstance(default, str) and default not in specs:
        chosen = None  # a soft default: its plugin is not loaded, so the role stays empty
    names: tuple[str, ...]
    if key == "providers":
        if not isinstance(chosen, list) or not all(isinstance(n, str) for n in chosen):
            raise ConfigError(f"{where} {key}: expected a list of provider names, got {chosen!r}")
        names = tuple(chosen)
    elif chosen is None or chosen == "":
        names = ()
    elif isinstance(chosen, str):
        names = (chosen,)
    else:
        raise ConfigError(f"{where} {key}: expected a provider name, got {chosen!r}")
    if required and not names:
        raise ConfigError(f"{where} {key}: required (known: {known})")
    for name in names:
        if name not in specs:
            raise ConfigError(f"{where} {key}: no {role} provider named {name!r} (known: "
                              f"{known}; is its plugin installed, or disabled?)")
    for sub, value in table.items():
        if sub == key:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: unknown key {sub!r} (this section takes {key!r} and "
                              f"one [{role}.<provider>] table per provider)")
        if sub not in specs:
            raise ConfigError(f"{path}: [{role}.{sub}]: no {role} provider named {sub!r} "
                              f"(known: {known}; is its plugin installed, or disabled?)")
    options: dict[str, Any] = {}
    for name in names:
        spec = specs[name]
        sub_table = table.get(name, {})
        if spec.options is None:
            if sub_table:
                raise ConfigError(f"{path}: [{role}.{name}]: this provider takes no options")
            options[name] = None
        else:
            options[name] = parse_options(spec.options, sub_table, f"{path}: [{role}.{name}]",
                                          secrets)
    return RoleChoice(role=role, names=names, specs={n: specs[n] for n in names},
                      options=options)
