"""Console login links: the embedded default's way in, and the one token ever put in a URL.

Like Jupyter's token URL: with no OAuth provider configured, the daemon prints at start a
link that logs the admin in (the admin user is created if absent); `markco login-link USER`
prints another for any user. A link works ONCE (consumed by one conditional UPDATE, so two
concurrent clicks cannot both log in), for `[auth] login_link_minutes`; the exchange route
sets the session cookie and redirects to the dashboard, which removes the token from the
address bar, with `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.
"""

from __future__ import annotations

import sys
from typing import TextIO

from ...clock import Clock
from ...errors import Conflict, NotFound
from ...records import User
from ...roles import Storage
from .tokens import hash_token, new_token

LINK_PATH = "/auth/link/"


async def ensure_user(storage: Storage, clock: Clock, username: str, *,
                      admin: bool) -> tuple[User, bool]:
    """The user named `username`, created (an admin when `admin`) if absent; and whether it
    was created now."""
    user = await storage.get_user_by_username(username)
    if user is not None:
        return user, False
    try:
        return await storage.create_user(username=username, email=None, name=username,
                                         avatar_url=None, is_admin=admin,
                                         now=clock.now()), True
    except Conflict:
        # Created concurrently (a second daemon start, the CLI): that one is the user.
        user = await storage.get_user_by_username(username)
        if user is None:
            raise
        return user, False


async def issue_login_link(storage: Storage, clock: Clock, user: User, *, public_url: str,
                           minutes: float) -> str:
    """Store a one-time login link for `user` (its hash only) and return its URL."""
    if user.disabled:
        raise NotFound(f"user {user.username!r} is disabled; enable the account first")
    token = new_token()
    now = clock.now()
    await storage.create_login_link(user_id=user.id, token_hash=hash_token(token),
                                    expires_at=now + minutes * 60, now=now)
    return f"{public_url.rstrip('/')}{LINK_PATH}{token}"


def announce(url: str, username: str, minutes: float, *, out: TextIO | None = None) -> None:
    """Print a login link for a person at the console."""
    stream = out if out is not None else sys.stdout
    print(f"\nmarkco: log in as {username} with this link (it works once, for "
          f"{minutes:g} minutes):\n\n    {url}\n", file=stream, flush=True)
