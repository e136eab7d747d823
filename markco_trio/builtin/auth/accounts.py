"""From a provider's verified identity to a markco user (reference/services.md §1.7, fixed).

1. By identity: a user already linked to (provider, provider id) logs in as themselves; their
   name and avatar are refreshed when the provider sends them.
2. By VERIFIED email: the identity is linked to the user with that email (case-insensitive).
   The provider contract reports an email only when it verified it, so an identity carrying
   someone else's unverified address is never linked to their account (the original's [SEC]).
3. Otherwise a new user, when sign-up is open, with a unique Linux-safe username.

Races are resolved by the database, not by checking first: a username taken concurrently moves
on to the next candidate; an email or identity linked concurrently sends the login back to
step 1 or 2. Logins of one identity are also serialised in this process, so a double-clicked
callback cannot create two accounts.

Admins are never made implicitly (the first user is not an admin): an identity listed in
`[auth] admins` is promoted when it logs in; `markco admins add/remove` does it by hand.
"""

from __future__ import annotations

import trio

from ...clock import Clock
from ...errors import Conflict, MarkcoError, StorageError
from ...records import User
from ...roles import Storage, UserChanges, VerifiedIdentity
from .options import AuthOptions
from .usernames import MAX_SUFFIX, candidates

_ATTEMPTS = 5


class SignupClosed(MarkcoError):
    """A new person tried to sign up on an invite-only deployment without an invite."""

    http_status = 403


class AccountDisabled(MarkcoError):
    """The user exists but an administrator disabled the account."""

    http_status = 403


def is_configured_admin(options: AuthOptions, identity: VerifiedIdentity) -> bool:
    """Whether `[auth] admins` names this identity (`provider:login` or `provider:id:N`)."""
    for entry in options.admins:
        provider, _, who = entry.partition(":")
        if provider != identity.provider:
            continue
        if who.startswith("id:"):
            if who[3:] == identity.provider_user_id:
                return True
        elif who.casefold() == identity.login.casefold():
            return True
    return False


class Accounts:
    """User upsert for logins (see the module docstring)."""

    def __init__(self, storage: Storage, clock: Clock, options: AuthOptions) -> None:
        self._storage = storage
        self._clock = clock
        self._options = options
        self._busy: dict[tuple[str, str], int] = {}
        self._locks: dict[tuple[str, str], trio.Lock] = {}

    async def login(self, identity: VerifiedIdentity, *,
                    allow_signup: bool) -> tuple[User, bool]:
        """The user `identity` logs in as, and whether it was created now. Raises
        `SignupClosed` or `AccountDisabled`."""
        key = (identity.provider, identity.provider_user_id)
        lock = self._locks.setdefault(key, trio.Lock())
        self._busy[key] = self._busy.get(key, 0) + 1
        try:
            async with lock:
                user, created = await self._login(identity, allow_signup)
        finally:
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]
                del self._locks[key]
        if user.disabled:
            raise AccountDisabled("This account has been disabled by an administrator.")
        return user, created

    async def _login(self, identity: VerifiedIdentity,
                     allow_signup: bool) -> tuple[User, bool]:
        storage, now = self._storage, self._clock.now()
        for _ in range(_ATTEMPTS):
            linked = await storage.find_identity(identity.provider, identity.provider_user_id)
            if linked is not None:
                user = await storage.get_user(linked.user_id)
                if user is not None:
                    return await self._refresh(user, identity), False
            if identity.email:
                user = await storage.get_user_by_email(identity.email)
                if user is not None:
                    try:
                        await self._link(user, identity, now)
                    except Conflict:
                        continue  # linked by a concurrent login: look again
                    return await self._refresh(user, identity), False
            if not allow_signup:
                raise SignupClosed(
                    "This markco is invite-only: ask someone who uses it for an invite link, "
                    "and log in from that link.")
            try:
                user = await self._create(identity, now)
            except Conflict:
                continue  # the email was taken concurrently: link to that user instead
            try:
                await self._link(user, identity, now)
            except Conflict:
                continue  # another process linked this identity first: use its user
            return await self._refresh(user, identity), True
        raise StorageError("could not record this login after several attempts (concurrent "
                           "logins of the same account?); please try again")

    async def _link(self, user: User, identity: VerifiedIdentity, now: float) -> None:
        await self._storage.link_identity(
            user_id=user.id, provider=identity.provider,
            provider_user_id=identity.provider_user_id, email=identity.email,
            email_verified=identity.email is not None, now=now)

    async def _create(self, identity: VerifiedIdentity, now: float) -> User:
        hint = identity.login or (identity.email or "").partition("@")[0]
        for attempt, username in enumerate(candidates(hint)):
            try:
                return await self._storage.create_user(
                    username=username, email=identity.email, name=identity.name or hint,
                    avatar_url=identity.avatar_url, now=now)
            except Conflict:
                if attempt > MAX_SUFFIX + 10:
                    raise
                if await self._storage.get_user_by_username(username) is None:
                    raise  # not the username: the email, taken concurrently
        raise AssertionError("unreachable: candidates() never ends")  # pragma: no cover

    async def _refresh(self, user: User, identity: VerifiedIdentity) -> User:
        changes: UserChanges = {}
        if identity.name and identity.name != user.name:
            changes["name"] = identity.name
        if identity.avatar_url and identity.avatar_url != user.avatar_url:
            changes["avatar_url"] = identity.avatar_url
        if is_configured_admin(self._options, identity) and not user.is_admin:
            changes["is_admin"] = True
        if user.email is None and identity.email:
            changes["email"] = identity.email
        if not changes:
            return user
        try:
            return await self._storage.update_user(user.id, **changes)
        except Conflict:
            changes.pop("email", None)  # that email belongs to someone else: keep ours
            return await self._storage.update_user(user.id, **changes) if changes else user
