"""API tokens: scoped, hashed, sent as `Authorization: Bearer` (DESIGN §5.1).

Shared by `markco tokens ...` and `/api/v1/tokens`. A token is shown once, when created; only
its hash is stored. Scopes are those of `markco_trio.authz.KNOWN_SCOPES` (`user`, `admin`,
`events:read`); `admin` only for administrators. A token used to create another cannot give
it more than it has itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...authz import KNOWN_SCOPES
from ...clock import Clock
from ...errors import MarkcoError
from ...records import ApiToken, User
from ...roles import Storage
from .tokens import hash_token, new_api_token

MAX_TOKEN_DAYS = 3650


class TokenProblem(MarkcoError):
    """A token request that cannot be honoured; the message says why."""

    http_status = 400

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.http_status = status


def check_scopes(user: User, scopes: Iterable[str], *,
                 creator_scopes: frozenset[str] | None = None) -> tuple[str, ...]:
    """The validated, de-duplicated scopes of a new token for `user` (created by a session
    when `creator_scopes` is None, else by a token holding them)."""
    wanted = tuple(dict.fromkeys(scopes))
    if not wanted:
        raise TokenProblem("give at least one scope (" + ", ".join(sorted(KNOWN_SCOPES)) + ")")
    unknown = [s for s in wanted if s not in KNOWN_SCOPES]
    if unknown:
        raise TokenProblem(f"unknown scope(s) {', '.join(unknown)}; known: "
                           f"{', '.join(sorted(KNOWN_SCOPES))}")
    if "admin" in wanted and not user.is_admin:
        raise TokenProblem(f"only administrators get the 'admin' scope, and "
                           f"{user.username} is not one", status=403)
    if creator_scopes is not None and "admin" not in creator_scopes:
        beyond = [s for s in wanted if s not in creator_scopes]
        if beyond:
            raise TokenProblem(f"a token cannot create a token with more scopes than its own "
                               f"(it lacks {', '.join(beyond)})", status=403)
    return wanted


async def create_api_token(storage: Storage, clock: Clock, user: User, *, name: str,
                           scopes: Iterable[str], expires_days: float | None = None,
                           creator_scopes: frozenset[str] | None = None,
                           ) -> tuple[str, ApiToken]:
    """Create a token for `user`; return it (to show once) and its record."""
    name = name.strip()
    if not name or len(name) > 100:
        raise TokenProblem("name: 1 to 100 characters, to recognise the token later")
    if user.disabled:
        raise TokenProblem(f"user {user.username} is disabled", status=403)
    checked = check_scopes(user, scopes, creator_scopes=creator_scopes)
    if expires_days is not None and not 0 < expires_days <= MAX_TOKEN_DAYS:
        raise TokenProblem(f"expires_days: more than 0 and at most {MAX_TOKEN_DAYS}")
    token = new_api_token()
    now = clock.now()
    record = await storage.create_api_token(
        user_id=user.id, name=name, token_hash=hash_token(token), scopes=checked,
        expires_at=now + expires_days * 86400 if expires_days is not None else None, now=now)
    return token, record
