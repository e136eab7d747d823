"""The Origin check of state-changing requests (login CSRF and CSRF defence, DESIGN §5.1).

A browser sends `Origin` with every POST, PUT, PATCH and DELETE (and `Referer` when a privacy
setting drops Origin). A request that changes something and is not authenticated by an API
token must come from a page of markco itself — the public URL's origin or a configured trusted
origin. `Origin: null` (sandboxed frames, some redirects) and a request with neither header
are refused: SameSite=Lax alone does not cover sibling subdomains or same-site attackers.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


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
