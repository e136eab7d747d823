"""The HTML of published pages: the page shell with its navigation, a user's list of
projects, and the one "not found" page.

No JavaScript: the navigation is plain nested lists (a sidebar on wide screens, after the
content on a phone, reached by a "Contents" link), the active page is marked with
`aria-current="page"`, and previous/next links follow the reading order. The stylesheet is
inlined and allowed by its hash in the Content-Security-Policy (`STYLE_SOURCE`), so no other
style — and no script at all — can run. Every text that comes from a project is escaped here;
the Markdown body arrives already rendered with raw HTML escaped.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from html import escape
from importlib import resources

from .fsml import Nav, NavItem, NavLink, RelPath

STYLE = resources.files(__package__).joinpath("style.css").read_text(encoding="utf-8")
# The CSP source expression that allows exactly the inline stylesheet above.
STYLE_SOURCE = "'sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode() \
    + "'"
SITE_SUFFIX = "markco"


def _e(text: str) -> str:
    return escape(text, quote=True)


def _document(*, lang: str, title: str, body: str, description: str | None = None,
              indexable: bool = True) -> bytes:
    meta = []
    if description:
        meta.append(f'<meta name="description" content="{_e(description)}">')
    if not indexable:
        meta.append('<meta name="robots" content="noindex, nofollow">')
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{_e(lang)}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n" + "".join(m + "\n" for m in meta)
        + f"<style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    ).encode("utf-8")


@dataclass(frozen=True)
class PageView:
    """Everything a published page shows."""

    site_title: str
    owner: str
    base: str
    title: str
    body_html: str
    nav: Nav
    active: RelPath
    lang: str = "en"
    description: str | None = None
    indexable: bool = True
    truncated: bool = False


def _current(active: bool) -> str:
    return ' aria-current="page"' if active else ""


def _nav_items(items: tuple[NavItem, ...], active: RelPath) -> str:
    out = ["<ul>"]
    for item in items:
        if item.url is not None:
            head = (f'<a href="{_e(item.url)}"{_current(item.path == active)}>'
                    f"{_e(item.title)}</a>")
        else:
            head = f'<span class="label">{_e(item.title)}</span>'
        children = _nav_items(item.children, active) if item.children else ""
        out.append(f"<li>{head}{children}</li>")
    out.append("</ul>")
    return "".join(out)


def _pager(before: NavLink | None, after: NavLink | None) -> str:
    if before is None and after is None:
        return ""
    links = []
    if before is not None:
        links.append(f'<a class="prev" rel="prev" href="{_e(before.url)}">'
                     f"<span>Previous</span>{_e(before.title)}</a>")
    if after is not None:
        links.append(f'<a class="next" rel="next" href="{_e(after.url)}">'
                     f"<span>Next</span>{_e(after.title)}</a>")
    return ('<nav class="pager" aria-label="Previous and next pages">'
            + "".join(links) + "</nav>\n")


def render_page(view: PageView) -> bytes:
    """The complete HTML document of one page."""
    home_current = view.nav.home_is_index and view.active == view.nav.home
    before, after = view.nav.neighbours(view.active)
    note = ('<p class="note">Some pages of this project are not listed: it is larger than '
            "this site shows.</p>") if view.truncated else ""
    body = (
        '<a class="skip" href="#content">Skip to content</a>\n'
        '<header class="site">'
        f'<a class="site-title" href="{_e(view.base)}"{_current(home_current)}>'
        f"{_e(view.site_title)}</a>"
        f'<a class="site-owner" href="/@{_e(view.owner)}">@{_e(view.owner)}</a>'
        '<a class="toc-link" href="#nav">Contents</a></header>\n'
        '<div class="layout">\n'
        f'<main id="content"><article class="doc">\n{view.body_html}</article>\n'
        f"{_pager(before, after)}</main>\n"
        '<nav id="nav" class="sidebar" aria-label="Pages"><h2>Contents</h2>'
        f"{_nav_items(view.nav.items, view.active)}{note}</nav>\n"
        "</div>\n"
        f"<footer>Published with {SITE_SUFFIX}</footer>\n"
    )
    title = view.site_title if view.title == view.site_title else \
        f"{view.title} \u2014 {view.site_title}"
    return _document(lang=view.lang, title=title, body=body, description=view.description,
                     indexable=view.indexable)


@dataclass(frozen=True)
class ProjectCard:
    """One project on a user's page."""

    title: str
    url: str
    description: str | None = None


def render_projects(owner: str, projects: list[ProjectCard]) -> bytes:
    """The page at `/@<username>`: the projects the visitor may read (never empty: a user
    with nothing readable gets the "not found" page, so usernames cannot be probed)."""
    items = "".join(
        f'<li><a href="{_e(p.url)}">{_e(p.title)}</a>'
        + (f"<p>{_e(p.description)}</p>" if p.description else "") + "</li>"
        for p in projects)
    listing = f'<ul class="projects">{items}</ul>'
    body = (
        '<header class="site">'
        f'<a class="site-title" href="/@{_e(owner)}" aria-current="page">@{_e(owner)}</a>'
        "</header>\n"
        f'<main id="content"><article class="doc">\n<h1>@{_e(owner)}</h1>\n{listing}\n'
        "</article></main>\n"
        f"<footer>Published with {SITE_SUFFIX}</footer>\n"
    )
    return _document(lang="en", title=f"@{owner}", body=body)


# One body for every "not found": a missing user, project or page, and a project the visitor
# may not read, are indistinguishable byte for byte.
NOT_FOUND_PAGE = _document(
    lang="en", title="Not found", indexable=False,
    body=('<main id="content"><article class="doc">\n<h1>Not found</h1>\n'
          "<p>There is no published page at this address.</p>\n</article></main>\n"))
