"""The auth tests' harness: a whole markco daemon (front door, API app, SQLite, the auth plugin)
on a free 127.0.0.1 port, optionally logging in through a fake GitHub, with a manual clock for
expiries. Everything is real HTTP; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import trio

from markco_trio.builtin.auth.authority import SessionAuthority
from markco_trio.builtin.auth.login_links import ensure_user, issue_login_link
from markco_trio.builtin.auth.state import AuthState, state_for
from markco_trio.clock import ManualClock
from markco_trio.config import load_config
from markco_trio.daemon import Daemon
from markco_trio.plugins import BUILTIN_PLUGINS, make_plugin_manager
from markco_trio.records import User
from markco_trio.roles import Storage
from markco_trio.testing.compute_kit import instance_compute_plugin
from markco_trio.testing.fake_github import FakeGitHub, running_fake_github

ROOT = Path(__file__).resolve().parents[2]
GITHUB_PLUGIN_DIR = ROOT / "plugins" / "github_oauth"
SECRET_ENV = "MARKCO_TEST_GITHUB_SECRET"


def free_port() -> int:
    """A port free right now on 127.0.0.1 (the daemon binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


AUTH_PLUGIN = ("auth", "markco_trio.builtin.auth")


def auth_is_builtin(builtins: tuple[tuple[str, str], ...] = BUILTIN_PLUGINS) -> bool:
    """Whether the auth plugin is registered among the built-ins (the lead registers it)."""
    return any(name == AUTH_PLUGIN[0] for name, _ in builtins)


@pytest.fixture(autouse=True)
def auth_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until `auth` is in BUILTIN_PLUGINS, make it a built-in for these tests only, exactly
    as it will be (config modules would not give the CLI its commands)."""
    defaults = make_plugin_manager.__kwdefaults__
    assert defaults is not None
    if not auth_is_builtin(tuple(defaults["builtins"])):
        monkeypatch.setitem(defaults, "builtins", (*defaults["builtins"], AUTH_PLUGIN))


# `python -c` bootstrap for `markco` subprocesses: the same registration as `auth_builtin`.
_CLI_BOOTSTRAP = (
    "import sys\n"
    "import markco_trio.plugins as plugins\n"
    "defaults = plugins.make_plugin_manager.__kwdefaults__\n"
    f"if all(name != {AUTH_PLUGIN[0]!r} for name, _ in defaults['builtins']):\n"
    f"    defaults['builtins'] = (*defaults['builtins'], {AUTH_PLUGIN!r})\n"
    "from markco_trio.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n")


def subprocess_env() -> dict[str, str]:
    """The environment for a `markco` subprocess: both source trees importable."""
    env = dict(os.environ)
    paths = [str(ROOT), str(GITHUB_PLUGIN_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def markco_command(*args: str) -> list[str]:
    """argv of the `markco` CLI run by this interpreter."""
    if auth_is_builtin():
        return [sys.executable, "-m", "markco_trio", *args]
    return [sys.executable, "-c", _CLI_BOOTSTRAP, *args]


async def eventually(check: Callable[[], bool | Awaitable[bool]], *, within: float,
                     step: float = 0.01) -> float:
    """Wait until `check()` (sync or async) is true; return how long it took. Fails the test
    after `within` seconds."""
    started = trio.current_time()
    with trio.fail_after(within):
        while True:
            result = check()
            if result if isinstance(result, bool) else await result:
                return trio.current_time() - started
            await trio.sleep(step)


def query(url: str) -> dict[str, str]:
    """The query parameters of `url`."""
    return dict(parse_qsl(urlsplit(url).query))


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie headers of a response by cookie name (the whole header value)."""
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


@dataclass
class Markco:
    """A running daemon under test."""

    daemon: Daemon
    url: str
    clock: ManualClock
    config_path: Path
    fake: FakeGitHub | None
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def storage(self) -> Storage:
        storage = self.daemon.ctx.storage
        assert storage is not None
        return storage

    @property
    def state(self) -> AuthState:
        state = state_for(self.daemon.ctx)
        assert isinstance(state, AuthState)
        return state

    @property
    def authority(self) -> SessionAuthority:
        authority = self.daemon.ctx.sessions
        assert isinstance(authority, SessionAuthority)
        return authority

    @property
    def db_path(self) -> Path:
        return self.daemon.config.data_dir / "markco.db"

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """A browser-like client (cookie jar, redirects followed by hand)."""
        client = httpx.AsyncClient(base_url=self.url, timeout=10, **kwargs)
        self.clients.append(client)
        return client

    def origin(self) -> dict[str, str]:
        """The headers a markco page's form submission carries."""
        return {"Origin": self.url}

    async def user(self, username: str, *, admin: bool = False) -> User:
        user, _ = await ensure_user(self.storage, self.clock, username, admin=admin)
        return user

    async def login_as(self, username: str, *, admin: bool = False) -> httpx.AsyncClient:
        """A client logged in as `username` (created if absent) through a console login
        link, the same route a person uses."""
        user = await self.user(username, admin=admin)
        link = await issue_login_link(self.storage, self.clock, user, public_url=self.url,
                                      minutes=10)
        client = self.client()
        response = await client.get(link)
        assert response.status_code == 303, response.text
        return client

    async def github_login(self, client: httpx.AsyncClient | None = None,
                           start: str = "/login/github") -> httpx.Response:
        """Walk the GitHub login with the fake's consenting user; return the callback's
        response (not followed)."""
        assert self.fake is not None
        client = client or self.client()
        to_github = await client.get(start)
        assert to_github.status_code == 302, to_github.text
        consent = await client.get(to_github.headers["location"])
        assert consent.status_code == 302, consent.text
        return await client.get(consent.headers["location"])

    async def events(self, kind: str) -> list[Any]:
        return await self.storage.list_events(type=kind, limit=1000)


StartMarkco = Callable[..., Awaitable[Markco]]


@pytest.fixture
async def fake_github() -> AsyncIterator[FakeGitHub]:
    """A fake GitHub with one consenting user, `octocat`."""
    async with running_fake_github() as fake:
        fake.add_user("octocat", email="octocat@example.com", name="The Octocat", id=583231)
        fake.consent_as("octocat")
        yield fake


@pytest.fixture
async def start_markco(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[StartMarkco]:
    """`markco = await start_markco(auth="...", github=fake, github_options="...")`."""
    started: list[Markco] = []

    async def start(*, auth: str = "", github: FakeGitHub | None = None,
                    github_options: str = "", public_url: str | None = None,
                    login_link: str = "never", modules: tuple[str, ...] = (),
                    compute: Any = None, editor_domain: str = "") -> Markco:
        """`compute`: a stand-in for compute, handed to the daemon as the compute control
        provider `stand-in` (`compute_kit.instance_compute_plugin`), so it is `ctx.compute`
        and the editor gate uses it; the compute plugin is then disabled."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        plugin_modules = [*modules, *(["markco_github_oauth.plugin"] if github else [])]
        text = textwrap.dedent(f"""
            [server]
            listen = "127.0.0.1:{port}"
            public_url = "{public_url or url}"
            data_dir = "data"
            editor_domain = "{editor_domain}"
            drain_seconds = 0.5

            [plugins]
            modules = {json.dumps(plugin_modules + (["{module}"] if compute is not None else []))}
            disable = {json.dumps(["compute", "process"] if compute is not None else [])}

            [auth]
            login_link = "{login_link}"
            revocation_poll_seconds = 0.2
            """) + textwrap.dedent(auth)
        environ = dict(os.environ)
        if github is not None:
            options = "\n".join(f'{k} = "{v}"' for k, v in github.provider_options().items())
            text += (f'\n[oauth]\nproviders = ["github"]\n\n[oauth.github]\n{options}\n'
                     f'client_secret_env = "{SECRET_ENV}"\ntimeout_seconds = 2\n'
                     + textwrap.dedent(github_options))
            environ[SECRET_ENV] = github.client_secret
        path = tmp_path / f"markco-{port}.toml"
        with ExitStack() as stack:
            if compute is not None:  # a provider chosen by name, like any other
                module = stack.enter_context(instance_compute_plugin(compute, name="stand-in"))
                text = text.replace("{module}", module) + \
                    '\n[compute_control]\nprovider = "stand-in"\n'
            path.write_text(text)
            config, pm = load_config(path, environ=environ, entry_points=False)
        clock = ManualClock(start=time.time())  # real "now", so the CLI's clock agrees
        daemon = Daemon(config, pm, clock=clock)
        await nursery.start(partial(daemon.run, handle_signals=False))
        # Every critical service (auth's included) has started.
        await eventually(lambda: daemon.readiness.snapshot().ready, within=10)
        markco = Markco(daemon=daemon, url=url, clock=clock, config_path=path, fake=github)
        started.append(markco)
        return markco

    yield start
    for markco in started:
        for client in markco.clients:
            await client.aclose()
