"""Username rules, kept from the original (reference/services.md §1.7): Linux-safe handles.

A username is lower-case `[a-z0-9._-]`, starts with a letter or `_`, and has at most 32
characters, so it can name a Linux account or a directory. Uniqueness is found by trying
`base`, `base_2`, `base_3`, … `base_500` (each truncated to fit 32 characters), then `u_` and
12 random hex digits. The caller creates the user with each candidate in turn and moves on when
storage answers `Conflict`, so two concurrent sign-ups cannot both take a name (the original's
check-then-insert could).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

MAX_LENGTH = 32
MAX_SUFFIX = 500

_UNSAFE = re.compile(r"[^a-z0-9._-]")
_UNDERSCORES = re.compile(r"_+")
_VALID = re.compile(r"^[a-z_][a-z0-9._-]{0,31}$")


def normalise(text: str | None) -> str:
    """The Linux-safe form of `text`: `"Maxime.Rivest"` → `maxime.rivest`, `"42bob"` →
    `u_42bob`, `"__"` → `user`, `"a b"` → `a_b`."""
    name = (text or "").strip().lower()
    name = _UNSAFE.sub("_", name)
    name = _UNDERSCORES.sub("_", name)
    name = name.strip("._-")
    if not name:
        name = "user"
    if not re.match(r"[a-z_]", name):
        name = "u_" + name
    return name[:MAX_LENGTH]


def is_valid(username: str) -> bool:
    """Whether `username` follows the rules (for names typed by an administrator)."""
    return bool(_VALID.match(username))


def candidates(text: str | None) -> Iterator[str]:
    """Usernames to try, in order, for a person known as `text` (a login, an email's local
    part...): the normalised form, then numbered variants, then a random fallback."""
    base = normalise(text)
    yield base
    for n in range(2, MAX_SUFFIX + 1):
        suffix = f"_{n}"
        yield base[:MAX_LENGTH - len(suffix)] + suffix
    while True:
        yield "u_" + secrets.token_hex(6)
