"""The `OAuthProvider` contract kit: the tests every OAuth login provider must pass.

A provider author subclasses `OAuthProviderContract` in their own tests and supplies two
fixtures — a running fake of their identity provider (anything implementing `IdentityServer`;
markco ships `FakeGitHub`) and a factory for their provider pointed at it:

    from markco_trio.testing.fake_github import running_fake_github
    from markco_trio.testing.oauth_kit import OAuthProviderContract

    class TestGitHubContract(OAuthProviderContract):
        @pytest.fixture
        async def identity_server(self):
            async with running_fake_github() as fake:
                yield fake

        @pytest.fixture
        def provider_factory(self):
            def make(server, *, timeout_seconds):
                return GitHubProvider(GitHubOptions(..., timeout_seconds=timeout_seconds))
            return make

The kit then checks what the auth plugin relies on: a fresh `state` and PKCE S256 verifier per
login, the callback refused on a missing or wrong `state`, a replayed code, a PKCE mismatch, a
denied consent, an unverified email, a provider that is down, slow or unreachable — always with
a `MarkcoError` (a message fit for the login page), never another exception.
"""

from __future__ import annotations

import hashlib
import time
from base64 import urlsafe_b64encode
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, urlsplit

import pytest
import trio

from ..errors import MarkcoError
from ..roles import AuthorizationRequest, OAuthProvider, VerifiedIdentity


class FakeAccount(Protocol):
    """What `IdentityServer.add_user` returns: at least the provider's id of the account."""

    @property
    def provider_user_id(self) -> str: ...


class IdentityServer(Protocol):
    """A fake identity provider the kit can drive (implemented by `FakeGitHub`)."""

    def add_user(self, login: str, *, email: str | None = None,
                 email_verified: bool = True) -> FakeAccount:
        """Create an account whose primary email is `email`."""
        ...

    def consent_as(self, login: str | None) -> None:
        """The account that consents at the next visit; None: the visitor denies consent."""
        ...

    def set_failure(self, mode: Literal["down", "slow"] | None, *,
                    seconds: float = 30.0) -> None:
        """Make the token endpoint and the API fail (`down`) or answer late (`slow`)."""
        ...

    async def visit(self, authorization_url: str) -> dict[str, str]:
        """Act as the browser at the consent screen; return the callback's parameters."""
        ...

    async def stop(self) -> None:
        """Stop listening, so connections are refused."""
        ...


ProviderFactory = Callable[..., Any]  # (server, *, timeout_seconds: float) -> OAuthProvider


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of `verifier`."""
    return urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


class OAuthProviderContract:
    """Base class of an OAuthProvider's contract tests (see the module docstring)."""

    pytestmark = pytest.mark.trio
    redirect_uri = "http://127.0.0.1:3000/auth/callback/contract"
    timeout_seconds = 1.0

    # ------------------------------------------------------------------ fixtures to provide

    @pytest.fixture
    async def identity_server(self) -> Any:
        """Override: yield a running `IdentityServer`."""
        raise NotImplementedError("subclass OAuthProviderContract and provide identity_server")
        yield  # pragma: no cover

    @pytest.fixture
    def provider_factory(self) -> ProviderFactory:
        """Override: return `make(server, *, timeout_seconds) -> provider` (not entered)."""
        raise NotImplementedError("subclass OAuthProviderContract and provide provider_factory")

    @pytest.fixture
    async def provider(self, identity_server: IdentityServer,
                       provider_factory: ProviderFactory) -> Any:
        """The provider under test, entered."""
        async with provider_factory(identity_server,
                                    timeout_seconds=self.timeout_seconds) as provider:
            yield provider

    async def _consent(self, provider: OAuthProvider, server: IdentityServer, login: str,
                       email: str = "person@example.com", verified: bool = True,
                       ) -> tuple[FakeAccount, AuthorizationRequest, dict[str, str]]:
        account = server.add_user(login, email=email, email_verified=verified)
        server.consent_as(login)
        pending = provider.authorization_request(self.redirect_uri)
        params = await server.visit(pending.url)
        return account, pending, params

    # ------------------------------------------------------------------ the contract

    async def test_is_an_oauth_provider(self, provider: OAuthProvider) -> None:
        assert isinstance(provider, OAuthProvider)
        assert provider.name and provider.name == provider.name.strip()
        assert provider.display_name

    async def test_authorization_request_carries_state_and_s256_challenge(
            self, provider: OAuthProvider) -> None:
        pending = provider.authorization_request(self.redirect_uri)
        query = {k: v[0] for k, v in parse_qs(urlsplit(pending.url).query).items()}
        assert query["state"] == pending.state
        assert len(pending.state) >= 32
        assert 43 <= len(pending.code_verifier) <= 128
        assert query["code_challenge_method"] == "S256"
        assert query["code_challenge"] == s256(pending.code_verifier)
        assert query["redirect_uri"] == self.redirect_uri
        assert pending.code_verifier not in pending.url

    async def test_each_authorization_request_is_fresh(self, provider: OAuthProvider) -> None:
        first = provider.authorization_request(self.redirect_uri)
        second = provider.authorization_request(self.redirect_uri)
        assert first.state != second.state
        assert first.code_verifier != second.code_verifier

    async def test_consent_yields_a_verified_identity(
            self, provider: OAuthProvider, identity_server: IdentityServer) -> None:
        account, pending, params = await self._consent(provider, identity_server, "kit-ok",
                                                       email="Kit.OK@example.com")
        identity = await provider.complete(params=params, pending=pending,
                                           redirect_uri=self.redirect_uri)
        assert isinstance(identity, VerifiedIdentity)
        assert identity.provider == provider.name
        assert identity.provider_user_id == account.provider_user_id
        assert identity.login == "kit-ok"
        assert identity.email is not None and identity.email.lower() == "kit.ok@example.com"

    async def test_missing_state_is_refused(
            self, provider: OAuthProvider, identity_server: IdentityServer) -> None:
        _, pending, params = await self._consent(provider, identity_server, "kit-nostate")
        params.pop("state", None)
        with pytest.raises(MarkcoError):
            await provider.complete(params=params, pending=pending,
                                    redirect_uri=self.redirect_uri)

    async def test_wrong_state_is_refused(
            self, provider: OAuthProvider, identity_server: IdentityServer) -> None:
        _, pending, params = await self._consent(provider, identity_server, "kit-badstate")
        other = provider.authorization_request(self.redirect_uri)
        with pytest.raises(MarkcoError):
            await provider.complete(params=params, pending=other,
                                    redirect_uri=self.redirect_uri)

    async def test_denied_consent_is_refused(
            self, provider: OAuthProvider, identity_server: IdentityServer) -> None:
        identity_server.add_user("kit-deny", email="deny@example.com")
        identity_server.consent_as(None)
        pending = provider.authorization_request(self.redirect_uri)
        params = await identity_server.visit(pending.url)
        with pytest.raises(MarkcoError):
            await provider.complete(params=params, pending=pending,
                                    redirect_uri=self.redirect_uri)

    async def test_a_code_works_once(
            self, provider: OAuthProvider, identity_server: IdentityServer) -> None:
        _, pending, params = await self._consent(provider, identity_server, "kit-replay")
        await provider.complete(params=params, pending=pending, redirect_uri=self.redirect_uri)
        with pytest.raises(MarkcoError):
            await provider.complete(params=params, pending=pending,
                                    redirect_uri=self.redirect_uri)

    async def test_pkce_verifier_mismatch_is_refused(
            self, provider: OAuthProvider, identity_server: IdentityServer) -> None:
        _, pending, params = await self._consent(provider, identity_server, "kit-pkce")
        forged = replace(pending, code_verifier=provider.authorization_request(
            self.redirect_uri).code_verifier)
        with pytest.raises(MarkcoError):
            await provider.complete(params=params, pending=forged,
                                    redirect_uri=self.redirect_uri)

    async def test_redirect_uri_must_match_the_authorised_one(
            self, provider: OAuthProvider, identity_server: IdentityServer) -> None:
        _, pending, params = await self._consent(provider, identity_server, "kit-redirect")
        with pytest.raises(MarkcoError):
            await provider.complete(params=params, pending=pending,
                                    redirect_uri=self.redirect_uri + "-elsewhere")

    async def test_unverified_email_is_never_reported(
            self, provider: OAuthProvider, identity_server: IdentityServer) -> None:
        _, pending, params = await self._consent(provider, identity_server, "kit-unverified",
                                                 email="unverified@example.com",
                                                 verified=False)
        try:
            identity = await provider.complete(params=params, pending=pending,
                                               redirect_uri=self.redirect_uri)
        except MarkcoError:
            return  # refusing the login is one right answer
        assert identity.email is None  # reporting no email is the other

    async def test_provider_down_is_a_markco_error(
            self, provider: OAuthProvider, identity_server: IdentityServer) -> None:
        _, pending, params = await self._consent(provider, identity_server, "kit-down")
        identity_server.set_failure("down")
        with pytest.raises(MarkcoError):
            await provider.complete(params=params, pending=pending,
                                    redirect_uri=self.redirect_uri)

    async def test_slow_provider_fails_within_the_timeout(
            self, provider: OAuthProvider, identity_server: IdentityServer) -> None:
        _, pending, params = await self._consent(provider, identity_server, "kit-slow")
        identity_server.set_failure("slow", seconds=30)
        started = time.monotonic()
        with trio.fail_after(15):  # the kit's own guard: a hang fails the test, not CI
            with pytest.raises(MarkcoError):
                await provider.complete(params=params, pending=pending,
                                        redirect_uri=self.redirect_uri)
        assert time.monotonic() - started < 10 * self.timeout_seconds

    async def test_unreachable_provider_is_a_markco_error(
            self, provider: OAuthProvider, identity_server: IdentityServer) -> None:
        _, pending, params = await self._consent(provider, identity_server, "kit-gone")
        await identity_server.stop()
        with pytest.raises(MarkcoError):
            await provider.complete(params=params, pending=pending,
                                    redirect_uri=self.redirect_uri)
