"""Where a request comes from: the Origin check of state-changing requests (login CSRF and CSRF
defence, DESIGN §5.1) and the refusal of requests initiated by editor pages (§5.2).

A browser sends `Origin` with every POST, PUT, PATCH and DELETE (and `Referer` when a privacy
setting drops Origin). A request that changes something and is not authenticated by an API
token must come from a page of markco itself — the public URL's origin or a configured trusted
origin. `Origin: null` (sandboxed frames, some redirects) and a request with neither header
are refused: SameSite=Lax alone does not cover sibling subdomains or same-site attackers.

Editor pages. On a single origin the pages under `/u/` (users' editors, and whatever notebook
output they render) are same-origin with the dashboard: the browser sends the session cookie
with their requests and `Sec-Fetch-Site: same-origin`, and `Referer` cannot tell them apart (a
page sets its own referrer policy, or `history.pushState`s itself to `/dashboard`). What can:
markco's own pages run no script at all (their CSP forbids it), so every request they make is a
top-level navigation — a link, or a form post. `editor_initiated` therefore refuses any
same-origin or same-site request to markco that is not a top-level navigation (a `fetch`, an
XHR, an iframe, a WebSocket: only a page with script — an editor's — makes those), and the
form posts are held by a form token that only markco's pages carry (`tokens.form_token`).
Browsers without Fetch Metadata fall back to `Referer` (refused when it is under `/u/`).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
EDITOR_PREFIX = "/u/"
UNGUARDED_PREFIX = "/@"  # published pages: public by design, and they load their own assets
_SAME_SITE = frozenset({"same-origin", "same-site"})


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of an absolute URL, lower-cased; None if it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme}://{host}{suffix}".lower()


def allowed_origins(public_url: str, trusted: Iterable[str] = ()) -> frozenset[str]:
    """The origins whose pages may change state: the public URL's and the trusted ones."""
    origins = {origin_of(public_url), *(origin_of(t) for t in trusted)}
    return frozenset(o for o in origins if o is not None)


def same_origin_request(origin: str | None, referer: str | None,
                        allowed: frozenset[str]) -> bool:
    """Whether a request's `Origin` header (or, lacking it, its `Referer`) is one of
    `allowed`."""
    if origin is not None:
        return origin_of(origin) in allowed  # "null" has no origin: refused
    if referer:
        return origin_of(referer) in allowed
    return False


def path_of(url: str | None) -> str | None:
    """The path of an absolute URL, or None."""
    if not url:
        return None
    try:
        return urlsplit(url.strip()).path or "/"
    except ValueError:
        return None


def from_markco_page(site: str | None) -> bool:
    """Whether Fetch Metadata says the request comes from this origin or a sibling host (where
    editor pages live), as opposed to another site, the address bar or a non-browser client."""
    return site is not None and site.lower() in _SAME_SITE


def editor_initiated(path: str, *, site: str | None, mode: str | None, dest: str | None,
                     referer: str | None) -> bool:
    """Whether a request to markco's `path` must be refused as initiated by a page that runs
    script on markco's origin or site (an editor page): see the module doc. Top-level
    navigations (a link to the dashboard) pass; form posts among them are checked by the form
    token. Published pages (`/@`) are not guarded."""
    if path.startswith(UNGUARDED_PREFIX):
        return False
    if site is None:  # no Fetch Metadata: an old browser or not a browser at all
        referer_path = path_of(referer)
        return referer_path is not None and referer_path.startswith(EDITOR_PREFIX)
    if not from_markco_page(site):
        return False
    top_level = (mode or "").lower() == "navigate" and (dest or "").lower() == "document"
    return not top_level
