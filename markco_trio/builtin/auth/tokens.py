"""Secret tokens: how they are made, hashed, and read from a Cookie header.

Every secret markco hands out (session cookies, API tokens, console login links, invite
links) is 256 random bits, base64url; only its SHA-256 hash is ever stored, so a copy of the
database lets nobody in. API tokens carry a `mkt_` prefix so secret scanners (and people)
recognise them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

TOKEN_BYTES = 32  # 256 bits
API_TOKEN_PREFIX = "mkt_"

# What a token can look like: anything else is refused before it costs a hash or a lookup.
_TOKEN_SHAPE = re.compile(r"^(mkt_)?[A-Za-z0-9_-]{43}$")


def new_token() -> str:
    """A fresh 256-bit secret, base64url without padding (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_api_token() -> str:
    """A fresh API token: `mkt_` and 256 random bits."""
    return API_TOKEN_PREFIX + new_token()


def hash_token(token: str) -> str:
    """The SHA-256 hex digest stored in place of `token`."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def form_token(session_token: str) -> str:
    """The token markco's own forms carry for this session (`csrf`): derived from the session
    secret, which no page can read (HttpOnly), so only a page markco rendered for this session
    knows it. Changes with each login; nothing to store."""
    digest = hmac.new(session_token.encode("ascii", "replace"), b"markco form",
                      hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def well_formed(token: str) -> bool:
    """Whether `token` has the shape of a token markco issued."""
    return bool(_TOKEN_SHAPE.match(token))


def cookie_value(header: str | None, name: str) -> str | None:
    """The first value of cookie `name` in a `Cookie` request header, or None.

    A deliberately small parser (the proxy calls it for every request): `name=value` pairs
    separated by `;`, optional double quotes around the value. The first occurrence wins —
    browsers send the most specific (longest path) cookie first.
    """
    if not header:
        return None
    prefix = name + "="
    for part in header.split(";"):
        part = part.strip()
        if part.startswith(prefix):
            value = part[len(prefix):]
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value or None
    return None
