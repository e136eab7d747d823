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

from .config import Config, load_config
from .context import PluginContext
from .errors import ConfigError, MarkcoError
from .plugins import make_plugin_manager
from .roles import Storage

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every plugin's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="markco", description="markco: self-hosted personal notebook computing.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    pm = make_plugin_manager()
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
        parser = build_parser()
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
