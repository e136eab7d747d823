"""The publisher: from a parsed request and who asks, to what to answer (no HTTP here).

For `/@<username>/<project>/<segments>`:
1. the user (storage) and the project's `mrmd.md` settings (disk);
2. the ONE authorisation decision (`project.read` on the project, public or not): a denial
   looks exactly like a missing user, project or page;
3. the project's tree and titles (cached, revalidated by folder mtimes and page stamps);
4. the page (rendered, cached by its ETag) or the asset the segments name.

The ETag of a page is computed from what it depends on — its file's stamp, the navigation,
the project settings — so a conditional request is answered 304 without reading or rendering
anything. Filesystem and rendering work runs in worker threads behind a limiter of its own, so
a burst of page views neither blocks the event loop nor starves storage of threads.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

import trio

from ...authz import Action, Principal, Resource
from ...records import User
from . import disk
from .cache import LruCache
from .disk import Scan, ScanLimits, Stamp
from .frontmatter import ProjectSettings, read_settings
from .fsml import (
    SETTINGS_FILE,
    Nav,
    RelPath,
    build_nav,
    is_plain_name,
    join_url,
    resolve_asset,
    resolve_page,
    rewrite_link,
)
from .markdown import page_title, render_markdown
from .mediatypes import MediaPolicy, media_policy
from .options import PublishOptions
from .page import PageView, ProjectCard, render_page, render_projects
from .request_path import PublishPath

# Bump when the HTML a page renders to changes shape, so old ETags stop matching.
RENDER_VERSION = "1"
MAX_SETTINGS_BYTES = 64 * 1024
MAX_USER_PAGE_PROJECTS = 200
DISK_THREADS = 8

T = TypeVar("T")
FindUser = Callable[[str], Awaitable[User | None]]
Authorize = Callable[[Principal | None, str, Resource], bool]


@dataclass(frozen=True)
class Located:
    """What answers a request: validators (checked before any body is produced), how to
    serve it, and `produce()` for the body (None if it vanished meanwhile)."""

    kind: Literal["page", "asset", "projects"]
    etag: str
    last_modified: float
    public: bool
    produce: Callable[[], Awaitable[bytes | None]]
    filename: str = ""
    media: MediaPolicy | None = None
    size: int | None = None  # known without reading (assets)


@dataclass(frozen=True)
class _Probe:
    settings: ProjectSettings
    settings_stamp: Stamp
    identity: tuple[int, int]


@dataclass(frozen=True)
class _ProjectState:
    identity: tuple[int, int]
    scan: Scan
    stamps: Mapping[RelPath, Stamp]
    titles: Mapping[RelPath, tuple[Stamp, str | None]]
    nav: Nav
    nav_digest: str
    last_modified: float
    title_reads: int = 0  # how many page files this refresh read for titles


@dataclass(frozen=True)
class ProjectListing:
    """One of a user's projects as its owner's dashboard lists it: `path` is its published
    URL's path (`/@<username>/<project>`), `public` whether anyone may read it (otherwise its
    owner, its viewers and administrators)."""

    name: str
    title: str
    path: str
    public: bool


@dataclass
class PublisherStatistics:
    """Counters for metrics and tests: pages rendered, project trees scanned, page files read
    for their titles."""

    renders: int = 0
    scans: int = 0
    title_reads: int = 0


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _etag(*parts: object) -> str:
    return f'"{_digest(*parts)}"'


# ------------------------------------------------------------ blocking work (worker threads)


def _probe(data_dir: Path, user_id: str, project: str) -> _Probe | None:
    try:
        with disk.open_project(data_dir, user_id, project) as fd:
            found = disk.read_file(fd, (SETTINGS_FILE,), MAX_SETTINGS_BYTES)
            identity = disk.folder_identity(fd)
    except OSError:
        return None
    if found is None:
        return None  # no mrmd.md: not a publishable project (and so: not found)
    data, stamp = found
    return _Probe(read_settings(data.decode("utf-8", "replace")), stamp, identity)


def _refresh(data_dir: Path, user_id: str, project: str, identity: tuple[int, int],
             previous: _ProjectState | None, limits: ScanLimits, base: str,
             max_page_bytes: int) -> _ProjectState | None:
    try:
        with disk.open_project(data_dir, user_id, project) as fd:
            if disk.folder_identity(fd) != identity:
                return None  # the folder was replaced since it was authorised: start over
            scan, stamps = disk.refresh(fd, previous.scan if previous else None, limits)
            if previous is not None and scan is previous.scan and stamps == previous.stamps:
                return previous
            titles: dict[RelPath, tuple[Stamp, str | None]] = {}
            reads = 0
            for path, stamp in stamps.items():
                known = previous.titles.get(path) if previous is not None else None
                if known is not None and known[0] == stamp:
                    titles[path] = known
                    continue
                reads += 1
                found = disk.read_file(fd, path, max_page_bytes)
                title = page_title(found[0].decode("utf-8", "replace")) if found else None
                titles[path] = (stamp, title)
    except OSError:
        return None
    nav = build_nav(scan.tree, {p: t for p, (_, t) in titles.items()}, base)
    newest = max([*scan.folder_mtimes.values(), *(s.mtime_ns for s in stamps.values())])
    return _ProjectState(identity=identity, scan=scan, stamps=stamps, titles=titles, nav=nav,
                         nav_digest=_digest(nav, scan.truncated),
                         last_modified=newest / 1e9, title_reads=reads)


def _render(data_dir: Path, user_id: str, project: str, identity: tuple[int, int],
            path: RelPath, max_page_bytes: int, view: PageView) -> bytes | None:
    try:
        with disk.open_project(data_dir, user_id, project) as fd:
            if disk.folder_identity(fd) != identity:
                return None
            found = disk.read_file(fd, path, max_page_bytes)
    except OSError:
        return None
    if found is None:
        return None
    rendered = render_markdown(found[0].decode("utf-8", "replace"),
                               rewrite_link=partial(rewrite_link, page=path, base=view.base))
    return render_page(replace(view, title=rendered.title or view.title,
                               body_html=rendered.html))


def _stat_asset(data_dir: Path, user_id: str, project: str, identity: tuple[int, int],
                path: RelPath) -> Stamp | None:
    try:
        with disk.open_project(data_dir, user_id, project) as fd:
            if disk.folder_identity(fd) != identity:
                return None
            return disk.stat_file(fd, path)
    except OSError:
        return None


def _read_asset(data_dir: Path, user_id: str, project: str, identity: tuple[int, int],
                path: RelPath, max_bytes: int) -> bytes | None:
    try:
        with disk.open_project(data_dir, user_id, project) as fd:
            if disk.folder_identity(fd) != identity:
                return None
            found = disk.read_file(fd, path, max_bytes)
    except OSError:
        return None
    return found[0] if found is not None else None


def _probe_all(data_dir: Path, user_id: str, limits: ScanLimits,
               ) -> list[tuple[str, _Probe]]:
    found = []
    for name in disk.list_projects(data_dir, user_id, limits)[:MAX_USER_PAGE_PROJECTS]:
        probe = _probe(data_dir, user_id, name)
        if probe is not None:
            found.append((name, probe))
    return found


# ------------------------------------------------------------------------------ publisher


class Publisher:
    """Answers publish requests. One per app; its caches live as long as it does."""

    def __init__(self, *, data_dir: Path, find_user: FindUser, authorize: Authorize,
                 options: PublishOptions, log: logging.Logger | None = None) -> None:
        self._data_dir = data_dir
        self._find_user = find_user
        self._authorize = authorize
        self._options = options
        self._log = log or logging.getLogger("markco.publish")
        self._limits = ScanLimits(max_depth=options.max_depth, max_entries=options.max_entries)
        self._projects: LruCache[tuple[str, str, str], _ProjectState] = \
            LruCache(options.cache_projects)
        self._pages: LruCache[str, bytes] = LruCache(
            max_entries=max(1, options.cache_bytes // 1024), max_weight=options.cache_bytes,
            weigh=len)
        self._limiter: trio.CapacityLimiter | None = None
        self.stats = PublisherStatistics()

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(DISK_THREADS)
        return await trio.to_thread.run_sync(partial(fn, *args), limiter=self._limiter)

    async def _user(self, username: str) -> User | None:
        user = await self._find_user(username)
        if user is None or user.disabled or not is_plain_name(user.id):
            return None
        return user

    def _may_read(self, principal: Principal | None, user: User, project: str,
                  settings: ProjectSettings) -> bool:
        resource = Resource(kind="project", owner_id=user.id, project=project,
                            public=settings.public)
        return self._authorize(principal, Action.PROJECT_READ, resource)

    async def locate(self, target: PublishPath, principal: Principal | None) -> Located | None:
        """What answers `target` for `principal`, or None: "not found", which is also the
        answer when the principal may not read the project."""
        user = await self._user(target.username)
        if user is None:
            return None
        if target.project is None:
            return await self._locate_projects(user, principal)
        project = target.project
        probe = await self._run(_probe, self._data_dir, user.id, project)
        if probe is None or not self._may_read(principal, user, project, probe.settings):
            return None
        base = join_url(f"/@{user.username}", [project])
        state = await self._state(user, project, base, probe)
        if state is None:
            return None
        page = resolve_page(state.scan.tree, target.segments)
        if page is not None and page in state.stamps:
            return self._locate_page(user, project, base, probe, state, page)
        asset = resolve_asset(state.scan.tree, target.segments)
        if asset is not None:
            return await self._locate_asset(user, project, probe, asset)
        return None

    @property
    def user_pages(self) -> bool:
        """Whether `/@<username>` lists a user's projects (`[publish] user_pages`)."""
        return self._options.user_pages

    async def projects_of(self, user: User) -> list[ProjectListing]:
        """Every project of `user` (a folder with a `mrmd.md`), public or not, for its
        owner: the caller shows this to `user` only."""
        probes = await self._run(_probe_all, self._data_dir, user.id, self._limits)
        return [ProjectListing(name=name, title=p.settings.title or name,
                               path=join_url(f"/@{user.username}", [name]),
                               public=p.settings.public) for name, p in probes]

    async def canonical_project(self, target: PublishPath,
                                principal: Principal | None) -> str | None:
        """For a project name that matches no folder `principal` may read exactly, the one
        readable folder whose name is equal ignoring case (None when there is none, or more
        than one: which was meant cannot be told). Only readable folders count, so the answer
        says nothing about the others."""
        if target.project is None:
            return None
        user = await self._user(target.username)
        if user is None:
            return None
        wanted = target.project.casefold()
        names = await self._run(disk.list_projects, self._data_dir, user.id, self._limits)
        readable = []
        for name in (n for n in names if n.casefold() == wanted and n != target.project):
            probe = await self._run(_probe, self._data_dir, user.id, name)
            if probe is not None and self._may_read(principal, user, name, probe.settings):
                readable.append(name)
        return readable[0] if len(readable) == 1 else None

    async def _state(self, user: User, project: str, base: str,
                     probe: _Probe) -> _ProjectState | None:
        key = (user.id, user.username, project)
        previous = self._projects.get(key)
        if previous is not None and previous.identity != probe.identity:
            previous = None
        state = await self._run(_refresh, self._data_dir, user.id, project, probe.identity,
                                previous, self._limits, base, self._options.max_page_bytes)
        if state is None:
            self._projects.discard(key)
            return None
        if state is not previous:
            self.stats.title_reads += state.title_reads
            if previous is None or state.scan is not previous.scan:
                self.stats.scans += 1
            if state.scan.truncated:
                self._log.warning("publish: %s/%s is larger than max_entries/max_depth allow; "
                                  "some pages are not listed", user.username, project)
            self._projects.put(key, state)
        return state

    def _locate_page(self, user: User, project: str, base: str, probe: _Probe,
                     state: _ProjectState, page: RelPath) -> Located:
        settings = probe.settings
        stamp = state.stamps[page]
        etag = _etag(RENDER_VERSION, "page", user.id, base, page, stamp, state.nav_digest,
                     settings, probe.settings_stamp)
        last_modified = max(state.last_modified, probe.settings_stamp.mtime_ns / 1e9)
        view = PageView(
            site_title=settings.title or project, owner=user.username, base=base,
            title=state.titles.get(page, (stamp, None))[1] or settings.title or project,
            body_html="", nav=state.nav, active=page, lang=settings.lang,
            description=settings.description, indexable=settings.public,
            truncated=state.scan.truncated)

        async def produce() -> bytes | None:
            cached = self._pages.get(etag)
            if cached is not None:
                return cached
            self.stats.renders += 1
            body = await self._run(_render, self._data_dir, user.id, project, probe.identity,
                                   page, self._options.max_page_bytes, view)
            if body is not None:
                self._pages.put(etag, body)
            return body

        return Located(kind="page", etag=etag, last_modified=last_modified,
                       public=settings.public, produce=produce)

    async def _locate_asset(self, user: User, project: str, probe: _Probe,
                            path: RelPath) -> Located | None:
        stamp = await self._run(_stat_asset, self._data_dir, user.id, project, probe.identity,
                                path)
        max_bytes = self._options.max_asset_bytes
        if stamp is None or stamp.size > max_bytes:
            return None

        async def produce() -> bytes | None:
            return await self._run(_read_asset, self._data_dir, user.id, project,
                                   probe.identity, path, max_bytes)

        return Located(kind="asset", etag=_etag("asset", user.id, project, path, stamp),
                       last_modified=stamp.mtime_ns / 1e9, public=probe.settings.public,
                       produce=produce, filename=path[-1], media=media_policy(path[-1]),
                       size=stamp.size)

    async def _locate_projects(self, user: User, principal: Principal | None,
                               ) -> Located | None:
        if not self._options.user_pages:
            return None
        probes = await self._run(_probe_all, self._data_dir, user.id, self._limits)
        readable = [(name, p) for name, p in probes
                    if self._may_read(principal, user, name, p.settings)]
        if not readable:
            return None  # the same "not found" as an unknown user: usernames cannot be probed
        cards = [ProjectCard(title=p.settings.title or name,
                             url=join_url(f"/@{user.username}", [name]),
                             description=p.settings.description) for name, p in readable]
        body = render_projects(user.username, cards)
        public = all(p.settings.public for _, p in readable)
        newest = max(p.settings_stamp.mtime_ns for _, p in readable) / 1e9

        async def produce() -> bytes | None:
            return body

        return Located(kind="projects", etag=_etag(RENDER_VERSION, body), last_modified=newest,
                       public=public, produce=produce)
