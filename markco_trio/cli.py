"""The `markco` command line.

Sub-commands come from the `markco_cli_commands` hook, the core's own (`run`, `check-config`,
`db upgrade`, `plugins`, `users list`) included, from the built-in `core-cli` plugin. Errors a
person can fix (a bad config key, a missing secret, a daemon already running) print one line
naming the problem and exit 2 or 1; they never print a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from .config import Config, PluginsOptions, load_config, read_config_file
from .context import PluginContext
from .errors import ConfigError, MarkcoError
from .options import parse_options
from .plugins import MarkcoPluginManager, make_plugin_manager
from .roles import Storage

EXIT_CONFIG = 2


def _config_in(argv: Sequence[str]) -> Path | None:
    """The `--config FILE` of a command line, if any (before argparse has run)."""
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return None


def _plugin_manager_for(argv: Sequence[str]) -> MarkcoPluginManager:
    """Plugins as the command's config file would load them (phase one only), so commands of
    plugins listed in `[plugins] modules` exist; the built-ins and entry points otherwise."""
    path = _config_in(argv)
    if path is not None and path.is_file():
        try:
            raw = read_config_file(path)
            table = raw.get("plugins", {})
            options = parse_options(PluginsOptions, table if isinstance(table, dict) else {},
                                    f"{path}: [plugins]")
            return make_plugin_manager(disable=options.disable, modules=options.modules)
        except MarkcoError:
            pass  # the command itself loads the config and reports the error properly
    return make_plugin_manager()


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser with every plugin's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="markco", description="markco: self-hosted personal notebook computing.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    pm = _plugin_manager_for(argv)
    seen: set[str] = set()
    for commands in pm.hook.markco_cli_commands():
        for command in commands or ():
            if command.name in seen:
                raise MarkcoError(f"two plugins define the command 'markco {command.name}'")
            seen.add(command.name)
            p = sub.add_parser(command.name, help=command.help, description=command.help,
                               aliases=list(command.aliases))
            command.configure(p)
            p.set_defaults(_run=command.run)
    return parser


def add_config_argument(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The `--config FILE` option shared by commands that need a configuration."""
    parser.add_argument("--config", "-c", type=Path, required=required, metavar="FILE",
                        help="the TOML configuration file (e.g. config/local.toml)")


@asynccontextmanager
async def open_storage(config: Config, ctx: PluginContext) -> AsyncIterator[Storage]:
    """Open the configured storage without starting the daemon (for CLI commands)."""
    choice = config.roles["storage"]
    async with choice.make(choice.names[0], ctx) as storage:
        yield storage


def context_for(config_path: Path) -> PluginContext:
    """Load and validate a configuration; a context with no providers entered yet."""
    config, pm = load_config(config_path)
    return PluginContext(config=config, plugins=pm)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `markco` script."""
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        return int(args._run(args))
    except ConfigError as exc:
        print(f"markco: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except MarkcoError as exc:
        print(f"markco: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
