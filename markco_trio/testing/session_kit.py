"""The `SessionAuthority` contract kit, and `MemorySessions`, its in-memory reference.

A session authority's author subclasses `SessionAuthorityContract` in their own tests and
supplies three fixtures: `sessions`, their provider entered; `issue`, an object with the
`Issuer` methods (open a session and an API token for a new user, revoke them) on that
provider; and `public_origin`, the origin markco's pages are served from:

    from markco_trio.testing.session_kit import SessionAuthorityContract

    class TestMySessions(SessionAuthorityContract):
        @pytest.fixture
        async def sessions(self):
            async with MySessions(...) as provider:
                yield provider
        ...

The kit checks what the front door and the event stream rely on
(`markco_trio.roles.SessionAuthority`): nobody without a cookie; a live session's cookie and a
live API token give their user's `Principal`; tampered, unknown and wrongly-kinded credentials
give nobody; a revocation moves `revision`, wakes `wait_revision` and takes the principal
away (from memory as well: the `*_nowait` answer is never a stale principal); a hostile
`Origin` is refused and markco's own accepted.

`MemorySessions` passes the kit: sessions and API tokens held in memory, for tests and
examples (never for a deployment: it forgets everything on restart).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any, Protocol

import pytest
import trio
import trio.testing

from ..authz import Principal
from ..hookspecs import ProviderSpec
from ..roles import SessionAuthority

SESSION_PREFIX = "mks_"
TOKEN_PREFIX = "mkt_"


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    """The value of cookie `name` in a `Cookie` header, None when absent or malformed."""
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


@dataclass
class MemorySessions:
    """A session authority in memory. `open_session`/`open_token` issue credentials for a
    principal; `revoke` ends one. `origins`: the origins of markco's pages."""

    origins: frozenset[str] = frozenset({"http://127.0.0.1"})
    cookie_name: str = "markco_session"
    login_path: str = "/login"
    _principals: dict[str, Principal] = field(default_factory=dict)
    _revision: int = 0
    _changed: trio.Event = field(default_factory=trio.Event)

    async def __aenter__(self) -> MemorySessions:
        return self

    async def __aexit__(self, *exc_info: object) -> bool | None:
        return None

    # ------------------------------------------------------------- issuing (not the role)

    def open_session(self, principal: Principal) -> str:
        """A new session token (the cookie's value) for `principal`."""
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        self._principals[token] = principal
        return token

    def open_token(self, principal: Principal) -> str:
        """A new API token for `principal`."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self._principals[token] = principal
        return token

    def revoke(self, token: str) -> bool:
        """End a session or an API token; False when it was not live."""
        gone = self._principals.pop(token, None) is not None
        if gone:
            self._revision += 1
            self._changed.set()
            self._changed = trio.Event()
        return gone

    # ----------------------------------------------------------------------- the role

    def principal_for_cookie_nowait(self, cookie_header: str | None, *,
                                    entering: str | None = None) -> Any:
        """Always answered from memory: a `Principal` or None."""
        token = cookie_value(cookie_header, self.cookie_name)
        return self._principal(token, SESSION_PREFIX)

    async def principal_for_cookie(self, cookie_header: str | None, *,
                                   entering: str | None = None) -> Principal | None:
        """As `principal_for_cookie_nowait`."""
        await trio.lowlevel.checkpoint()
        return self._principal(cookie_value(cookie_header, self.cookie_name), SESSION_PREFIX)

    async def principal_for_session(self, token: str) -> Principal | None:
        """The principal of a session token."""
        await trio.lowlevel.checkpoint()
        return self._principal(token, SESSION_PREFIX)

    async def principal_for_token(self, token: str) -> Principal | None:
        """The principal of an API token (never of a session token)."""
        await trio.lowlevel.checkpoint()
        return self._principal(token, TOKEN_PREFIX)

    def origin_allowed(self, origin: str | None, referer: str | None = None) -> bool:
        """`Origin` (else the `Referer`'s origin) is one of `origins`."""
        if origin is None and referer:
            scheme, _, rest = referer.partition("://")
            origin = f"{scheme}://{rest.split('/', 1)[0]}" if rest else None
        return origin is not None and origin in self.origins

    @property
    def revision(self) -> int:
        """Moves on every revocation."""
        return self._revision

    async def wait_revision(self, seen: int) -> int:
        """Wait until `revision` is not `seen`."""
        while self._revision == seen:
            await self._changed.wait()
        return self._revision

    def _principal(self, token: str | None, prefix: str) -> Principal | None:
        if token is None or not token.startswith(prefix):
            return None
        return self._principals.get(token)


def memory_sessions_provider(name: str, make: Any = MemorySessions) -> ProviderSpec:
    """A `ProviderSpec` named `name` whose factory calls `make()` (a `MemorySessions` by
    default), for a plugin's `markco_session_authorities` hook."""
    return ProviderSpec(name, lambda options, ctx: make(),
                        description="sessions in memory (tests and examples)")


# ------------------------------------------------------------------------------- the kit


class Issuer(Protocol):
    """How the kit gets credentials from the provider under test."""

    async def session(self, username: str) -> tuple[str, str]:
        """A live session of a new user `username`: (the session token, as the cookie
        carries it; the user's id)."""
        ...

    async def api_token(self, username: str) -> tuple[str, str]:
        """A live API token of a new user `username`: (the token, the user's id)."""
        ...

    async def revoke(self, token: str) -> None:
        """End the session or API token `token` (a logout, a token revoked)."""
        ...


@dataclass
class MemoryIssuer:
    """The `Issuer` of `MemorySessions`."""

    sessions: MemorySessions
    _count: int = 0

    def _principal(self, username: str) -> Principal:
        self._count += 1
        return Principal(user_id=f"u{self._count}", username=username)

    async def session(self, username: str) -> tuple[str, str]:
        """A session token for a new principal."""
        principal = self._principal(username)
        return self.sessions.open_session(principal), principal.user_id

    async def api_token(self, username: str) -> tuple[str, str]:
        """An API token for a new principal."""
        principal = self._principal(username)
        return self.sessions.open_token(principal), principal.user_id

    async def revoke(self, token: str) -> None:
        """Revoke `token`."""
        self.sessions.revoke(token)


async def _resolved(sessions: SessionAuthority, cookie: str | None) -> Principal | None:
    """The cookie's principal as the front door finds it: from memory, else awaited."""
    answer = sessions.principal_for_cookie_nowait(cookie)
    if answer is None or isinstance(answer, Principal):
        return answer
    return await sessions.principal_for_cookie(cookie)


class SessionAuthorityContract:
    """The tests every `SessionAuthority` provider passes. Subclass it and define the
    `sessions`, `issue` and `public_origin` fixtures."""

    @pytest.fixture
    async def sessions(self) -> AsyncIterator[SessionAuthority]:
        """Override: yield your provider, entered."""
        raise NotImplementedError("define the `sessions` fixture: your provider, entered")
        yield

    @pytest.fixture
    def issue(self, sessions: SessionAuthority) -> Issuer:
        """Override: an `Issuer` on your provider."""
        raise NotImplementedError("define the `issue` fixture: an Issuer on your provider")

    @pytest.fixture
    def public_origin(self) -> str:
        """Override: the origin of markco's pages for your provider."""
        return "http://127.0.0.1"

    def cookie(self, sessions: SessionAuthority, token: str) -> str:
        """A `Cookie` header carrying `token` as the session cookie, among others."""
        return f"theme=dark; {sessions.cookie_name}={token}; other=1"

    async def test_it_is_the_role(self, sessions: SessionAuthority) -> None:
        assert isinstance(sessions, SessionAuthority)
        assert isinstance(sessions.cookie_name, str) and sessions.cookie_name
        assert sessions.login_path.startswith("/")

    @pytest.mark.parametrize("header", [None, "", "theme=dark", "markco_session", "=;=;"])
    async def test_no_session_cookie_is_nobody(self, sessions: SessionAuthority,
                                               header: str | None) -> None:
        assert await _resolved(sessions, header) is None

    async def test_a_live_session_is_its_user(self, sessions: SessionAuthority,
                                              issue: Issuer) -> None:
        token, user_id = await issue.session("alice")
        principal = await _resolved(sessions, self.cookie(sessions, token))
        assert principal is not None and principal.user_id == user_id
        again = await sessions.principal_for_session(token)
        assert again is not None and again.user_id == user_id

    async def test_a_tampered_session_is_nobody(self, sessions: SessionAuthority,
                                                issue: Issuer) -> None:
        token, _ = await issue.session("bob")
        flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
        assert await _resolved(sessions, self.cookie(sessions, flipped)) is None
        assert await _resolved(sessions, self.cookie(sessions, token + "x")) is None

    async def test_a_live_api_token_is_its_user(self, sessions: SessionAuthority,
                                                issue: Issuer) -> None:
        token, user_id = await issue.api_token("carol")
        principal = await sessions.principal_for_token(token)
        assert principal is not None and principal.user_id == user_id

    async def test_credentials_of_one_kind_are_not_the_other(self, sessions: SessionAuthority,
                                                             issue: Issuer) -> None:
        session, _ = await issue.session("dave")
        token, _ = await issue.api_token("erin")
        assert await sessions.principal_for_token(session) is None
        assert await _resolved(sessions, self.cookie(sessions, token)) is None

    async def test_a_revoked_session_is_nobody_and_moves_the_revision(
            self, sessions: SessionAuthority, issue: Issuer) -> None:
        token, _ = await issue.session("frank")
        cookie = self.cookie(sessions, token)
        assert await _resolved(sessions, cookie) is not None  # now cached, if it caches
        seen = sessions.revision
        moved: list[int] = []
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def wait() -> None:
                    moved.append(await sessions.wait_revision(seen))

                nursery.start_soon(wait)
                await trio.testing.wait_all_tasks_blocked()  # the waiter waits: now revoke
                await issue.revoke(token)
        assert moved and moved[0] != seen
        assert await _resolved(sessions, cookie) is None

    async def test_a_revoked_api_token_is_nobody(self, sessions: SessionAuthority,
                                                 issue: Issuer) -> None:
        token, _ = await issue.api_token("grace")
        assert await sessions.principal_for_token(token) is not None
        await issue.revoke(token)
        assert await sessions.principal_for_token(token) is None

    @pytest.mark.parametrize("hostile", ["https://evil.example", "null",
                                         "http://127.0.0.1.evil.example"])
    async def test_a_foreign_origin_is_refused(self, sessions: SessionAuthority,
                                               hostile: str) -> None:
        assert sessions.origin_allowed(hostile) is False

    async def test_markcos_own_origin_is_accepted(self, sessions: SessionAuthority,
                                                  public_origin: str) -> None:
        assert sessions.origin_allowed(public_origin) is True
