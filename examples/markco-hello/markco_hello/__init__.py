"""markco-hello: the example plugin of the plugin author's guide.

Each function below implements one hook of `markco_trio.hookspecs`. Hooks are plain (sync)
functions; anything long-running is returned as a `ServiceSpec` for the daemon to supervise.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import trio
from quart import Blueprint

from markco_trio import CliCommand, ConfigSection, EventObserver, ServiceSpec, hookimpl


@dataclass(frozen=True)
class HelloOptions:
    """`[hello]`: the greeting to use. Unknown keys and wrong types are refused by the core."""

    greeting: str = "Hello"


class _Seen:
    """Events observed so far (a plugin keeps its state on objects it owns, per daemon)."""

    def __init__(self) -> None:
        self.count = 0


@hookimpl
def markco_config_sections() -> list[ConfigSection]:
    """Declare the `[hello]` section."""
    return [ConfigSection("hello", HelloOptions, "the example plugin's greeting")]


@hookimpl
def markco_web_routes(ctx: Any) -> list[Blueprint]:
    """`GET /hello` answers with the configured greeting."""
    bp = Blueprint("hello", __name__)
    options: HelloOptions = ctx.config.section("hello")
    seen = ctx.extras.setdefault("hello.seen", _Seen())

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
    seen = ctx.extras.setdefault("hello.seen", _Seen())

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
