"""The response headers of published pages and assets: security and caching.

- Pages: a strict Content-Security-Policy (nothing but our hashed stylesheet and same-origin
  or `data:` images; no script, no frames, no `<base>`, no forms), `nosniff`, no referrer.
- Assets: their `mediatypes.MediaPolicy` (sandboxing CSP, attachment for scriptable documents).
- Caching: `no-cache` (a browser or cache may keep a copy but must revalidate with the ETag, so
  a project turned private stops being served at once); `private` when the project is not
  public; `Vary: Cookie, Authorization` because who asks decides what is answered.
- Every "not found" carries the SAME headers whatever was missing or forbidden.
"""

from __future__ import annotations

from email.utils import formatdate
from urllib.parse import quote

from .mediatypes import MediaPolicy
from .page import STYLE_SOURCE

PAGE_CSP = ("default-src 'none'; "
            "img-src 'self' data:; "
            "media-src 'self'; "
            f"style-src {STYLE_SOURCE}; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
ASSET_SANDBOX_CSP = ("default-src 'none'; img-src 'self' data:; media-src 'self'; "
                     "style-src 'unsafe-inline'; frame-ancestors 'self'; sandbox")
ASSET_CSP = "default-src 'none'; frame-ancestors 'self'"

_COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Vary": "Cookie, Authorization",
}
HTML_TYPE = "text/html; charset=utf-8"


def _caching(*, public: bool) -> dict[str, str]:
    return {"Cache-Control": "public, no-cache" if public else "private, no-cache"}


def http_date(timestamp: float) -> str:
    """An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for Last-Modified."""
    return formatdate(timestamp, usegmt=True)


def validators(etag: str, last_modified: float) -> dict[str, str]:
    """ETag and Last-Modified."""
    return {"ETag": etag, "Last-Modified": http_date(last_modified)}


def page_headers(*, public: bool) -> dict[str, str]:
    """Headers of a rendered page (and its 304)."""
    return {"Content-Type": HTML_TYPE, "Content-Security-Policy": PAGE_CSP,
            "X-Frame-Options": "DENY", **_COMMON, **_caching(public=public)}


def not_found_headers() -> dict[str, str]:
    """Headers of every "not found": the same for a missing and a forbidden project."""
    return {"Content-Type": HTML_TYPE, "Content-Security-Policy": PAGE_CSP,
            "X-Frame-Options": "DENY", **_COMMON, "Cache-Control": "no-cache"}


def method_not_allowed_headers() -> dict[str, str]:
    """Headers of a 405: only GET and HEAD are served."""
    return {**not_found_headers(), "Allow": "GET, HEAD"}


def content_disposition(disposition: str, filename: str) -> str:
    """`inline`/`attachment` with the file's name, ASCII-safe (RFC 6266 with `filename*`)."""
    ascii_name = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "._- ") else "_"
                         for ch in filename) or "download"
    return (f'{disposition}; filename="{ascii_name}"; '
            f"filename*=UTF-8''{quote(filename, safe='')}")


def asset_headers(policy: MediaPolicy, filename: str, *, public: bool) -> dict[str, str]:
    """Headers of an asset (and its 304)."""
    headers = {
        "Content-Type": policy.content_type,
        "Content-Security-Policy": ASSET_SANDBOX_CSP if policy.sandbox else ASSET_CSP,
        "Content-Disposition": content_disposition(policy.disposition, filename),
        **_COMMON,
        **_caching(public=public),
    }
    if not public:
        # Other sites cannot embed a private asset (cookies are Lax anyway; this is the
        # explicit statement).
        headers["Cross-Origin-Resource-Policy"] = "same-origin"
    return headers
