"""OAuth logins in flight, kept server side between the redirect and the callback.

When a browser is sent to the provider, the `state` and the PKCE verifier stay here, under a
random key that only that browser holds (a short-lived HttpOnly cookie). The callback takes
the entry out — once: a second callback with the same key finds nothing. A callback from
another browser (login CSRF), after the expiry, or after a daemon restart finds nothing
either, and is refused with a page saying to start again.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

from ...clock import Clock
from ...roles import AuthorizationRequest

MAX_PENDING = 10_000  # a flood of abandoned logins evicts the oldest instead of growing


@dataclass(frozen=True)
class PendingLogin:
    """One login in flight: the provider, what it asked us to keep, and where to go after
    (`invite_token`: the invite page the login started from; `next_path`: the path on this
    site the browser was going to, already checked by `web/next_path.py`)."""

    provider: str
    request: AuthorizationRequest
    expires_at: float
    invite_token: str | None = None
    next_path: str | None = None


class PendingLogins:
    """In-memory store of `PendingLogin`s with expiry and single use."""

    def __init__(self, clock: Clock, ttl_seconds: float) -> None:
        self._clock = clock
        self.ttl_seconds = ttl_seconds
        self._entries: OrderedDict[str, PendingLogin] = OrderedDict()

    def add(self, provider: str, request: AuthorizationRequest, *,
            invite_token: str | None = None, next_path: str | None = None) -> str:
        """Keep a login; return the random key for the browser's cookie."""
        if len(self._entries) >= MAX_PENDING:
            self._entries.popitem(last=False)
        key = secrets.token_urlsafe(32)
        self._entries[key] = PendingLogin(provider, request,
                                          self._clock.now() + self.ttl_seconds, invite_token,
                                          next_path)
        return key

    def take(self, key: str | None) -> PendingLogin | None:
        """Remove and return the login of `key` if it is still live."""
        if not key:
            return None
        login = self._entries.pop(key, None)
        if login is None or login.expires_at <= self._clock.now():
            return None
        return login

    def purge(self) -> int:
        """Drop expired logins; return how many."""
        now = self._clock.now()
        expired = [k for k, v in self._entries.items() if v.expires_at <= now]
        for key in expired:
            del self._entries[key]
        return len(expired)

    def __len__(self) -> int:
        return len(self._entries)
