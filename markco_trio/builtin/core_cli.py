"""The core's own CLI commands: run, check-config, db upgrade, plugins, users list.

They are registered through `markco_cli_commands` like any plugin's commands.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import trio

from ..api.conventions import iso_time
from ..cli import add_config_argument, context_for, open_storage
from ..config import Config, load_config
from ..hookspecs import CliCommand, ConfigSection, hookimpl
from ..logs import configure_logging
from ..options import describe_options
from ..plugins import MarkcoPluginManager, describe_plugins, make_plugin_manager


def _run(args: argparse.Namespace) -> int:
    config, pm = load_config(args.config)
    configure_logging(config.logging)

    from ..daemon import Daemon  # imported here: the other commands do not need the daemon

    async def main() -> int:
        return await Daemon(config, pm).run()

    return trio.run(main)


class _SecretsNotSet(Mapping[str, str]):
    """The environment for `check-config --explain`: a secret variable that is not set reads
    as a placeholder (and is remembered), so a file can be explained where its secrets are not
    (an operator's laptop, CI)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.missing: list[str] = []

    def __getitem__(self, key: str) -> str:
        value = self._environ.get(key)
        if value:
            return value
        if key not in self.missing:
            self.missing.append(key)
        return "(not set)"

    def __iter__(self) -> Iterator[str]:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _print_options(title: str, description: str, options: type[Any] | None,
                   note: str = "") -> None:
    print(f"\n[{title}]{note}  {description}".rstrip())
    if options is None:
        print("  (no options)")
        return
    for key, kind, default in describe_options(options):
        print(f"  {key:<28} {kind:<24} {default}")


def _explain(config: Config, pm: MarkcoPluginManager) -> None:
    """Every section this markco knows, with every option: the core's, each role's (and each
    installed provider's, the chosen ones marked), and every plugin-declared one."""
    from ..config import _CORE_SECTIONS, _ROLE_KEYS
    from ..plugins import collect_providers

    for name, cls in _CORE_SECTIONS.items():
        _print_options(name, _first_line(cls.__doc__).split(": ", 1)[-1], cls)
    for role, choice in config.roles.items():
        key, _, default = _ROLE_KEYS[role]
        chosen = ", ".join(choice.names) or "none"
        print(f"\n[{role}]  {key} = ... (installed: "
              f"{', '.join(sorted(collect_providers(pm, role))) or 'none'}; chosen: {chosen}; "
              f"default: {default!r})")
        for name, spec in sorted(collect_providers(pm, role).items()):
            note = "  (in use)" if name in choice.names else ""
            _print_options(f"{role}.{name}", spec.description or
                           _first_line(spec.options.__doc__ if spec.options else ""),
                           spec.options, note)
    for impl in pm.hook.markco_config_sections.get_hookimpls():
        contributed: list[ConfigSection] = impl.function() or []  # type: ignore[assignment]
        for section in contributed:
            _print_options(section.name, section.description or
                           _first_line(section.options.__doc__), section.options,
                           f"  (plugin {impl.plugin_name})")


def _check_config(args: argparse.Namespace) -> int:
    environ = _SecretsNotSet(os.environ) if args.explain else None
    config, pm = load_config(args.file, environ=environ)
    print(f"{args.file}: OK")
    for role, choice in config.roles.items():
        if choice.names:
            print(f"  {role}: {', '.join(choice.names)}")
    print(f"  data dir: {config.data_dir}")
    print(f"  listening on {config.server.listen}, public URL {config.server.public_url}")
    if environ is not None and environ.missing:
        print(f"  secrets not set here (the daemon needs them): {', '.join(environ.missing)}")
    if args.explain:
        _explain(config, pm)
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    ctx = context_for(args.config)
    ctx.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def main() -> int:
        async with open_storage(ctx.config, ctx) as storage:
            applied = await storage.upgrade()
            version = await storage.schema_version()
        if applied:
            print(f"applied schema migrations {', '.join(map(str, applied))}; "
                  f"now at version {version}")
        else:
            print(f"schema is up to date (version {version})")
        return 0

    return trio.run(main)


def _plugins(args: argparse.Namespace) -> int:
    if args.config is not None:
        _, pm = load_config(args.config)
    else:
        pm = make_plugin_manager()
    infos = describe_plugins(pm)
    if args.json:
        print(json.dumps([info.__dict__ | {"hooks": list(info.hooks)} for info in infos],
                         indent=2))
        return 0
    for info in infos:
        version = f" {info.version}" if info.version else ""
        print(f"{info.name}{version}  [{info.source}]")
        for hook in info.hooks:
            print(f"    {hook}")
    return 0


def _users(args: argparse.Namespace) -> int:
    ctx = context_for(args.config)

    async def main() -> int:
        async with open_storage(ctx.config, ctx) as storage:
            if await storage.schema_version() == 0:
                print("markco: the database is empty; run `markco db upgrade` or start the "
                      "daemon first", file=sys.stderr)
                return 1
            cursor = None
            rows = []
            while True:
                page = await storage.list_users(cursor=cursor, limit=200)
                rows.extend(page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
        if args.json:
            print(json.dumps([{"id": u.id, "username": u.username, "email": u.email,
                               "plan": u.plan, "is_admin": u.is_admin,
                               "created_at": iso_time(u.created_at)} for u in rows], indent=2))
            return 0
        if not rows:
            print("no users yet")
        for u in rows:
            flags = " admin" if u.is_admin else ""
            print(f"{u.id}  {u.username:<32} {u.email or '-':<32} {u.plan}{flags}")
        return 0

    return trio.run(main)


def _doctor(args: argparse.Namespace) -> int:
    from ..doctor import main  # the checks import their plugins only when configured

    return main(args.config, as_json=args.json, skip=args.skip, firewall_netns=args.netns)


def _configure_doctor(p: argparse.ArgumentParser) -> None:
    from ..doctor import CHECKS

    add_config_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--skip", action="append", default=[], metavar="CHECK",
                   help=f"do not run this check (one of: {', '.join(c.name for c in CHECKS)}); "
                        "repeatable")
    p.add_argument("--firewall-netns", dest="netns", metavar="NETNS",
                   help="look for the firewall in this network namespace (where the engine's "
                        "networks are, when it is not the host's)")


def _configure_run(p: argparse.ArgumentParser) -> None:
    add_config_argument(p)


def _configure_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=__import__("pathlib").Path, help="the TOML file to check")
    p.add_argument("--explain", action="store_true",
                   help="list every section and option (works without the secrets set)")


def _configure_db(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = sub.add_parser("upgrade", help="apply pending schema migrations")
    add_config_argument(up)
    up.set_defaults(_run=_db_upgrade)


def _configure_plugins(p: argparse.ArgumentParser) -> None:
    add_config_argument(p, required=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _configure_users(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="list the users")
    add_config_argument(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(_run=_users)


def _needs_action(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires one
    return 2


@hookimpl
def markco_cli_commands() -> list[CliCommand]:
    """The core's commands."""
    return [
        CliCommand("run", "run the daemon", _configure_run, _run),
        CliCommand("check-config", "validate a configuration file", _configure_check,
                   _check_config),
        CliCommand("db", "database maintenance (db upgrade)", _configure_db, _needs_action),
        CliCommand("doctor", "check this machine: config, storage, engines, CRIU, firewall, "
                   "disk, the public URL", _configure_doctor, _doctor),
        CliCommand("plugins", "list loaded plugins and the hooks each implements",
                   _configure_plugins, _plugins),
        CliCommand("users", "user administration (users list)", _configure_users,
                   _needs_action),
    ]
