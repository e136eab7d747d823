"""The session authority and compute control roles: chosen by name in the config (built-in
by default), entered by the daemon before the front door, reached as `ctx.sessions` and
`ctx.compute`; duplicates and plugins written for another contract are refused. The example
plugin `examples/markco-static-compute` replaces compute: the compute kit passes on it, and a
daemon choosing it (with the in-memory session authority) forwards a real request to the
editor address it names."""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from markco_trio import CONTRACT_VERSION, ComputeControl, Principal, SessionAuthority
from markco_trio.builtin.auth.authority import SessionAuthority as BuiltinSessions
from markco_trio.builtin.compute.service import ComputeService
from markco_trio.config import load_config
from markco_trio.errors import ConfigError, PluginError
from markco_trio.hookspecs import ProviderSpec, hookimpl
from markco_trio.plugins import make_plugin_manager
from markco_trio.testing.compute_kit import ComputeControlContract
from markco_trio.testing.session_kit import MemorySessions, memory_sessions_provider

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "markco-static-compute"))

from markco_static_compute import StaticCompute, StaticOptions  # noqa: E402

Start = Callable[..., Awaitable[tuple[Any, int]]]


@hookimpl
def markco_session_authorities() -> list[ProviderSpec]:
    return [memory_sessions_provider("memory")]


# ---------------------------------------------------------------------- choice by name


def test_an_existing_config_gets_the_builtin_roles(write_config: Callable[[str], Path]) -> None:
    config, _ = load_config(write_config(""), entry_points=False)
    assert config.roles["sessions"].names == ("builtin",)
    assert config.roles["compute_control"].names == ("builtin",)


def test_with_the_auth_plugin_disabled_there_is_no_session_authority(
        write_config: Callable[[str], Path]) -> None:
    config, _ = load_config(write_config('[plugins]\ndisable = ["auth"]\n'),
                            entry_points=False)
    assert config.roles["sessions"].names == ()


def test_an_unknown_provider_is_an_error_naming_the_known_ones(
        write_config: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match=r"\[compute_control\] provider: no compute_control "
                                          r"provider named 'nope' \(known: builtin"):
        load_config(write_config('[compute_control]\nprovider = "nope"\n'), entry_points=False)


def test_a_second_session_authority_of_one_name_is_an_error_naming_both(
        module_plugin: Callable[..., object], write_config: Callable[[str], Path]) -> None:
    @hookimpl
    def markco_session_authorities() -> list[ProviderSpec]:
        return [ProviderSpec("builtin", lambda options, ctx: None)]

    module_plugin("impostor", {"markco_session_authorities": markco_session_authorities})
    with pytest.raises(ConfigError, match="two sessions providers are named 'builtin': from "
                                          "plugins 'auth' and 'impostor'"):
        load_config(write_config('[plugins]\nmodules = ["impostor"]\n'), entry_points=False)


def test_a_second_compute_control_of_one_name_is_an_error_naming_both(
        module_plugin: Callable[..., object], write_config: Callable[[str], Path]) -> None:
    @hookimpl
    def markco_compute_controls() -> list[ProviderSpec]:
        return [ProviderSpec("builtin", lambda options, ctx: None)]

    module_plugin("impostor2", {"markco_compute_controls": markco_compute_controls})
    with pytest.raises(ConfigError, match="two compute_control providers are named 'builtin': "
                                          "from plugins 'compute' and 'impostor2'"):
        load_config(write_config('[plugins]\nmodules = ["impostor2"]\n'), entry_points=False)


def test_bad_provider_options_are_refused_at_load(write_config: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match=r"\[compute_control.static\].*not host:port"):
        load_config(write_config('[plugins]\nmodules = ["markco_static_compute"]\n'
                                 '[compute_control]\nprovider = "static"\n'
                                 '[compute_control.static]\neditor = "nowhere"\n'),
                    entry_points=False)


# ------------------------------------------------------------------- contract version


def test_a_plugin_for_another_major_contract_is_refused_with_one_line(
        module_plugin: Callable[..., object]) -> None:
    module_plugin("from_the_future", {"MARKCO_CONTRACT": "2"})
    with pytest.raises(PluginError) as caught:
        make_plugin_manager(modules=["from_the_future"], entry_points=False)
    message = str(caught.value)
    assert "\n" not in message
    assert "'from_the_future' is written for markco plugin contract 2.x" in message
    assert f"implements contract {CONTRACT_VERSION}" in message


def test_a_plugin_for_this_major_contract_loads(module_plugin: Callable[..., object]) -> None:
    major = CONTRACT_VERSION.split(".")[0]
    module_plugin("of_today", {"MARKCO_CONTRACT": f"{major}.7"})
    pm = make_plugin_manager(modules=["of_today"], entry_points=False)
    assert pm.get_plugin("of_today") is not None


def test_a_malformed_contract_declaration_is_refused(
        module_plugin: Callable[..., object]) -> None:
    module_plugin("confused", {"MARKCO_CONTRACT": "latest"})
    with pytest.raises(PluginError, match="MARKCO_CONTRACT = 'latest' is not a contract version"):
        make_plugin_manager(modules=["confused"], entry_points=False)


@pytest.mark.parametrize("module", ["markco_static_compute", "markco_postgres.plugin",
                                    "markco_docker.plugin", "markco_github_oauth.plugin"])
def test_the_in_repo_plugins_declare_this_contract(module: str) -> None:
    declared = importlib.import_module(module).MARKCO_CONTRACT
    assert declared == CONTRACT_VERSION.split(".")[0]


# ----------------------------------------------------------------- the daemon uses them


async def test_the_builtins_are_entered_as_ctx_fields(daemon: Start) -> None:
    d, _ = await daemon("")
    assert isinstance(d.ctx.sessions, BuiltinSessions)
    assert isinstance(d.ctx.sessions, SessionAuthority)
    assert isinstance(d.ctx.compute, ComputeService)
    assert isinstance(d.ctx.compute, ComputeControl)
    assert not hasattr(d.ctx, "extras")


async def _upstream(nursery: trio.Nursery) -> int:
    """A one-page HTTP server on loopback standing in for an editor running elsewhere."""

    async def serve(stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        body = b"the static editor"
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                              b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                              % (len(body), body))
        await stream.aclose()

    listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_a_daemon_forwards_through_providers_chosen_by_name(
        module_plugin: Callable[..., object], daemon: Start, nursery: trio.Nursery) -> None:
    module_plugin("memory_sessions", {"markco_session_authorities": markco_session_authorities})
    upstream = await _upstream(nursery)
    d, port = await daemon(f"""
        [plugins]
        modules = ["memory_sessions", "markco_static_compute"]
        disable = ["compute", "process"]

        [sessions]
        provider = "memory"

        [compute_control]
        provider = "static"

        [compute_control.static]
        editor = "127.0.0.1:{upstream}"
        start_seconds = 0.05
        """)
    sessions, compute = d.ctx.sessions, d.ctx.compute
    assert isinstance(sessions, MemorySessions) and isinstance(compute, StaticCompute)
    token = sessions.open_session(Principal(user_id="alice1", username="alice"))
    cookie = {"Cookie": f"{sessions.cookie_name}={token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
        anonymous = await client.get("/u/alice1/")
        assert anonymous.status_code == 401
        await compute.ensure_started("alice1", reason="test")
        answer = await client.get("/u/alice1/", headers=cookie)
        assert answer.status_code == 200 and answer.text == "the static editor"
        sessions.revoke(token)
        assert (await client.get("/u/alice1/", headers=cookie)).status_code == 401
        # The auth plugin's pages belong to its own session authority: not mounted.
        assert (await client.get("/login")).status_code == 404


# ------------------------------------------------------------------ the kit on the example


class TestStaticComputeContract(ComputeControlContract):
    @pytest.fixture
    async def compute(self) -> AsyncIterator[ComputeControl]:
        async with StaticCompute(StaticOptions(editor="127.0.0.1:8888",
                                               start_seconds=0.01)) as compute:
            yield compute
