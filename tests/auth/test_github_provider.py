"""What the GitHub provider does beyond the contract kit: its options, scopes, headers."""

from __future__ import annotations

from pathlib import Path

import pytest
from markco_github_oauth import USER_AGENT, GitHubOptions, GitHubProvider

from markco_trio.errors import ConfigError
from markco_trio.options import Secret, SecretResolver, parse_options
from markco_trio.testing.fake_github import FakeGitHub

from .conftest import query

REDIRECT = "http://127.0.0.1:3000/auth/callback/github"


def provider(fake: FakeGitHub, *, require_verified_email: bool = True) -> GitHubProvider:
    return GitHubProvider(GitHubOptions(
        client_id=fake.client_id, client_secret=Secret(fake.client_secret, "test"),
        authorize_url=fake.authorize_url, token_url=fake.token_url, api_url=fake.api_url,
        require_verified_email=require_verified_email))


def test_scopes_ask_for_read_org_only_with_an_org_allow_list() -> None:
    secret = Secret("s", "test")
    assert GitHubOptions("id", secret).scopes == ("read:user", "user:email")
    assert GitHubOptions("id", secret, allowed_orgs=["acme"]).scopes == (
        "read:user", "user:email", "read:org")


def test_the_client_secret_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    resolver = SecretResolver({"GH_SECRET": "from-env"}, base_dir=tmp_path)
    options = parse_options(GitHubOptions, {"client_id": "id", "client_secret_env": "GH_SECRET"},
                            "[oauth.github]", resolver)
    assert options.client_secret.reveal() == "from-env"
    assert "from-env" not in repr(options)
    with pytest.raises(ConfigError, match="secrets never live in the config file"):
        parse_options(GitHubOptions, {"client_id": "id", "client_secret": "inline"},
                      "[oauth.github]", resolver)


def test_plain_http_is_refused_except_on_loopback() -> None:
    secret = Secret("s", "test")
    with pytest.raises(ValueError, match="token_url: must use https"):
        GitHubOptions("id", secret, token_url="http://github.example/token")
    GitHubOptions("id", secret, token_url="http://127.0.0.1:9/token")


async def test_the_code_exchange_and_api_calls_carry_what_github_requires(
        fake_github: FakeGitHub) -> None:
    github = provider(fake_github)
    pending = github.authorization_request(REDIRECT)
    assert query(pending.url)["client_id"] == fake_github.client_id
    params = await fake_github.visit(pending.url)
    identity = await github.complete(params=params, pending=pending, redirect_uri=REDIRECT)
    assert identity.login == "octocat" and identity.provider_user_id == "583231"
    exchange = fake_github.seen("/login/oauth/access_token")[-1]
    assert exchange.params["client_secret"] == fake_github.client_secret
    assert exchange.params["redirect_uri"] == REDIRECT
    assert exchange.headers["Accept"] == "application/json"
    for path in ("/user", "/user/emails"):
        seen = fake_github.seen(path)[-1]
        assert seen.headers["User-Agent"] == USER_AGENT
        assert seen.headers["Authorization"].startswith("Bearer gho_")


async def test_only_the_primary_verified_email_is_reported(fake_github: FakeGitHub) -> None:
    from markco_trio.testing.fake_github import FakeEmail

    fake_github.add_user("multi", email="primary@example.com", other_emails=[
        FakeEmail("other@example.com", primary=False, verified=True)])
    fake_github.consent_as("multi")
    github = provider(fake_github)
    pending = github.authorization_request(REDIRECT)
    identity = await github.complete(params=await fake_github.visit(pending.url),
                                     pending=pending, redirect_uri=REDIRECT)
    assert identity.email == "primary@example.com"


async def test_an_unverified_email_may_be_dropped_instead_of_refused(
        fake_github: FakeGitHub) -> None:
    fake_github.add_user("lax", email="lax@example.com", email_verified=False)
    fake_github.consent_as("lax")
    github = provider(fake_github, require_verified_email=False)
    pending = github.authorization_request(REDIRECT)
    identity = await github.complete(params=await fake_github.visit(pending.url),
                                     pending=pending, redirect_uri=REDIRECT)
    assert identity.login == "lax" and identity.email is None
