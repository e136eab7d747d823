"""markco-github-oauth: log in to markco with GitHub.

The face of the distribution; the mechanism lives in `provider` (the OAuth flow), `options`
(`[oauth.github]`), `errors` (what the login page shows) and `plugin` (the hook).
"""

from __future__ import annotations

from .errors import GitHubLoginRefused, GitHubUnavailable
from .options import GitHubOptions
from .provider import USER_AGENT, GitHubProvider

__version__ = "0.1.0"

__all__ = ["USER_AGENT", "GitHubLoginRefused", "GitHubOptions", "GitHubProvider",
           "GitHubUnavailable", "__version__"]
