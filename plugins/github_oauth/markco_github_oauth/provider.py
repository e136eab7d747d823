"""`GitHubProvider`: the `OAuthProvider` role for GitHub, with authlib's httpx integration.

The flow (DESIGN §5.1):
1. `authorization_request` builds the authorize URL with a random `state` and a PKCE (S256)
   challenge; the auth plugin keeps `state` and the verifier server side until the callback.
2. `complete` checks `state` (constant time), exchanges the code (with the verifier and the
   same redirect_uri) through authlib's `AsyncOAuth2Client`, reads `/user` and the VERIFIED
   primary email from `/user/emails`, and applies the allow-lists (users, organisations).

Every HTTP status is checked; every call has a timeout and sends a `User-Agent` (GitHub
requires one). Failures raise `GitHubLoginRefused` or `GitHubUnavailable` with a message for
the person logging in — never an httpx or authlib exception, never GitHub's raw body.
"""

from __future__ import annotations

import hmac
import secrets
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import trio
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from markco_trio import __version__ as markco_version
from markco_trio.roles import AuthorizationRequest, VerifiedIdentity

from .errors import GitHubLoginRefused, GitHubUnavailable
from .options import GitHubOptions

# authlib 1.9 prefers the `httpx2` package and warns when it falls back to `httpx` (which is
# what markco depends on, and what it tests with). The fallback is supported; the warning is
# noise in every test run with warnings as errors, so it is silenced for this import only.
with warnings.catch_warnings():
    import authlib.deprecate  # noqa: F401 - installs authlib's own filter before ours

    warnings.filterwarnings("ignore", message="The httpx module is deprecated",
                            category=DeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

USER_AGENT = f"markco/{markco_version} (github_oauth)"
_API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


class GitHubProvider:
    """Log in with GitHub. Built by the `github` provider factory from `[oauth.github]`.

    Stateless between calls: each login gets its own authlib client (its token must not be
    shared between concurrent logins), so one provider serves any number of logins at once.
    """

    name = "github"

    def __init__(self, options: GitHubOptions) -> None:
        self.options = options
        self.display_name = options.display_name

    async def __aenter__(self) -> GitHubProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    # ---------------------------------------------------------------- step 1: the redirect

    def authorization_request(self, redirect_uri: str) -> AuthorizationRequest:
        """Where to send the browser: GitHub's authorize URL with a fresh `state`, the S256
        PKCE challenge of a fresh verifier, and the scopes the options need."""
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters, within PKCE's 43..128
        url = prepare_grant_uri(
            self.options.authorize_url, client_id=self.options.client_id,
            response_type="code", redirect_uri=redirect_uri,
            scope=" ".join(self.options.scopes), state=state,
            code_challenge=create_s256_code_challenge(verifier), code_challenge_method="S256")
        return AuthorizationRequest(url=url, state=state, code_verifier=verifier)

    # ---------------------------------------------------------------- step 2: the callback

    async def complete(self, *, params: Mapping[str, str], pending: AuthorizationRequest,
                       redirect_uri: str) -> VerifiedIdentity:
        """Turn GitHub's callback parameters into a verified identity, or raise a
        `MarkcoError` (`GitHubLoginRefused` / `GitHubUnavailable`) saying why not."""
        error = params.get("error")
        if error:
            if error == "access_denied":
                raise GitHubLoginRefused(
                    "The login was cancelled on GitHub, so you are not logged in. "
                    "Log in again when you are ready.")
            raise GitHubLoginRefused(f"GitHub refused the login ({error}). Try again, or ask "
                                     f"the administrator to check the OAuth app's settings.")
        state = params.get("state") or ""
        if not state or not hmac.compare_digest(state.encode(), pending.state.encode()):
            raise GitHubLoginRefused(
                "GitHub's answer does not belong to this login attempt (the state does not "
                "match). Start the login again from this browser.")
        code = params.get("code") or ""
        if not code:
            raise GitHubLoginRefused("GitHub sent no authorisation code. Start the login again.")
        # A deadline over the whole exchange: per-call timeouts alone would let a GitHub that
        # trickles bytes stretch the login indefinitely.
        deadline = self.options.timeout_seconds * 4
        try:
            with trio.fail_after(deadline):
                return await self._complete(code, pending.code_verifier, redirect_uri)
        except trio.TooSlowError:
            raise GitHubUnavailable(f"GitHub did not finish the login within {deadline:g} s. "
                                    f"Try again in a moment.") from None

    async def _complete(self, code: str, verifier: str, redirect_uri: str) -> VerifiedIdentity:
        async with AsyncOAuth2Client(
                client_id=self.options.client_id,
                client_secret=self.options.client_secret.reveal(),
                # GitHub documents the client credentials in the form body.
                token_endpoint_auth_method="client_secret_post",
                redirect_uri=redirect_uri,
                timeout=httpx.Timeout(self.options.timeout_seconds),
                headers={"User-Agent": USER_AGENT}) as client:
            token = await self._exchange(client, code, verifier, redirect_uri)
            profile = await self._get_json(client, "/user")
            login, user_id = _profile_identity(profile)
            email = await self._primary_email(client)
            await self._check_allowed(client, login, token)
        name = profile.get("name")
        avatar = profile.get("avatar_url")
        return VerifiedIdentity(
            provider=self.name, provider_user_id=user_id, login=login, email=email,
            name=name if isinstance(name, str) and name else None,
            avatar_url=avatar if isinstance(avatar, str) and avatar else None)

    async def _exchange(self, client: Any, code: str, verifier: str,
                        redirect_uri: str) -> Mapping[str, Any]:
        try:
            token: Mapping[str, Any] = await client.fetch_token(
                self.options.token_url, code=code, code_verifier=verifier,
                redirect_uri=redirect_uri)
        except OAuthError as exc:
            # GitHub reports a bad, used or expired code, a PKCE mismatch or a wrong
            # redirect_uri as a 200 with an `error` field; authlib raises it here.
            kind = getattr(exc, "error", None) or "error"
            raise GitHubLoginRefused(
                f"GitHub did not accept the login code ({kind}): it may have been used "
                f"already or have expired. Start the login again.") from None
        except httpx.TimeoutException:
            raise GitHubUnavailable(
                f"GitHub did not answer within {self.options.timeout_seconds:g} s. "
                f"Try again in a moment.") from None
        except httpx.HTTPStatusError as exc:
            raise GitHubUnavailable(
                f"GitHub is not available right now (HTTP {exc.response.status_code} from "
                f"its token endpoint). Try again in a moment.") from None
        except httpx.HTTPError as exc:
            raise GitHubUnavailable(
                f"Could not reach GitHub ({type(exc).__name__}). Try again in a moment; if "
                f"it persists, the administrator should check the server's network.") from None
        except ValueError:
            raise GitHubUnavailable("GitHub's token endpoint answered something that is not "
                                    "a token. Try again in a moment.") from None
        if not isinstance(token.get("access_token"), str) or not token["access_token"]:
            raise GitHubUnavailable("GitHub's token endpoint answered without an access "
                                    "token. Try again in a moment.")
        return token

    async def _get(self, client: Any, path: str) -> httpx.Response:
        try:
            response: httpx.Response = await client.get(self.options.api_url.rstrip("/") + path,
                                                        headers=_API_HEADERS)
        except httpx.TimeoutException:
            raise GitHubUnavailable(
                f"GitHub did not answer within {self.options.timeout_seconds:g} s. "
                f"Try again in a moment.") from None
        except httpx.HTTPError as exc:
            raise GitHubUnavailable(
                f"Could not reach GitHub's API ({type(exc).__name__}). Try again in a "
                f"moment.") from None
        if response.status_code == 401:
            raise GitHubLoginRefused("GitHub did not accept the login token. Start the login "
                                     "again.")
        if response.status_code >= 500 or response.status_code == 429:
            raise GitHubUnavailable(f"GitHub is not available right now (HTTP "
                                    f"{response.status_code}). Try again in a moment.")
        return response

    async def _get_json(self, client: Any, path: str) -> dict[str, Any]:
        response = await self._get(client, path)
        if response.status_code != 200:
            raise GitHubUnavailable(f"GitHub answered HTTP {response.status_code} for {path}. "
                                    f"Try again in a moment.")
        data = _json(response, path)
        if not isinstance(data, dict):
            raise GitHubUnavailable(f"GitHub answered something unexpected for {path}.")
        return data

    async def _primary_email(self, client: Any) -> str | None:
        response = await self._get(client, "/user/emails")
        if response.status_code != 200:
            raise GitHubUnavailable(f"GitHub answered HTTP {response.status_code} when asked "
                                    f"for your email addresses. Try again in a moment.")
        emails = _json(response, "/user/emails")
        if not isinstance(emails, list):
            raise GitHubUnavailable("GitHub answered something unexpected for /user/emails.")
        primary = next((e for e in emails if isinstance(e, dict) and e.get("primary") is True),
                       None)
        address = primary.get("email") if primary else None
        if primary is not None and primary.get("verified") is True and isinstance(address, str) \
                and "@" in address:
            return address
        if self.options.require_verified_email:
            raise GitHubLoginRefused(
                "Your primary email address on GitHub is not verified, so this login is "
                "refused. Verify it at https://github.com/settings/emails and log in again.")
        return None

    async def _check_allowed(self, client: Any, login: str, token: Mapping[str, Any]) -> None:
        users = {u.casefold() for u in self.options.allowed_users}
        orgs = self.options.allowed_orgs
        if not users and not orgs:
            return
        if login.casefold() in users:
            return
        for org in orgs:
            response = await self._get(client, f"/user/memberships/orgs/{quote(org, safe='')}")
            if response.status_code == 200:
                data = _json(response, "/user/memberships/orgs")
                if isinstance(data, dict) and data.get("state") == "active":
                    return
            elif response.status_code not in (403, 404):
                raise GitHubUnavailable(f"GitHub answered HTTP {response.status_code} when "
                                        f"asked about organisation membership. Try again.")
        raise GitHubLoginRefused(
            f"The GitHub account @{login} is not allowed to log in here. Ask the "
            f"administrator to add you (or your organisation) to the allow-list.")


def _json(response: httpx.Response, path: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise GitHubUnavailable(f"GitHub answered something that is not JSON for {path}. "
                                f"Try again in a moment.") from None


def _profile_identity(profile: Mapping[str, Any]) -> tuple[str, str]:
    login = profile.get("login")
    user_id = profile.get("id")
    if not isinstance(login, str) or not login or isinstance(user_id, bool) \
            or not isinstance(user_id, int):
        raise GitHubUnavailable("GitHub's profile answer has no login or id. Try again.")
    return login, str(user_id)
