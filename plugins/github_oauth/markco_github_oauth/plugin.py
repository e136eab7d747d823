"""The markco plugin: registers the `github` OAuth provider (entry point `markco` → `github`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from markco_trio.hookspecs import ProviderSpec, hookimpl

from .options import GitHubOptions
from .provider import GitHubProvider

# The major version of markco's plugin contract this plugin is written for (checked at load).
MARKCO_CONTRACT = "1"

if TYPE_CHECKING:
    from markco_trio.context import PluginContext


def make_github_provider(options: GitHubOptions, ctx: PluginContext) -> GitHubProvider:
    """The factory `[oauth] providers = ["github"]` calls with `[oauth.github]`."""
    return GitHubProvider(options)


@hookimpl
def markco_oauth_providers() -> list[ProviderSpec]:
    """Register the `github` provider."""
    return [ProviderSpec(name="github", factory=make_github_provider, options=GitHubOptions,
                         description="Log in with GitHub (OAuth app, PKCE, verified email)")]
