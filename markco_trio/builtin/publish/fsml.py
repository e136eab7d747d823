"""FSML, the file rules of a published project: which files are pages, their URLs and order.

The rules are the original's (reference/services.md, publish-service §2.3-2.4), with its gaps
closed:

- The slug of a name drops one leading numeric prefix (`02-setup` -> `setup`, `1-2-x` -> `2-x`)
  and, for files, the `.md` suffix (any case: `.MD` is a page too).
- Names starting with `_` or `.` are hidden: never a page, never in the navigation. The one
  exception is an `_assets` folder, whose files are served as assets (never rendered).
- A folder lists its pages (files ending in `.md`, except `mrmd.md`, the project's settings)
  and its sub-folders; files come before folders, each in natural order (`2-x` before
  `10-x`, case-insensitive).
- URL segments match slugs case-insensitively; when two entries share a slug, the first in
  order wins, and the shadowed one is left out of the navigation (it cannot be reached).
- A folder serves its `index.md`, else its first page (descending into sub-folders).
- The navigation is titled from each page's title (see `markdown.page_title`), else from the
  slug; folders take their `index.md`'s title. Folders without any page are left out.

Everything here is PURE: it works on a `Folder` snapshot that `disk.scan_tree` builds, so the
rules are tested without touching a disk.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

PAGE_SUFFIX = ".md"
SETTINGS_FILE = "mrmd.md"
INDEX_FILE = "index.md"
ASSETS_DIR = "_assets"

# A path inside a project: the names of its folders and file, from the project's root.
RelPath = tuple[str, ...]

_NUMERIC_PREFIX = re.compile(r"^[0-9]+-")
_DIGITS = re.compile(r"([0-9]+)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# What may stay unescaped in a path segment of a URL we write (RFC 3986 pchar, minus `%`).
_SEGMENT_SAFE = "!$&'()*+,;=:@~"


# ------------------------------------------------------------------------------------ names


def is_hidden(name: str) -> bool:
    """True for names that are never published as pages: `_drafts`, `.git`, `_assets`."""
    return name.startswith(("_", "."))


def is_plain_name(name: str) -> bool:
    """True for a name that can only mean one entry of one folder: not empty, not `.`/`..`
    or any dot-name, no separator, no NUL or control character, valid UTF-8 (a name that is
    not — listed by the OS with surrogate escapes — could not be written in a URL)."""
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        return False
    if not all(ch >= " " and ch != "\x7f" for ch in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_page_file(name: str) -> bool:
    """True for a file name the navigation lists: `*.md` (any case), not hidden, not the
    project's `mrmd.md`, and with a non-empty slug."""
    return (is_plain_name(name) and not is_hidden(name)
            and name.lower().endswith(PAGE_SUFFIX) and name.lower() != SETTINGS_FILE
            and slug_of_file(name) != "")


def is_listed_folder(name: str) -> bool:
    """True for a folder name the navigation may list (not hidden, non-empty slug)."""
    return is_plain_name(name) and not is_hidden(name) and slug_of_folder(name) != ""


def strip_numeric_prefix(name: str) -> str:
    """Drop ONE leading `<digits>-`: `02-setup` -> `setup`, `1-2-x` -> `2-x`, `01_x` stays."""
    return _NUMERIC_PREFIX.sub("", name, count=1)


def slug_of_file(name: str) -> str:
    """The URL segment of a page file: `01-intro.md` -> `intro`."""
    stem = strip_numeric_prefix(name)
    if stem.lower().endswith(PAGE_SUFFIX):
        stem = stem[: -len(PAGE_SUFFIX)]
    return stem


def slug_of_folder(name: str) -> str:
    """The URL segment of a folder: `02-getting-started` -> `getting-started`."""
    return strip_numeric_prefix(name)


def title_from_slug(slug: str) -> str:
    """A readable title when a page has none: `getting-started` -> `Getting Started`."""
    words = [w[:1].upper() + w[1:] for w in slug.split("-") if w]
    return " ".join(words) or slug


def natural_key(name: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """Sort key: digit runs compare as numbers (`2-x` < `10-x`), text case-insensitively;
    the raw name breaks ties so the order never depends on the listing order of the disk."""
    parts: list[tuple[int, int | str]] = []
    for i, run in enumerate(_DIGITS.split(name)):
        if not run:
            continue
        parts.append((0, int(run)) if i % 2 else (1, run.casefold()))
    return tuple(parts), name


def sort_names(names: Iterable[str]) -> tuple[str, ...]:
    """Names in natural order."""
    return tuple(sorted(names, key=natural_key))


def is_index(name: str) -> bool:
    """True for a folder's own page (`index.md`, any case)."""
    return name.lower() == INDEX_FILE


# ---------------------------------------------------------------------------- the snapshot


@dataclass(frozen=True)
class Folder:
    """A folder of a project as the navigation sees it: its listed page files and sub-folders,
    each already in order (`disk.scan_tree` builds it; tests build it by hand)."""

    name: str
    files: tuple[str, ...] = ()
    folders: tuple[Folder, ...] = ()

    @classmethod
    def of(cls, name: str, files: Iterable[str] = (), folders: Iterable[Folder] = ()) -> Folder:
        """A folder from unordered, unfiltered entries: applies the listing rules and order."""
        listed = sort_names(f for f in files if is_page_file(f))
        subs = sorted((f for f in folders if is_listed_folder(f.name)),
                      key=lambda f: natural_key(f.name))
        return cls(name=name, files=listed, folders=tuple(subs))

    def find_file(self, segment: str) -> str | None:
        """The first page file whose slug is `segment` (case-insensitive)."""
        wanted = segment.casefold()
        return next((f for f in self.files if slug_of_file(f).casefold() == wanted), None)

    def find_folder(self, segment: str) -> Folder | None:
        """The first sub-folder whose slug is `segment` (case-insensitive)."""
        wanted = segment.casefold()
        return next((f for f in self.folders if slug_of_folder(f.name).casefold() == wanted),
                    None)

    def index(self) -> str | None:
        """The folder's `index.md`, if it has one."""
        return next((f for f in self.files if is_index(f)), None)


def walk_files(folder: Folder, here: RelPath = ()) -> Iterable[RelPath]:
    """Every listed page of the tree, in reading order (files before folders, depth first)."""
    for name in folder.files:
        yield (*here, name)
    for sub in folder.folders:
        yield from walk_files(sub, (*here, sub.name))


# --------------------------------------------------------------------------------- resolve


def folder_page(folder: Folder, here: RelPath) -> RelPath | None:
    """The page a folder URL shows: its `index.md`, else its first page, searching
    sub-folders in order; None when the folder holds no page at all."""
    index = folder.index()
    if index is not None:
        return (*here, index)
    if folder.files:
        return (*here, folder.files[0])
    for sub in folder.folders:
        found = folder_page(sub, (*here, sub.name))
        if found is not None:
            return found
    return None


def resolve_page(root: Folder, segments: Sequence[str]) -> RelPath | None:
    """The page file that URL `segments` (already split and decoded, empties dropped) names.

    Every segment but the last must be a folder's slug; the last is a page's slug, else a
    folder's (which serves its `folder_page`). Hidden names never match: they are not listed.
    """
    if not segments:
        return folder_page(root, ())
    folder = root
    here: RelPath = ()
    for segment in segments[:-1]:
        sub = folder.find_folder(segment)
        if sub is None:
            return None
        folder, here = sub, (*here, sub.name)
    name = folder.find_file(segments[-1])
    if name is not None:
        return (*here, name)
    sub = folder.find_folder(segments[-1])
    if sub is None:
        return None
    return folder_page(sub, (*here, sub.name))


def resolve_asset(root: Folder, segments: Sequence[str]) -> RelPath | None:
    """The file an asset URL names, or None.

    Two shapes: `<folder slugs>/<file name>` for a non-page file of a listed folder (the
    name is exact: assets are linked, not typed), and `[<folder slugs>/]_assets/<names>` for
    anything under an `_assets` folder. Dot-names are refused everywhere; the disk layer then
    opens the path without following symlinks and serves only regular files.
    """
    if not segments or not all(is_plain_name(s) for s in segments):
        return None
    folder = root
    here: RelPath = ()
    for i, segment in enumerate(segments[:-1]):
        if segment == ASSETS_DIR:
            return (*here, *segments[i:])
        sub = folder.find_folder(segment)
        if sub is None:
            return None
        folder, here = sub, (*here, sub.name)
    name = segments[-1]
    if is_hidden(name) or name.lower().endswith(PAGE_SUFFIX):
        return None  # hidden files stay hidden; pages are served rendered, never raw
    return (*here, name)


# ------------------------------------------------------------------------------------- URLs


def join_url(base: str, parts: Iterable[str]) -> str:
    """`base` followed by `parts`, each percent-encoded as one path segment."""
    return base + "".join("/" + quote(p, safe=_SEGMENT_SAFE) for p in parts)


def page_url_parts(path: RelPath) -> tuple[str, ...]:
    """The canonical URL segments of a page file: slugs, and a folder's `index.md` is the
    folder's own URL."""
    folders = tuple(slug_of_folder(n) for n in path[:-1])
    if is_index(path[-1]):
        return folders
    return (*folders, slug_of_file(path[-1]))


def asset_url_parts(path: RelPath) -> tuple[str, ...]:
    """The URL segments of an asset: folder slugs, then exact names from `_assets` on."""
    parts: list[str] = []
    for i, name in enumerate(path[:-1]):
        if name == ASSETS_DIR:
            return (*parts, *path[i:])
        parts.append(slug_of_folder(name))
    return (*parts, path[-1])


def page_url(root: Folder, base: str, path: RelPath) -> str | None:
    """A URL under `base` that resolves to the page `path`, or None when no URL does (a page
    shadowed by an earlier one with the same slug). Prefers the canonical URL; a folder's
    `index.md` shadowed by a page of the folder's slug is still reachable as `<folder>/index`.
    """
    candidates = [page_url_parts(path)]
    if is_index(path[-1]):
        candidates.append((*candidates[0], slug_of_file(path[-1])))
    for parts in candidates:
        if resolve_page(root, parts) == path:
            return join_url(base, parts)
    return None


def rewrite_link(href: str, page: RelPath, base: str) -> str | None:
    """The URL a relative link written in page `page` should point to, or None to keep `href`.

    Authors link files as they see them on disk (`[next](02-configuration.md)`,
    `![](img/cat.png)`, `../_assets/x.pdf`); the browser would resolve those against the page's
    URL, which differs from its folder on disk (`/@u/p/tutorials` shows `03-tutorials/index.md`).
    So links are resolved against the page's folder on disk here and written out absolute:
    `.md` targets become page URLs, other files asset URLs. Links with a scheme, absolute
    paths, fragments alone, and links climbing out of the project are left as written.
    """
    if not href or href.startswith(("#", "/", "?")) or _SCHEME.match(href):
        return None
    path, hash_, fragment = href.partition("#")
    path, query_mark, query = path.partition("?")
    suffix = (query_mark + query) + (hash_ + fragment)
    target = unquote(path)
    if not target or "\\" in target or "\x00" in target:
        return None
    joined = posixpath.normpath(posixpath.join(*page[:-1], target) if page[:-1] else target)
    if joined == "." or joined.startswith("../") or joined == ".." or joined.startswith("/"):
        if joined == ".":
            return base + suffix
        return None
    parts = tuple(joined.split("/"))
    if parts[-1].lower().endswith(PAGE_SUFFIX):
        return join_url(base, page_url_parts(parts)) + suffix
    if target.endswith("/") or "." not in parts[-1]:
        # A folder (or an extension-less name, which we read as one): slugs all the way.
        return join_url(base, [slug_of_folder(p) for p in parts]) + suffix
    return join_url(base, asset_url_parts(parts)) + suffix


# ------------------------------------------------------------------------------- navigation


@dataclass(frozen=True)
class NavItem:
    """One entry of the navigation: a page, or a folder with its children. `url` is None for
    a folder that has no page of its own (it is shown as a label); `path` is the page file the
    entry shows (None for such a folder)."""

    title: str
    url: str | None
    path: RelPath | None
    children: tuple[NavItem, ...] = ()
    is_folder: bool = False


@dataclass(frozen=True)
class NavLink:
    """A page in reading order, for previous/next links."""

    title: str
    url: str
    path: RelPath


@dataclass(frozen=True)
class Nav:
    """The navigation of a project: its home page, the tree, and the reading order."""

    base: str
    home: RelPath | None
    home_is_index: bool
    items: tuple[NavItem, ...]
    order: tuple[NavLink, ...] = field(default_factory=tuple)

    def neighbours(self, path: RelPath) -> tuple[NavLink | None, NavLink | None]:
        """The pages before and after `path` in reading order."""
        for i, link in enumerate(self.order):
            if link.path == path:
                before = self.order[i - 1] if i > 0 else None
                after = self.order[i + 1] if i + 1 < len(self.order) else None
                return before, after
        return None, None


def page_title_for(path: RelPath, titles: Mapping[RelPath, str | None]) -> str:
    """A page's title: the one found in the file, else made from its slug."""
    found = titles.get(path)
    if found:
        return found
    if is_index(path[-1]) and len(path) > 1:
        return title_from_slug(slug_of_folder(path[-2]))
    return title_from_slug(slug_of_file(path[-1]))


def build_nav(root: Folder, titles: Mapping[RelPath, str | None], base: str) -> Nav:
    """The navigation tree and reading order of a project whose pages live under `base`
    (`/@<username>/<project>`). `titles` maps page paths to the titles found in them."""
    order: list[NavLink] = []
    root_index = root.index()
    home = folder_page(root, ())
    if root_index is not None:
        home_path = (root_index,)
        order.append(NavLink(page_title_for(home_path, titles), base, home_path))

    def folder_items(folder: Folder, here: RelPath) -> tuple[NavItem, ...]:
        items: list[NavItem] = []
        for name in folder.files:
            path = (*here, name)
            if is_index(name):
                continue  # a folder's index is the folder's own entry (or the home page)
            url = page_url(root, base, path)
            if url is None:
                continue
            title = page_title_for(path, titles)
            items.append(NavItem(title=title, url=url, path=path))
            order.append(NavLink(title, url, path))
        for sub in folder.folders:
            item = folder_item(sub, (*here, sub.name))
            if item is not None:
                items.append(item)
        return tuple(items)

    def folder_item(folder: Folder, here: RelPath) -> NavItem | None:
        index = folder.index()
        url: str | None = None
        path: RelPath | None = None
        title = title_from_slug(slug_of_folder(folder.name))
        if index is not None:
            path = (*here, index)
            url = page_url(root, base, path)
            title = page_title_for(path, titles)
            if url is None:
                path = None
            else:
                order.append(NavLink(title, url, path))
        children = folder_items(folder, here)
        if url is None and not children:
            return None
        return NavItem(title=title, url=url, path=path, children=children, is_folder=True)

    items = folder_items(root, ())
    return Nav(base=base, home=home, home_is_index=root_index is not None, items=items,
               order=tuple(order))
