"""`markco doctor`: what works on this machine, and what to do about what does not.

    markco doctor --config /etc/markco/production.toml [--json] [--skip edge]

The checks are data (`CHECKS`): each has a name, says what it checks, and returns an `Outcome`
— `pass`, `warn` (works, with a caveat), `fail` (with `fix`: what to do) or `skip` (does not
apply to this configuration, or depends on a check that failed). In order:

- `config`: the file loads and validates (unknown keys, bad values, missing secrets);
- `storage`: the database answers and its schema is at this markco's version (migrated);
- `engine`: each configured container engine answers its API (docker backend);
- `images`: the runtime and editor images exist on that engine;
- `criu`: CRIU really dumps and restores a process holding a listening socket here
  (`markco_criu.selftest`), when a checkpointer is configured;
- `firewall`: markco's nftables table is in place (docker backend; `markco_docker.firewall`);
- `isolation`: whether users' workloads are kept apart (containers, or the process backend
  run as root) — a warning when they all run as one account;
- `disk`: free space for snapshots under the data directory, which must be writable;
- `edge`: the public URL answers `/readyz` as a ready markco (through Caddy, when it is https).

Exit status: 0 when nothing failed, 1 otherwise (2 for a command-line mistake). `--json` prints
`{"ok": bool, "checks": [{"name", "title", "status", "detail", "fix", "seconds"}, ...]}`.
Run it as the daemon's account (root for CRIU and the firewall) with the daemon's environment
(its secrets), on the daemon's machine; it changes nothing, apart from the CRIU self-test's
own short-lived process and temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import trio

from .config import Config, load_config
from .errors import MarkcoError
from .plugins import MarkcoPluginManager

Status = Literal["pass", "warn", "fail", "skip"]
MiB = 1 << 20
# Below this much free space (or 10x the configured minimum, if larger) the disk check warns.
DISK_WARN_MIB = 2048
EDGE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Outcome:
    """What one check found: its status, what was seen, and what to do when it failed."""

    status: Status
    detail: str
    fix: str = ""


@dataclass
class Doctor:
    """The state the checks share: the config path and, once loaded, the config."""

    config_path: Path
    firewall_netns: str | None = None
    config: Config | None = None
    plugins: MarkcoPluginManager | None = None
    results: dict[str, Outcome] = field(default_factory=dict)

    def loaded(self) -> Config:
        assert self.config is not None, "the config check runs first"
        return self.config


CheckFn = Callable[[Doctor], Awaitable["Outcome | list[tuple[str, Outcome]]"]]


@dataclass(frozen=True)
class Check:
    """One check: `run` returns an Outcome (or one per item, e.g. per engine)."""

    name: str
    title: str
    run: CheckFn
    needs: tuple[str, ...] = ("config",)


def _pass(detail: str) -> Outcome:
    return Outcome("pass", detail)


def _fail(detail: str, fix: str) -> Outcome:
    return Outcome("fail", detail, fix)


def _skip(detail: str) -> Outcome:
    return Outcome("skip", detail)


# -- the checks -------------------------------------------------------------------------------


async def check_config(doctor: Doctor) -> Outcome:
    try:
        doctor.config, doctor.plugins = load_config(doctor.config_path)
    except MarkcoError as exc:
        return _fail(str(exc), "correct the key it names (`markco check-config --explain FILE` "
                               "lists every section and option), or export the secret it names")
    config = doctor.config
    roles = ", ".join(f"{role}: {'/'.join(choice.names)}"
                      for role, choice in config.roles.items() if choice.names)
    return _pass(f"{doctor.config_path} is valid ({roles})")


async def check_storage(doctor: Doctor) -> Outcome:
    from .cli import open_storage
    from .context import PluginContext
    from .storage.schema import LATEST_VERSION

    config = doctor.loaded()
    assert doctor.plugins is not None
    ctx = PluginContext(config=config, plugins=doctor.plugins)
    name = config.roles["storage"].names[0]
    try:
        with trio.fail_after(30):
            async with open_storage(config, ctx) as storage:
                await storage.ping()
                version = await storage.schema_version()
    except trio.TooSlowError:
        return _fail(f"the {name} database did not answer within 30 s",
                     "check that the database server is running and reachable")
    except (MarkcoError, OSError) as exc:
        return _fail(f"cannot open the {name} storage: {exc}",
                     "start the database server; check [storage] and its DSN or path")
    upgrade = f"markco db upgrade --config {doctor.config_path}"
    if version == 0:
        return _fail(f"the {name} database is empty (schema version 0)",
                     f"run `{upgrade}` (or start the daemon once: it migrates at start)")
    if version < LATEST_VERSION:
        return _fail(f"the schema is at version {version}, this markco needs {LATEST_VERSION}",
                     f"run `{upgrade}` (back the database up first: docs/deploy.md)")
    if version > LATEST_VERSION:
        return _fail(f"the schema is at version {version}, newer than this markco "
                     f"({LATEST_VERSION}): a newer markco migrated it",
                     "run the newer markco (downgrades are not supported)")
    return _pass(f"{name} answers; schema at version {version} (current)")


def _docker_options(config: Config) -> Any | None:
    choice = config.roles["compute"]
    return choice.options.get("docker") if "docker" in choice.names else None


async def check_engines(doctor: Doctor) -> list[tuple[str, Outcome]] | Outcome:
    config = doctor.loaded()
    names = config.roles["compute"].names
    options = _docker_options(config)
    if options is None:
        return _skip(f"the {'/'.join(names) or 'no'} backend uses no container engine")
    from markco_docker.engine import Engine
    from markco_docker.hosts import host_list

    # Every host (issue 16): `engine_url` is the first; `[[compute.docker.hosts]]` the others.
    several = bool(options.hosts)
    results: list[tuple[str, Outcome]] = []
    for host in host_list(options):
        label = f"{host.name} {host.engine_url}" if several else host.engine_url
        engine = Engine(host.engine_url, timeout=min(options.timeout_seconds, 15.0),
                        api_version=options.api_version, tls_ca_file=host.tls_ca_file,
                        tls_cert_file=host.tls_cert_file, tls_key_file=host.tls_key_file)
        try:
            async with engine:
                version = engine.version
        except (MarkcoError, OSError) as exc:
            results.append((label, _fail(str(exc), "start the engine (docs/deploy.md: the "
                                                   "podman service), or fix its engine_url "
                                                   "and TLS files in [compute.docker]")))
            continue
        detail = f"{host.engine_url} answers (API {version.api_version})"
        if several and not version.is_podman:
            results.append((label, Outcome(
                "warn", f"{detail}; {version.product} cannot checkpoint: runtimes on this "
                        f"host can be neither put to sleep nor moved", "use Podman >= 4 with "
                        "CRIU on every host")))
            continue
        results.append((label, _pass(detail + ("; checkpoints through podman"
                                               if several else ""))))
    return results


async def check_images(doctor: Doctor) -> Outcome:
    options = _docker_options(doctor.loaded())
    if options is None:
        return _skip("no container images are used by this backend")
    from markco_docker.engine import Engine

    missing = []
    async with Engine(options.engine_url, timeout=min(options.timeout_seconds, 15.0),
                      api_version=options.api_version, tls_ca_file=options.tls_ca_file,
                      tls_cert_file=options.tls_cert_file,
                      tls_key_file=options.tls_key_file) as engine:
        for image in (options.runtime_image, options.editor_image):
            response = await engine.request("GET", f"/images/{image}/json")
            if response.status_code == 404:
                missing.append(image)
            else:
                engine.check(response, f"inspecting image {image}")
    if missing:
        return _fail(f"not on the engine: {', '.join(missing)}",
                     "build them: `scripts/setup-podman` (local images), or pull/build the "
                     "images named in [compute.docker]")
    return _pass(f"{options.runtime_image} and {options.editor_image} are present")


async def check_criu(doctor: Doctor) -> Outcome:
    config = doctor.loaded()
    choice = config.roles["checkpoint"]
    if "criu" not in choice.names:
        return _skip("no [checkpoint] provider: runtimes never sleep (they keep running)")
    from markco_criu.selftest import selftest

    options = choice.options["criu"]
    if os.geteuid() != 0:
        return _fail("CRIU needs root, and this is not root",
                     "run `markco doctor` as the daemon's account (root)")
    result = await selftest(options.criu, options.work_dir or None)
    if not result.ok:
        return _fail(f"step {result.step} failed: {result.message}",
                     "run scripts/setup-criu (CRIU >= 4.1 with markco's patches), or point "
                     "[checkpoint.criu] criu at a working binary")
    return _pass(f"CRIU {result.criu_version} dumped ({result.dump_ms} ms) and restored "
                 f"({result.restore_ms} ms) a process holding a listening socket")


async def check_firewall(doctor: Doctor) -> Outcome:
    options = _docker_options(doctor.loaded())
    if options is None:
        return _skip("the process backend gives workloads no network: no firewall needed")
    from markco_docker import firewall

    problems = await trio.to_thread.run_sync(
        lambda: firewall.check(netns=doctor.firewall_netns))
    if not problems:
        return _pass(f"the nftables table {firewall.FAMILY} {firewall.TABLE} is in place "
                     f"({firewall.VERSION})")
    detail = "; ".join(problems)
    if options.network == "egress" or _scheme(options.engine_url) == "unix":
        return _fail(detail, firewall.SETUP_HINT)
    return Outcome("warn", f"{detail} (the engine is remote: check its host)",
                   firewall.SETUP_HINT + " on the engine's host")


def _scheme(url: str) -> str:
    return url.partition("://")[0]


async def check_isolation(doctor: Doctor) -> Outcome:
    config = doctor.loaded()
    names = config.roles["compute"].names
    if not names:
        return _skip("no [compute] backend: no workloads")
    if "process" not in names:
        return _pass(f"{names[0]}: each user's workloads in containers of their own")
    if os.geteuid() == 0:
        return _pass("process backend as root: a uid, PID, mount and network namespaces per "
                     "user")
    return Outcome("warn", "process backend not as root: every user's workloads run as this "
                           "account, on the host's network — fit for one person only",
                   "run the daemon as root for a team, or use the docker backend "
                   "(docs/compute.md)")


async def check_disk(doctor: Doctor) -> Outcome:
    config = doctor.loaded()
    data_dir = config.data_dir
    workloads = config.sections.get("workloads")
    min_free = int(getattr(workloads, "snapshots_min_free_mib", 256))
    where = data_dir if data_dir.exists() else _existing_parent(data_dir)
    if data_dir.exists() and not os.access(data_dir, os.W_OK | os.X_OK):
        return _fail(f"the data directory {data_dir} is not writable by this account",
                     "run as the daemon's account, or fix the directory's owner")
    usage = await trio.to_thread.run_sync(shutil.disk_usage, where)
    free_mib = usage.free // MiB
    detail = (f"{free_mib} MiB free of {usage.total // MiB} MiB on the filesystem of {where} "
              f"(snapshots go to {data_dir / 'snapshots'})")
    if free_mib < min_free:
        return _fail(detail + f"; checkpoints need at least {min_free} MiB "
                              "([workloads] snapshots_min_free_mib) and will be refused",
                     "free space, or move [server] data_dir to a larger filesystem")
    if free_mib < max(DISK_WARN_MIB, 10 * min_free):
        return Outcome("warn", detail + "; little room for snapshots",
                       "free space, or move [server] data_dir to a larger filesystem")
    return _pass(detail)


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


async def check_edge(doctor: Doctor) -> Outcome:
    config = doctor.loaded()
    public = config.server.public_url.rstrip("/")
    url = f"{public}/readyz"
    try:
        async with httpx.AsyncClient(timeout=EDGE_TIMEOUT, follow_redirects=False) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        return _fail(f"{url} does not answer ({type(exc).__name__}: {exc})",
                     "start the daemon and Caddy (docs/deploy.md); check DNS for the public "
                     "URL's host, the firewall's ports 80/443, and [server] public_url")
    try:
        body = response.json()
        ready = body["ready"]
    except (ValueError, KeyError, TypeError):
        return _fail(f"{url} answered {response.status_code}, not as markco does",
                     "point the edge at the daemon (MARKCO_UPSTREAM = [server] listen) and "
                     "[server] public_url at the edge")
    if not ready:
        return _fail(f"{url}: markco is not ready (waiting for "
                     f"{', '.join(body.get('waiting_for') or ['?'])})",
                     "see the daemon's log for the service it waits for")
    if public.startswith("https://"):
        if "strict-transport-security" not in response.headers:
            return Outcome("warn", f"{url} answers, but without the edge's "
                                   "Strict-Transport-Security header",
                           "serve the public URL through the repository's Caddyfile")
        return _pass(f"{url} answers through the TLS edge, ready")
    return Outcome("warn", f"{url} answers, ready, over plain http (no TLS edge)",
                   "for more than one machine, put Caddy in front (docs/deploy.md)")


CHECKS: tuple[Check, ...] = (
    Check("config", "the configuration file is valid", check_config, needs=()),
    Check("storage", "the database is reachable and migrated", check_storage),
    Check("engine", "each container engine answers", check_engines),
    Check("images", "the workload images are on the engine", check_images,
          needs=("config", "engine")),
    Check("criu", "CRIU dumps and restores a process holding a socket", check_criu),
    Check("firewall", "markco's firewall rules are in effect", check_firewall),
    Check("isolation", "users' workloads are isolated from each other", check_isolation),
    Check("disk", "there is disk space for snapshots", check_disk),
    Check("edge", "the public URL answers as a ready markco", check_edge),
)


@dataclass(frozen=True)
class Result:
    """One line of the report."""

    name: str
    title: str
    status: Status
    detail: str
    fix: str
    seconds: float


async def diagnose(config_path: Path, *, skip: Sequence[str] = (),
                   firewall_netns: str | None = None) -> list[Result]:
    """Run every check in order; a check whose prerequisite failed is skipped."""
    doctor = Doctor(config_path, firewall_netns=firewall_netns)
    results: list[Result] = []
    for check in CHECKS:
        started = time.monotonic()
        blocked = [n for n in check.needs if doctor.results.get(n, _pass("")).status == "fail"
                   or n in skip]
        if check.name in skip:
            outcomes: list[tuple[str, Outcome]] = [("", _skip("skipped (--skip)"))]
        elif blocked:
            outcomes = [("", _skip(f"needs {', '.join(blocked)}"))]
        else:
            try:
                found = await check.run(doctor)
            except Exception as exc:  # a check must never hide the others: report it
                found = _fail(f"the check itself failed: {type(exc).__name__}: {exc}",
                              "report this with the detail above")
            outcomes = found if isinstance(found, list) else [("", found)]
        worst = _worst([o for _, o in outcomes])
        doctor.results[check.name] = worst
        took = round(time.monotonic() - started, 3)
        for item, outcome in outcomes:
            title = f"{check.title} ({item})" if item else check.title
            results.append(Result(check.name, title, outcome.status, outcome.detail,
                                  outcome.fix, took))
    return results


def _worst(outcomes: Sequence[Outcome]) -> Outcome:
    order = {"fail": 0, "warn": 1, "pass": 2, "skip": 3}
    return min(outcomes, key=lambda o: order[o.status]) if outcomes else _skip("nothing")


MARKS = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def report(results: Sequence[Result], *, as_json: bool) -> str:
    """The report as text (one line per check, then what to do) or JSON."""
    ok = not any(r.status == "fail" for r in results)
    if as_json:
        return json.dumps({"ok": ok, "checks": [asdict(r) for r in results]}, indent=2)
    lines = []
    for r in results:
        lines.append(f"[{MARKS[r.status]}] {r.name:<9} {r.title}: {r.detail}")
        if r.fix and r.status in ("fail", "warn"):
            lines.append(f"{'':17}-> {r.fix}")
    failed = [r.name for r in results if r.status == "fail"]
    lines.append("all checks passed" if ok else f"failed: {', '.join(dict.fromkeys(failed))}")
    return "\n".join(lines)


def main(config_path: Path, *, as_json: bool = False, skip: Sequence[str] = (),
         firewall_netns: str | None = None) -> int:
    """Run the checks, print the report; 0 when nothing failed, else 1."""
    unknown = [name for name in skip if name not in {c.name for c in CHECKS}]
    if unknown:
        print(f"markco doctor: no check named {', '.join(unknown)} (checks: "
              f"{', '.join(c.name for c in CHECKS)})", file=sys.stderr)
        return 2
    results = trio.run(lambda: diagnose(config_path, skip=skip, firewall_netns=firewall_netns))
    print(report(results, as_json=as_json))
    return 0 if all(r.status != "fail" for r in results) else 1
