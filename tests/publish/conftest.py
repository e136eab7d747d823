"""Fixtures of the publish tests.

`site`: a data dir holding users' projects, built like the original's fsml tests (`mrmd.md`,
`01-intro.md`, `02-getting-started/`, `03-tutorials/` with an `index.md`, `_drafts/`,
`_assets/`, `.hidden/`) plus private, unpublished and hostile ones (symlinks out of the tree,
a FIFO, secrets outside every project). Every text a visitor may see holds `PUBLIC-`; every text
no anonymous visitor may see holds `SECRET-`.

The users live in the real SQLite storage (`markco_trio.storage.sqlite`); the app is the real
API app (`markco_trio.api.app.build_app`) with the publish plugin registered through the plugin
manager, exactly as the daemon does it. Until the auth plugin exists, a test-only
`before_request` sets the principal from an `X-Test-As` header.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import trio
from quart import Response, request
from quart_trio import QuartTrio

from markco_trio.api.app import build_app
from markco_trio.api.principal import set_principal
from markco_trio.authz import HeldGrant, Principal
from markco_trio.config import validate_config
from markco_trio.context import PluginContext
from markco_trio.options import SecretResolver
from markco_trio.plugins import make_plugin_manager
from markco_trio.storage.sqlite import SqliteStorage

PLUGINS = (
    ("policy", "markco_trio.builtin.policy"),
    ("sqlite", "markco_trio.builtin.sqlite_storage"),
    ("publish", "markco_trio.builtin.publish"),
)
MAIN_HOST = "main.test"
PUBLIC = "PUBLIC-"
SECRET = "SECRET-"

# A valid 1x1 PNG; bytes after IEND are ignored by decoders, so it can carry a marker.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@dataclass(frozen=True)
class Site:
    """The data dir of the tests and the ids of its users."""

    root: Path
    data_dir: Path
    db: Path
    outside: Path
    ids: Mapping[str, str]

    def projects(self, username: str) -> Path:
        """`<data_dir>/users/<id>/Projects` of a user."""
        return self.data_dir / "users" / self.ids[username] / "Projects"

    def project(self, username: str, name: str) -> Path:
        """One project folder."""
        return self.projects(username) / name


def write(path: Path, content: str | bytes) -> Path:
    """Create `path` (and its folders) with `content`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


PUBLIC_SETTINGS = ("---\ntitle: Alice's Notes\nvisibility: public\n"
                   "description: Notes by Alice PUBLIC-NOTES\n---\n")


async def _create_users(db: Path) -> dict[str, str]:
    async with SqliteStorage(db) as storage:
        await storage.upgrade()
        ids = {}
        for name, admin in (("alice", False), ("bob", False), ("carol", False),
                            ("root", True), ("dora", False)):
            user = await storage.create_user(username=name, email=None, name=None,
                                             avatar_url=None, is_admin=admin, now=1.0)
            ids[name] = user.id
        await storage.update_user(ids["dora"], disabled=True)
    return ids


def build_notes(project: Path) -> None:
    """Alice's public `notes`: the original's fsml fixture, and a few more files."""
    write(project / "mrmd.md", PUBLIC_SETTINGS + "\nThe project's own settings. SECRET-SETTINGS\n")
    write(project / "01-intro.md",
          "# Introduction\n\nWelcome. PUBLIC-INTRO\n\n```python\n# not a heading\n```\n")
    write(project / "10-later.md", "# Later\n\nPUBLIC-LATER\n")
    write(project / "02-getting-started" / "01-installation.md",
          "# Installation Guide\n\nPUBLIC-INSTALL\n\n![a diagram](diagram.png)\n\n"
          "[configure it](02-configuration.md#options)\n")
    write(project / "02-getting-started" / "02-configuration.md",
          "# Configuration\n\n## Options\n\nPUBLIC-CONFIG\n")
    write(project / "02-getting-started" / "diagram.png", PNG + b"PUBLIC-DIAGRAM")
    write(project / "03-tutorials" / "index.md", "# Tutorials\n\nPUBLIC-TUTORIALS\n")
    write(project / "03-tutorials" / "01-basic.md", "# Basic Tutorial\n\nPUBLIC-BASIC\n")
    write(project / "04-reference" / "01-api.md",
          "```python\n# not the title\n```\n\n# API\n\nPUBLIC-API\n")
    write(project / "_drafts" / "upcoming.md", "# Upcoming\n\nSECRET-DRAFT\n")
    write(project / "_lib" / "helper.md", "SECRET-LIB\n")
    write(project / ".hidden" / "secret.md", "# Hidden\n\nSECRET-HIDDEN\n")
    write(project / "_assets" / "logo.png", PNG + b"PUBLIC-LOGO")
    write(project / "_assets" / "sub" / "notes.txt", "PUBLIC-ASSET-TEXT\n")
    write(project / "_assets" / "report.html", "<h1>PUBLIC-REPORT</h1><script>alert(1)</script>")
    write(project / "_assets" / "chart.svg",
          '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script>'
          "<text>PUBLIC-SVG</text></svg>")
    write(project / "_assets" / "app.js", "alert('PUBLIC-JS')\n")
    write(project / "_assets" / ".env", "SECRET-DOTENV\n")
    write(project / "_assets" / "doc.pdf", b"%PDF-1.4 PUBLIC-PDF")
    write(project / "_assets" / "blob.weird", b"PUBLIC-BLOB")
    write(project / "node_modules" / "pkg" / "readme.txt", "PUBLIC-NODE\n")


def build_hostile(site: Site) -> None:
    """Links and files that try to reach out of a project."""
    notes = site.project("alice", "notes")
    os.symlink(site.outside / "secret.md", notes / "leak.md")
    os.symlink(site.outside / "secret.txt", notes / "_assets" / "leak.png")
    os.symlink("../diary", notes / "05-linked")
    os.symlink(site.outside, notes / "06-outside")
    os.symlink(site.outside / "secret.txt", notes / "02-getting-started" / "leak.txt")
    os.mkfifo(notes / "_assets" / "pipe.txt")
    # Carol's whole Projects folder is a link to Alice's: as its "owner" she must see nothing.
    site.projects("carol").parent.mkdir(parents=True, exist_ok=True)
    os.symlink(site.projects("alice"), site.projects("carol"))
    # Bob's project `mirror` is a link to Alice's private diary.
    os.symlink(site.project("alice", "diary"), site.project("bob", "mirror"))


@dataclass(frozen=True)
class UsersDatabase:
    """A database file holding the test users, made once and copied into each site."""

    path: Path
    ids: Mapping[str, str]


def build_site(root: Path, users: UsersDatabase) -> Site:
    """The whole data dir."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    outside = root / "outside"
    db = data_dir / "markco.db"
    shutil.copyfile(users.path, db)
    site = Site(root=root, data_dir=data_dir, db=db, outside=outside, ids=users.ids)

    write(outside / "secret.md", "# Outside\n\nSECRET-OUTSIDE\n")
    write(outside / "secret.txt", "SECRET-OUTSIDE-TXT\n")
    write(outside / "mrmd.md", "---\nvisibility: public\n---\n")
    write(outside / "proj" / "mrmd.md", "---\nvisibility: public\n---\n")
    write(outside / "proj" / "page.md", "# Outside project\n\nSECRET-OUTSIDE-PROJECT\n")
    write(data_dir / "secret.md", "SECRET-DATADIR\n")
    write(data_dir / "users" / site.ids["alice"] / "secret.md", "SECRET-USERDIR\n")
    write(data_dir / "users" / site.ids["alice"] / "mrmd.md", "---\nvisibility: public\n---\n")

    build_notes(site.project("alice", "notes"))
    write(site.project("alice", "diary") / "mrmd.md", "---\nvisibility: private\n---\n")
    write(site.project("alice", "diary") / "01-day.md", "# Dear diary\n\nSECRET-DIARY\n")
    write(site.project("alice", "diary") / "_assets" / "photo.png", PNG + b"SECRET-PHOTO")
    write(site.project("alice", "scratch") / "page.md", "# Scratch\n\nSECRET-SCRATCH\n")
    write(site.project("alice", "typo") / "mrmd.md",
          "# Settings\n\nvisibility: public\n")  # not front matter: stays private
    write(site.project("alice", "typo") / "page.md", "# Typo\n\nSECRET-TYPO\n")
    write(site.project("alice", "_private") / "mrmd.md", "---\nvisibility: public\n---\n")
    write(site.project("alice", "_private") / "page.md", "SECRET-UNDERSCORE-PROJECT\n")
    write(site.project("bob", "garden") / "mrmd.md",
          "---\nvisibility: public\ndescription: PUBLIC-GARDEN-SETTINGS\n---\n")
    write(site.project("bob", "garden") / "index.md", "# Bob's garden\n\nPUBLIC-GARDEN\n")
    write(site.project("dora", "old") / "mrmd.md", "---\nvisibility: public\n---\n")
    write(site.project("dora", "old") / "page.md", "SECRET-DISABLED-USER\n")
    build_hostile(site)
    return site


def principals(site: Site) -> dict[str, Principal]:
    """Who tests can act as (`X-Test-As`): the owner, a viewer of the diary, a stranger, an
    admin."""
    ids = site.ids
    return {
        "alice": Principal(user_id=ids["alice"], username="alice"),
        "bob": Principal(user_id=ids["bob"], username="bob", grants=frozenset(
            {HeldGrant(owner_id=ids["alice"], project="diary", role="viewer")})),
        "carol": Principal(user_id=ids["carol"], username="carol"),
        "root": Principal(user_id=ids["root"], username="root", is_admin=True),
    }


def make_context(site: Site, storage: Any, publish: Mapping[str, Any] | None = None,
                 public_url: str = f"http://{MAIN_HOST}") -> PluginContext:
    """A context as the daemon builds it: the config validated against the loaded plugins."""
    pm = make_plugin_manager(entry_points=False, builtins=PLUGINS)
    raw = {"server": {"data_dir": str(site.data_dir), "public_url": public_url},
           "publish": dict(publish or {})}
    config = validate_config(site.root / "markco.toml", raw, pm, SecretResolver({}))
    return PluginContext(config=config, plugins=pm, storage=storage)


def make_app(ctx: PluginContext, who: Mapping[str, Principal]) -> QuartTrio:
    """The API app with the publish blueprint (through `markco_web_routes`) and a stand-in
    for the auth plugin."""
    app = build_app(ctx)

    @app.before_request
    async def _as_test_principal() -> None:
        set_principal(who.get(request.headers.get("X-Test-As", "")))

    return app


class Browser:
    """Drives the app like a client would, passing the RAW path through (as hypercorn does)
    so percent-encoding reaches the app untouched."""

    def __init__(self, app: QuartTrio, host: str = MAIN_HOST) -> None:
        self.app = app
        self.client = app.test_client()
        self.host = host

    async def request(self, path: str, *, method: str = "GET", as_: str | None = None,
                      headers: Mapping[str, str] | None = None,
                      host: str | None = None) -> Response:
        """Send one request; `path` is the raw request target."""
        sent = {"Host": host or self.host, **(headers or {})}
        if as_ is not None:
            sent["X-Test-As"] = as_
        raw, mark, query = path.partition("?")
        # The test client decodes the path it is given into the scope's `path` (what routing
        # sees) and would read a decoded leading `//` as a host name: hand it the decoded path
        # with one leading slash, re-encoded. The view itself reads the raw path.
        decoded = "/" + unquote(raw).lstrip("/")
        routed = quote(decoded, safe="/@") + mark + query
        response: Response = await self.client.open(
            routed, method=method, headers=sent, json=None,
            scope_base={"raw_path": raw.encode("ascii")})
        return response

    async def get(self, path: str, **kwargs: Any) -> Response:
        """GET `path`."""
        return await self.request(path, **kwargs)

    async def text(self, path: str, **kwargs: Any) -> str:
        """The body of GET `path` as text (any status)."""
        return (await body(await self.request(path, **kwargs))).decode("utf-8", "replace")


async def body(response: Response) -> bytes:
    """A response's body as bytes."""
    data = await response.get_data(as_text=False)
    assert isinstance(data, bytes)
    return data


@pytest.fixture(scope="session")
def users_database(tmp_path_factory: pytest.TempPathFactory) -> UsersDatabase:
    """The users, created once through the real storage (migrations take a moment)."""
    path = tmp_path_factory.mktemp("users") / "markco.db"
    ids = trio.run(_create_users, path)
    return UsersDatabase(path=path, ids=ids)


@pytest.fixture
def site(tmp_path: Path, users_database: UsersDatabase) -> Site:
    """A fresh data dir with users and projects."""
    return build_site(tmp_path, users_database)


@pytest.fixture
async def storage(site: Site) -> AsyncIterator[SqliteStorage]:
    """The real SQLite storage holding the site's users."""
    async with SqliteStorage(site.db) as opened:
        yield opened


BrowserFactory = Callable[..., Awaitable[Browser]]


@pytest.fixture
def make_browser(site: Site, storage: SqliteStorage) -> BrowserFactory:
    """Build a browser on an app configured with `[publish]` options (`client_host`: the Host
    header the browser sends)."""

    async def factory(*, client_host: str = MAIN_HOST, **publish: Any) -> Browser:
        ctx = make_context(site, storage, publish)
        return Browser(make_app(ctx, principals(site)), host=client_host)

    return factory


@pytest.fixture
async def browser(make_browser: BrowserFactory) -> Browser:
    """A browser on the app with default `[publish]` options."""
    return await make_browser()
