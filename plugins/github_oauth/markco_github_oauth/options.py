"""`[oauth.github]`: the options of the GitHub login provider, validated by markco's core."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from markco_trio.options import Secret

# Plain http is accepted only for a GitHub that runs on this machine (the fake in tests, or a
# local GitHub Enterprise tunnel): anywhere else it would send the client secret in clear.
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _check_url(key: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key}: expected an http(s) URL, got {value!r}")
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        raise ValueError(f"{key}: must use https (plain http is allowed only on loopback), "
                         f"got {value!r}")


@dataclass(frozen=True)
class GitHubOptions:
    """`[oauth.github]`.

    - `client_id`, `client_secret_env` / `client_secret_file`: the OAuth app's credentials
      (github.com → Settings → Developer settings → OAuth Apps). Its callback URL must be
      `<public_url>/auth/callback/github`.
    - `allowed_users`: GitHub logins allowed to log in (case-insensitive).
    - `allowed_orgs`: organisations whose members may log in. Configuring one makes the login
      ask for the `read:org` scope, which GitHub needs to reveal private memberships.
      With both lists empty anyone with a GitHub account may log in (invite-only sign-up is
      `[auth] invite_only`). With either set, a user passes when they are listed in
      `allowed_users` OR belong to one of `allowed_orgs`. Logins can be renamed on GitHub,
      so prefer organisations for anything that matters.
    - `authorize_url`, `token_url`, `api_url`: GitHub's endpoints (GitHub Enterprise, or the
      fake GitHub of `markco_trio.testing.fake_github` in tests).
    - `timeout_seconds`: for each call to GitHub; a slow GitHub fails the login with a clear
      message instead of hanging it.
    - `require_verified_email`: refuse a login whose primary email is not verified (default).
      When false such a user logs in without an email (and is never linked to an existing
      account by email).
    """

    client_id: str
    client_secret: Secret
    allowed_users: list[str] = field(default_factory=list)
    allowed_orgs: list[str] = field(default_factory=list)
    authorize_url: str = "https://github.com/login/oauth/authorize"
    token_url: str = "https://github.com/login/oauth/access_token"
    api_url: str = "https://api.github.com"
    timeout_seconds: float = 10.0
    require_verified_email: bool = True
    display_name: str = "GitHub"

    def __post_init__(self) -> None:
        if not self.client_id.strip():
            raise ValueError("client_id: must not be empty")
        for key in ("authorize_url", "token_url", "api_url"):
            _check_url(key, getattr(self, key))
        if not 0 < self.timeout_seconds <= 120:
            raise ValueError("timeout_seconds: must be more than 0 and at most 120")
        for key in ("allowed_users", "allowed_orgs"):
            for name in getattr(self, key):
                if not name.strip() or "/" in name:
                    raise ValueError(f"{key}: {name!r} is not a GitHub login")

    @property
    def scopes(self) -> tuple[str, ...]:
        """What the login asks for: the profile and the email addresses, plus organisation
        membership only when an organisation allow-list needs it."""
        base = ("read:user", "user:email")
        return base + ("read:org",) if self.allowed_orgs else base
