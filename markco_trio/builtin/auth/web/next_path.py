"""Where a login returns the browser: `/login?next=<path>`, kept only when it is a path on
this site.

A `next` that could lead anywhere else — `//evil.example`, `/\\evil.example`, `https://...`,
`javascript:`, their percent-encoded forms once the query string is decoded, or anything
holding a control character (CR/LF: a header injection) — is dropped and the login ends on the
dashboard, as it does without one. Paths that would start another login (`/login...`,
`/auth/...`, `/logout...`) are dropped as well: a login that returns to a login is a loop.

The kept path is never decoded again, and redirects put it after the configured public URL
(`AuthState.url`), so even a value that slipped past would stay on this origin.
"""

from __future__ import annotations

from urllib.parse import quote

from ..editor_origin import safe_next

MAX_NEXT_LENGTH = 2048
DEFAULT_NEXT = "/dashboard"
# Paths a login must not return to (each is, or starts, a login or a logout).
_LOOPS = ("/login", "/auth/", "/logout")


def login_next(value: str | None) -> str | None:
    """`value` when it is a safe place to return to after a login, else None."""
    if value is None or len(value) > MAX_NEXT_LENGTH:
        return None
    path = safe_next(value)
    if path is None:
        return None
    bare = path.split("?", 1)[0].split("#", 1)[0].lower()
    if any(bare == loop.rstrip("/") or bare.startswith(loop) for loop in _LOOPS):
        return None
    return path


def next_query(next_path: str | None) -> str:
    """`?next=<encoded path>` for a link that carries a login's destination ('' for none)."""
    return "" if next_path is None else "?next=" + quote(next_path, safe="")


def login_url(next_path: str | None) -> str:
    """The login page's path, returning to `next_path` afterwards when it is safe."""
    return "/login" + next_query(login_next(next_path))
