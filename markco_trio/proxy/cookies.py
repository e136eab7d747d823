"""Cookies on their way to and from an editor: markco's own never pass, the editor's stay in it.

An editor is opaque code running as its owner (DESIGN §5.3), served on markco's own origin. So:

- Requests: the markco session cookie (and the login-in-flight cookie) are removed from the
  `Cookie` header before it reaches the editor; the user's other cookies stay, in order.
- Responses: a `Set-Cookie` naming one of markco's cookies is dropped, so an editor can neither
  read nor plant (fixate) a session. So is a cookie with an empty name: a browser sends such a
  cookie as its bare value, so `Set-Cookie: =markco_session=X` would arrive as
  `Cookie: markco_session=X`. Every other cookie is kept with its `Path` forced under the
  editor's prefix `/u/<id>/` and its `Domain` removed, so it reaches neither the dashboard nor
  another user's editor nor a sibling host.

Pure functions over bytes; names compare case-insensitively (refusing more than a browser
would confuse is the safe side).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CookieRules", "filter_set_cookie", "strip_request_cookies"]


class CookieRules:
    """Which cookie names are markco's (lower-cased), for the functions below."""

    __slots__ = ("names",)

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(n.strip().lower().encode("latin-1") for n in names)


def _name(pair: bytes) -> bytes:
    return pair.partition(b"=")[0].strip(b" \t").lower()


def strip_request_cookies(values: list[bytes], rules: CookieRules) -> bytes | None:
    """The `Cookie` header value to forward: every `name=value` pair of `values` (the client's
    Cookie header values, in order) except markco's; None when nothing is left."""
    names = rules.names
    kept: list[bytes] = []
    for value in values:
        for pair in value.split(b";"):
            pair = pair.strip(b" \t")
            if pair and _name(pair) not in names:
                kept.append(pair)
    return b"; ".join(kept) if kept else None


def filter_set_cookie(value: bytes, prefix: bytes, rules: CookieRules) -> bytes | None:
    """The `Set-Cookie` value to pass to the browser for an editor under `prefix` (`/u/<id>`,
    no trailing slash), or None to drop it.

    `Domain` goes; `Path` is kept when it already lies under the prefix, otherwise it is put
    under it (`Path=/api` becomes `/u/<id>/api`; no Path, or a relative one, becomes
    `/u/<id>/`). Every other attribute is kept as sent.
    """
    pair, _, attributes = value.partition(b";")
    name, equals, _ = pair.partition(b"=")
    name = name.strip(b" \t").lower()
    if not equals or not name or name in rules.names:
        return None
    out = [pair.strip(b" \t")]
    path = b""
    for attribute in attributes.split(b";"):
        attribute = attribute.strip(b" \t")
        if not attribute:
            continue
        key, _, attr_value = attribute.partition(b"=")
        key = key.strip(b" \t").lower()
        if key == b"domain":
            continue
        if key == b"path":
            path = attr_value.strip(b" \t")
            continue
        out.append(attribute)
    out.append(b"Path=" + _scoped_path(path, prefix))
    return b"; ".join(out)


def _scoped_path(path: bytes, prefix: bytes) -> bytes:
    if path[:1] != b"/":
        return prefix + b"/"
    if path == prefix or path.startswith(prefix + b"/"):
        return path
    return prefix + path
