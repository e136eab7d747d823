"""What a GitHub login failure is, for the login page to show.

Both are `MarkcoError`s with a message written for the person logging in, and an `http_status`
the auth plugin answers with: a refusal is the person's (403), an unavailable GitHub is not
(502). Neither ever carries GitHub's raw response body or a token.
"""

from __future__ import annotations

from markco_trio.errors import MarkcoError


class GitHubLoginRefused(MarkcoError):
    """GitHub or this deployment's rules refused the login (denied consent, bad code, state
    mismatch, unverified email, not on the allow-list)."""

    http_status = 403


class GitHubUnavailable(MarkcoError):
    """GitHub could not be reached, was too slow, or answered something unexpected."""

    http_status = 502
