"""Per-user editor origins (`[server] editor_domain`, JupyterHub's `subdomain_host`).

With `editor_domain = "u.example.org"`, user X's editor is served on its own origin,
`https://X.u.example.org/u/X/` (same BASE_PATH as on a single origin: the editor contract does
not change), with a cookie of its own. The main session cookie never goes there (it is host-only
on the main origin). The handshake that gives the editor origin its cookie:

1. A navigation to `X.u.example.org` without a valid editor cookie is redirected by the front
   door to `<public_url>/editor-auth?user=X&next=<path>`.
2. That route (here, on the main origin) checks the main session and the one authorisation
   decision for entering X's editor (owner, an editor grant, an admin's audited entry), then
   mints a ONE-TIME code — 256 random bits, kept only as its hash, usable once, for
   `CODE_SECONDS`, bound to X and to the session — and redirects (`Referrer-Policy:
   no-referrer`) to `https://X.u.example.org/_markco/editor-auth?code=...&next=...`.
3. The front door there redeems the code (`EditorOrigins.redeem`) for an editor token, sets
   it as the editor cookie (host-only, HttpOnly, SameSite=Lax, Secure on https) and redirects
   to `next` — a path on that origin only.

The editor token is a CHILD of the main session: every request with it is decided on the parent
session's principal (`SessionAuthority.principal_for_editor_cookie`), so logout, logout
everywhere, revoking the session and an admin entry's expiry end it too, and the tunnel guard
closes its WebSockets. Codes and editor tokens live in the daemon's memory only (hashed): a
restart forgets them, and the next navigation simply repeats the handshake (the main session is
in storage). A deployment of several daemons behind one name would need them shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

from .tokens import hash_token, new_token, well_formed

__all__ = ["CODE_SECONDS", "EditorOrigins", "editor_origin", "safe_next"]

CODE_SECONDS: Final = 30.0  # a code is redeemed by the redirect right after it is minted
MAX_CODES: Final = 10_000
MAX_TOKENS: Final = 100_000
EDITOR_COOKIE: Final = "markco_editor"


@dataclass(frozen=True, slots=True)
class _Code:
    parent: str  # the main session's token hash
    owner: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class EditorToken:
    """What an editor cookie stands for: the main session (by hash) and the editor's owner."""

    parent: str
    owner: str
    expires_at: float


def safe_next(value: str | None) -> str | None:
    """`value` if it is a path on the same origin (`/...`, not `//`, no backslash, no scheme,
    no control characters), else None."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(c) < 0x21 or ord(c) >= 0x7F for c in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme or parts.netloc:
        return None
    return value


def editor_origin(public_url: str, domain: str, owner: str) -> str:
    """`scheme://<owner>.<domain>[:port]`, with the public URL's scheme and port."""
    parts = urlsplit(public_url)
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{owner.lower()}.{domain}{port}"


def exchange_url(public_url: str, domain: str, owner: str, code: str, next_path: str) -> str:
    """Where the main origin sends the browser with a fresh code."""
    return (f"{editor_origin(public_url, domain, owner)}/_markco/editor-auth?"
            f"code={quote(code, safe='')}&next={quote(next_path, safe='')}")


class EditorOrigins:
    """The one-time codes and editor tokens of one daemon (see the module doc)."""

    def __init__(self) -> None:
        self._codes: dict[str, _Code] = {}
        self._tokens: dict[str, EditorToken] = {}
        self._children: dict[str, set[str]] = {}  # parent session hash -> editor token hashes

    def mint(self, parent: str, owner: str, now: float) -> str:
        """A one-time code for the session `parent` (a token hash) entering `owner`'s editor."""
        if len(self._codes) >= MAX_CODES:
            self._codes = {k: c for k, c in self._codes.items() if c.expires_at > now}
            if len(self._codes) >= MAX_CODES:
                self._codes.pop(next(iter(self._codes)))
        code = new_token()
        self._codes[hash_token(code)] = _Code(parent, owner, now + CODE_SECONDS)
        return code

    def redeem(self, code: str, owner: str, now: float, max_age: float) -> str | None:
        """An editor token for `code` (used up whatever the outcome), or None when it is
        unknown, used, expired or for another owner's editor."""
        if not well_formed(code):
            return None
        found = self._codes.pop(hash_token(code), None)
        if found is None or found.expires_at <= now or found.owner != owner:
            return None
        if len(self._tokens) >= MAX_TOKENS:
            self.forget(next(iter(self._tokens)))
        token = new_token()
        key = hash_token(token)
        self._tokens[key] = EditorToken(found.parent, owner, now + max_age)
        self._children.setdefault(found.parent, set()).add(key)
        return token

    def lookup(self, token: str, now: float) -> EditorToken | None:
        """What the editor token stands for, if it is live."""
        if not well_formed(token):
            return None
        key = hash_token(token)
        found = self._tokens.get(key)
        if found is None:
            return None
        if found.expires_at <= now:
            self.forget(key)
            return None
        return found

    def forget(self, key: str) -> None:
        """Drop one editor token by its hash."""
        found = self._tokens.pop(key, None)
        if found is not None:
            children = self._children.get(found.parent)
            if children is not None:
                children.discard(key)
                if not children:
                    del self._children[found.parent]

    def end_session(self, parent: str) -> None:
        """The main session `parent` ended: its codes and editor tokens go with it."""
        for key in self._children.pop(parent, set()):
            self._tokens.pop(key, None)
        for key in [k for k, c in self._codes.items() if c.parent == parent]:
            del self._codes[key]

    def purge(self, now: float) -> None:
        """Forget expired codes and tokens."""
        self._codes = {k: c for k, c in self._codes.items() if c.expires_at > now}
        for key in [k for k, t in self._tokens.items() if t.expires_at <= now]:
            self.forget(key)

    def __len__(self) -> int:
        return len(self._tokens)
