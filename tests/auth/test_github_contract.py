"""The GitHub provider passes the OAuthProvider contract kit against the fake GitHub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from markco_github_oauth import GitHubOptions, GitHubProvider

from markco_trio.options import Secret
from markco_trio.testing.fake_github import FakeGitHub, running_fake_github
from markco_trio.testing.oauth_kit import OAuthProviderContract


class TestGitHubContract(OAuthProviderContract):
    """Every test of the kit, run on `GitHubProvider` over real HTTP to the fake."""

    @pytest.fixture
    async def identity_server(self) -> AsyncIterator[FakeGitHub]:
        async with running_fake_github() as fake:
            yield fake

    @pytest.fixture
    def provider_factory(self) -> Callable[..., GitHubProvider]:
        def make(server: FakeGitHub, *, timeout_seconds: float) -> GitHubProvider:
            return GitHubProvider(GitHubOptions(
                client_id=server.client_id, client_secret=Secret(server.client_secret, "test"),
                authorize_url=server.authorize_url, token_url=server.token_url,
                api_url=server.api_url, timeout_seconds=timeout_seconds))
        return make
