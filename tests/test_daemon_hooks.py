"""The daemon uses every hook of the contract: providers are chosen by name and entered in the
nursery; routes, services, observers, config sections, CLI commands and votes are honoured.

The example plugin `examples/markco-hello` (the plugin author's guide's) supplies the web route,
service, observer, config section and CLI command; an in-test plugin supplies trivial role
providers whose only job is to record that the daemon entered and left them.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from markco_trio.authz import Action, Principal, Resource
from markco_trio.cli import build_parser
from markco_trio.config import load_config
from markco_trio.hookspecs import ProviderSpec, hookimpl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "markco-hello"))

LIFECYCLE: list[str] = []


class _Provider:
    """A provider that only records being entered and left (a test double for a role)."""

    def __init__(self, name: str, options: Any) -> None:
        self.name = name
        self.display_name = name
        self.options = options

    async def __aenter__(self) -> _Provider:
        LIFECYCLE.append(f"enter {self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        LIFECYCLE.append(f"exit {self.name}")


@dataclass(frozen=True)
class _Opts:
    size: int = 1


@hookimpl
def markco_container_backends() -> list[ProviderSpec]:
    return [ProviderSpec("fake-backend", lambda o, ctx: _Provider("fake-backend", o), _Opts)]


@hookimpl
def markco_checkpointers() -> list[ProviderSpec]:
    return [ProviderSpec("fake-checkpointer", lambda o, ctx: _Provider("fake-checkpointer", o))]


@hookimpl
def markco_oauth_providers() -> list[ProviderSpec]:
    return [ProviderSpec("fake-oauth", lambda o, ctx: _Provider("fake-oauth", o))]


@hookimpl
def markco_authorize(principal: Principal | None, action: str, resource: Resource) -> bool | None:
    if resource.kind == "vault":
        return False  # this plugin vetoes everything on vaults, even for owners
    return None


@pytest.fixture
def role_plugin() -> Iterator[None]:
    module = types.ModuleType("fake_roles")
    for name in ("markco_container_backends", "markco_checkpointers", "markco_oauth_providers",
                 "markco_authorize"):
        setattr(module, name, globals()[name])
    sys.modules["fake_roles"] = module
    LIFECYCLE.clear()
    yield
    sys.modules.pop("fake_roles", None)


CONFIG = """
[plugins]
modules = ["fake_roles", "markco_hello"]

[compute]
backend = "fake-backend"

[compute.fake-backend]
size = 3

[checkpoint]
provider = "fake-checkpointer"

[oauth]
providers = ["fake-oauth"]

[hello]
greeting = "Bonjour"
"""

Start = Callable[..., Awaitable[tuple[Any, int]]]


async def test_role_providers_are_chosen_by_name_and_entered(role_plugin: None,
                                                             daemon: Start) -> None:
    d, _ = await daemon(CONFIG)
    assert d.ctx.backend.options.size == 3  # markco_container_backends, [compute.fake-backend]
    assert d.ctx.checkpointer.name == "fake-checkpointer"  # markco_checkpointers
    assert list(d.ctx.oauth) == ["fake-oauth"]  # markco_oauth_providers
    assert LIFECYCLE == ["enter fake-backend", "enter fake-checkpointer", "enter fake-oauth"]


async def test_plugin_routes_services_and_observers_run(role_plugin: None, daemon: Start) -> None:
    d, port = await daemon(CONFIG)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        with trio.fail_after(5):
            while True:  # markco_services published an event; markco_event_observers saw it
                answer = (await client.get("/hello")).json()  # markco_web_routes
                if answer["events_seen"] == 1:
                    break
                await trio.sleep(0.02)
    assert answer["greeting"] == "Bonjour"  # markco_config_sections gave [hello]
    events = await d.ctx.storage.list_events(type="hello.started")
    assert [e.data for e in events] == [{"greeting": "Bonjour"}]


async def test_providers_are_left_when_the_daemon_stops(
        role_plugin: None, write_config: Callable[[str], Path]) -> None:
    from markco_trio.daemon import Daemon

    config, pm = load_config(write_config(CONFIG))
    d = Daemon(config, pm)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: d.run(task_status=task_status,
                                                      handle_signals=False))
        nursery.cancel_scope.cancel()
    assert LIFECYCLE[-3:] == ["exit fake-oauth", "exit fake-checkpointer", "exit fake-backend"]


def test_a_plugin_vote_can_deny_what_the_policy_allows(role_plugin: None,
                                                       write_config: Callable[[str], Path]) -> None:
    from markco_trio.context import PluginContext

    config, pm = load_config(write_config(CONFIG))
    ctx = PluginContext(config=config, plugins=pm)
    owner = Principal(user_id="u1", username="alice")
    # markco_authorize: the policy allows the owner, the test plugin vetoes vaults
    assert ctx.authorize(owner, Action.USER_READ, Resource("user", owner_id="u1"))
    assert not ctx.authorize(owner, Action.USER_READ, Resource("vault", owner_id="u1"))


def test_plugin_cli_commands_join_the_parser() -> None:
    parser = build_parser()  # markco_cli_commands from the built-in core-cli plugin
    args = parser.parse_args(["plugins", "--json"])
    assert args.json is True
    args = parser.parse_args(["db", "upgrade", "--config", "x.toml"])
    assert args._run.__name__ == "_db_upgrade"
