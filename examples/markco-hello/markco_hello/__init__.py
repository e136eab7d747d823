"""markco-hello: the example plugin of the plugin author's guide.

Each function below implements one hook of `markco_trio.hookspecs`. Hooks are plain (sync)
functions; anything long-running is returned as a `ServiceSpec` for the daemon to supervise.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import trio
from quart import Blueprint

from markco_trio import CliCommand, ConfigSection, EventObserver, ServiceSpec, hookimpl

# The major version of markco's plugin contract this plugin is written for (checked at load).
MARKCO_CONTRACT = "1"


@dataclass(frozen=True)
class HelloOptions:
    """`[hello]`: the greeting to use. Unknown keys and wrong types are refused by the core."""

    greeting: str = "Hello"


class _Seen:
    """Events observed so far (a plugin keeps its state on objects it owns, per daemon)."""

    def __init__(self) -> None:
        self.count = 0


# One `_Seen` per daemon: a PluginContext hashes by identity, so a plugin keys its own state
# on it (and the state goes away with the daemon).
_SEEN: WeakKeyDictionary[Any, _Seen] = WeakKeyDictionary()


def _seen(ctx: Any) -> _Seen:
    return _SEEN.setdefault(ctx, _Seen())


@hookimpl
def markco_config_sections() -> list[ConfigSection]:
    """Declare the `[hello]` section."""
    return [ConfigSection("hello", HelloOptions, "the example plugin's greeting")]


@hookimpl
def markco_web_routes(ctx: Any) -> list[Blueprint]:
    """`GET /hello` answers with the configured greeting."""
    bp = Blueprint("hello", __name__)
    options: HelloOptions = ctx.config.section("hello")
    seen = _seen(ctx)

    @bp.get("/hello")
    async def hello() -> dict[str, Any]:
        return {"greeting": options.greeting, "events_seen": seen.count}

    return [bp]


@hookimpl
def markco_services(ctx: Any) -> list[ServiceSpec]:
    """A service that announces itself once, then idles until the daemon stops."""

    async def run(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await ctx.events.publish("hello.started", data={"greeting":
                                                         ctx.config.section("hello").greeting})
        task_status.started()
        await trio.sleep_forever()

    return [ServiceSpec("hello", run)]


@hookimpl
def markco_event_observers(ctx: Any) -> list[EventObserver]:
    """Count `hello.*` events (observers get events after they are persisted)."""
    seen = _seen(ctx)

    async def handle(event: Any) -> None:
        seen.count += 1

    return [EventObserver("hello", handle, types=frozenset({"hello.started"}))]


@hookimpl
def markco_cli_commands() -> list[CliCommand]:
    """`markco hello NAME` prints a greeting."""

    def configure(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("name")

    def run(args: argparse.Namespace) -> int:
        print(f"Hello, {args.name}!")
        return 0

    return [CliCommand("hello", "say hello (example plugin)", configure, run)]
