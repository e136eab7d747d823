"""Request paths the front door must read one way only: dot segments, and `/u/<userId>/...`.

Whoever reads a path differently from us decides differently from us: a path that WE match as
`/u/alice/...` must not be `/u/bob/...` to anyone behind us, nor the other way round. So:

- A dot segment (`.` or `..`) anywhere in a path is refused with 400, also when written
  `%2e`, `%2E` or separated by a backslash or an encoded slash (`%2f`, `%5c`): browsers resolve
  dot segments before sending, so only a tool or an attacker sends one, and a server behind us
  might resolve it after we matched.
- A path starting with `//` is refused (some servers read it as a scheme-relative URL).
- `/u/<userId>` must be followed by `/`: `/u/<userId>` alone (with its query) is redirected
  there (308). The user id is taken literally — `[A-Za-z0-9_-]{1,64}`, the ids markco makes;
  anything else (a percent-encoded byte, an encoded slash, an empty segment) is no editor (404),
  never decoded into one.
- What the editor receives is the rest of the path after `/u/<userId>` with runs of slashes
  merged (as nginx does by default) and the query unchanged. A second `/u/<other>/` inside the
  rest is just a path of the first user's editor: only the first segment picks the editor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from markco_trio.proxy.answers import Answer, json_error

__all__ = [
    "PROXY_PREFIX",
    "USER_PREFIX",
    "UserPath",
    "bad_path",
    "split_user_path",
    "valid_user_id",
]

USER_PREFIX: Final = b"/u/"
PROXY_PREFIX: Final = b"/_markco/"  # the front door's own resources (the wait page's script...)
_ID_BYTES: Final = b"-_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MAX_ID: Final = 64
_SEPARATORS: Final = re.compile(rb"%2[fF]|%5[cC]|\\")
_ENCODED_DOT: Final = re.compile(rb"%2[eE]")
_SLASHES: Final = re.compile(rb"//+")

NO_EDITOR: Final = json_error(404, "not_found", "there is no editor here")
_DOT_SEGMENT: Final = json_error(400, "bad_path", "dot segments ('.', '..') are not accepted")
_DOUBLE_SLASH: Final = json_error(400, "bad_path", "a path must not start with '//'")


@dataclass(slots=True)  # not frozen: one is made per request, and frozen __init__ is slower
class UserPath:
    """A request for a user's editor: `/u/<owner>/<rest>?<query>`."""

    owner: str
    prefix: bytes  # b"/u/<owner>", without the trailing slash
    target: bytes  # what the editor is sent: b"/<rest>?<query>"


def valid_user_id(value: bytes) -> bool:
    """Whether `value` has the shape of a markco user id."""
    return 0 < len(value) <= _MAX_ID and not value.translate(None, _ID_BYTES)


def bad_path(path: bytes) -> Answer | None:
    """The 400 answer for a path we refuse to interpret (see the module doc), or None."""
    if path[:2] == b"//":
        return _DOUBLE_SLASH
    # Fast exit for the usual path: a dot segment needs "/." once separators are plain slashes.
    if b"/." not in path and b"%" not in path and b"\\" not in path:
        return None
    plain = _ENCODED_DOT.sub(b".", _SEPARATORS.sub(b"/", path))
    for segment in plain.split(b"/"):
        if segment == b"." or segment == b"..":
            return _DOT_SEGMENT
    return None


def split_user_path(path: bytes, target: bytes) -> UserPath | Answer:
    """Split a path that starts with `/u/` (already checked by `bad_path`)."""
    end = path.find(b"/", 3)
    owner = path[3:] if end < 0 else path[3:end]
    if not valid_user_id(owner):
        return NO_EDITOR
    if end < 0:
        location = path + b"/" + target[len(path) :]
        return Answer(308, b"", b"text/plain", ((b"location", location),))
    rest = path[end:]
    if b"//" in rest:
        rest = _SLASHES.sub(b"/", rest)
    return UserPath(owner.decode("ascii"), path[:end], rest + target[len(path) :])
