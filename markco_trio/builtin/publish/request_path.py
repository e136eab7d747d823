"""From a request's raw path to what it asks for: `/@<username>/<project>[/<segments>]`.

The RAW path (as the client sent it, still percent-encoded) is split on `/` first and each
segment decoded ONCE afterwards, so an encoded slash (`%2F`, `%2f`) or backslash is data inside
one segment, never a separator — and since no file name can hold one, such a segment matches
nothing. Nothing is decoded twice: `%252e%252e` is the literal name `%2e%2e`. Segments that are
`.`/`..`, hold NUL or control characters, or are not valid UTF-8 make the whole path invalid.
(The original let Express decode `%2F` inside `:user` and `:project` and joined them into a
filesystem path: a traversal out of the users directory.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

# The auth service's usernames: [a-z0-9._-], starting with a letter, digit or `_`, at most 32.
# Compared case-insensitively (storage keeps them lower-case).
_USERNAME = re.compile(r"^[a-z0-9_][a-z0-9._-]{0,31}$")
MAX_PROJECT_BYTES = 255  # one file name on Linux filesystems
MAX_SEGMENTS = 32


@dataclass(frozen=True)
class PublishPath:
    """A valid publish request: the owner's username (lower-case), the project's folder name
    (case as on disk) and the page or asset segments (decoded, empties dropped)."""

    username: str
    project: str | None
    segments: tuple[str, ...] = ()


def _decode(segment: str) -> str | None:
    try:
        text = unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text in (".", "..") or "/" in text or "\\" in text:
        return None
    if any(ch < " " or ch == "\x7f" for ch in text):
        return None
    return text


def valid_username(name: str) -> bool:
    """True for a name the auth service could have given a user."""
    return _USERNAME.match(name) is not None


def valid_project_name(name: str) -> bool:
    """True for a project folder name we are willing to look up: one visible file name."""
    return (bool(name) and not name.startswith((".", "_"))
            and len(name.encode("utf-8")) <= MAX_PROJECT_BYTES)


def parse_publish_path(raw_path: str) -> PublishPath | None:
    """What a raw request path asks for, or None when it is not a valid publish path."""
    if not raw_path.startswith("/"):
        return None
    pieces = raw_path[1:].split("/")
    if len(pieces) > MAX_SEGMENTS + 2:
        return None
    decoded: list[str] = []
    for piece in pieces:
        text = _decode(piece)
        if text is None:
            return None
        decoded.append(text)
    head = decoded[0]
    if not head.startswith("@"):
        return None
    username = head[1:].lower()
    if not valid_username(username):
        return None
    if len(decoded) == 1 or (len(decoded) == 2 and decoded[1] == ""):
        return PublishPath(username=username, project=None)
    project = decoded[1]
    if not valid_project_name(project):
        return None
    return PublishPath(username=username, project=project,
                       segments=tuple(s for s in decoded[2:] if s))
