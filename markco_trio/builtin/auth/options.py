"""`[auth]`: sessions, the console login link, sign-up and admins (validated by the core)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

_COOKIE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_ADMIN_ENTRY = re.compile(r"^[a-z0-9_-]+:(id:[0-9]+|[A-Za-z0-9][A-Za-z0-9._-]*)$")


@dataclass(frozen=True)
class AuthOptions:
    """`[auth]` (every key optional).

    Sessions
    - `session_ttl_days` (14): a session unused this long expires. Each use pushes the expiry
      forward (sliding renewal), at most once per `renew_after_seconds` (3600) per session,
      and the writes are batched every `touch_flush_seconds` (30): the hot path never writes.
    - `session_max_days` (90): no session outlives this, however busy (then log in again).
    - `revocation_poll_seconds` (1): how often the daemon checks the storage's revocation
      epoch, so a revocation made elsewhere (the CLI, another daemon) ends cached sessions.
    - `cache_ttl_seconds` (300): a cached principal is re-read after this long even without
      a revocation (it picks up promotions, new grants and profile changes).
    - `cookie_name` ("markco_session"): on an https public URL it is sent as
      `__Host-<name>` (Secure, Path=/, no Domain), so no sibling host can set or shadow it.
    - `trusted_origins` ([]): origins besides the public URL's whose pages may POST to markco
      (state-changing requests must carry an Origin or Referer from one of them).

    Console login link (the embedded default, DESIGN §5.1)
    - `login_link` ("auto"): print a one-time login link for `login_link_user` at start —
      "auto" does so only when no OAuth provider is configured; "always"; "never".
    - `login_link_user` ("admin"): created (as an admin) when absent.
    - `login_link_minutes` (10): how long a link stays valid; it works once.

    Sign-up and admins
    - `invite_only` (false): a new person may sign up only through an invite link (or when
      listed in `admins`). Existing users log in as usual. Who may log in at all is the
      provider's allow-list (`[oauth.github] allowed_users / allowed_orgs`).
    - `admins` ([]): identities promoted to admin when they log in, as `"github:login"` or,
      safer since logins can be renamed, `"github:id:583231"`. The first user is NOT made an
      admin automatically. Removing an entry does not demote anyone: use
      `markco admins remove USER`.
    - `admin_entry_minutes` (30): how long an admin's explicit entry into another user's
      editor lasts (it is recorded in the event log).

    Invites and logins in flight
    - `invite_days` (7) and `invite_max_uses` (1): defaults for new invites;
      `invite_max_days` (90) caps any invite's life.
    - `pending_login_minutes` (10): how long an OAuth login may take between the redirect to
      the provider and the callback.

    Login attempts
    - `login_attempts_per_minute` (10) and `login_attempts_burst` (20): each client address
      may try console login links and OAuth callbacks `burst` times at once, then this many
      times a minute; beyond that it gets 429 with `Retry-After`.
    """

    session_ttl_days: float = 14.0
    session_max_days: float = 90.0
    renew_after_seconds: float = 3600.0
    touch_flush_seconds: float = 30.0
    revocation_poll_seconds: float = 1.0
    cache_ttl_seconds: float = 300.0
    cookie_name: str = "markco_session"
    trusted_origins: list[str] = field(default_factory=list)
    login_link: Literal["auto", "always", "never"] = "auto"
    login_link_user: str = "admin"
    login_link_minutes: float = 10.0
    invite_only: bool = False
    admins: list[str] = field(default_factory=list)
    admin_entry_minutes: float = 30.0
    invite_days: float = 7.0
    invite_max_uses: int = 1
    invite_max_days: float = 90.0
    pending_login_minutes: float = 10.0
    login_attempts_per_minute: float = 10.0
    login_attempts_burst: int = 20

    def __post_init__(self) -> None:
        positive = ("session_ttl_days", "session_max_days", "renew_after_seconds",
                    "touch_flush_seconds", "revocation_poll_seconds", "cache_ttl_seconds",
                    "login_link_minutes", "admin_entry_minutes", "invite_days",
                    "invite_max_days", "pending_login_minutes", "login_attempts_per_minute")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be more than 0")
        if self.session_max_days < self.session_ttl_days:
            raise ValueError("session_max_days: must be at least session_ttl_days")
        if self.renew_after_seconds >= self.session_ttl_days * 86400:
            raise ValueError("renew_after_seconds: must be shorter than session_ttl_days")
        if self.invite_days > self.invite_max_days:
            raise ValueError("invite_days: must not exceed invite_max_days")
        if not 1 <= self.login_attempts_burst <= 10_000:
            raise ValueError("login_attempts_burst: between 1 and 10000")
        if not 1 <= self.invite_max_uses <= 1000:
            raise ValueError("invite_max_uses: between 1 and 1000")
        if not _COOKIE_NAME.match(self.cookie_name) or self.cookie_name.startswith("__"):
            raise ValueError("cookie_name: letters, digits and '_' only, not starting with "
                             "'__' (the __Host- prefix is added on https by itself)")
        for origin in self.trusted_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or \
                    parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"trusted_origins: {origin!r} is not an origin "
                                 f"(scheme://host[:port])")
        for entry in self.admins:
            if not _ADMIN_ENTRY.match(entry):
                raise ValueError(f"admins: {entry!r} should look like \"github:login\" or "
                                 f"\"github:id:12345\"")
        if not self.login_link_user.strip():
            raise ValueError("login_link_user: must not be empty")

    @property
    def session_ttl(self) -> float:
        """`session_ttl_days` in seconds."""
        return self.session_ttl_days * 86400

    @property
    def session_max_age(self) -> float:
        """`session_max_days` in seconds."""
        return self.session_max_days * 86400
