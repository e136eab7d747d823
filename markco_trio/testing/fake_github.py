"""A fake GitHub OAuth server: real HTTP on 127.0.0.1, for plugin authors and markco's tests.

It speaks the parts of GitHub a login uses, the way GitHub does:

- `GET  /login/oauth/authorize`: the consent screen, answered at once for the user set with
  `consent_as` (a redirect with `code` and `state`), or a denial (`error=access_denied`);
- `POST /login/oauth/access_token`: checks the client id and secret, that the code is known,
  unexpired and used only once, that `redirect_uri` matches the one authorised, and the PKCE
  verifier against the S256 challenge. Like GitHub it answers errors with HTTP 200 and an
  `error` field;
- `GET  /user`, `/user/emails`, `/user/orgs`, `/user/memberships/orgs/<org>`: with the
  access token (`Authorization: Bearer` or `token`), scope-checked, and refused without a
  `User-Agent` as GitHub does.

Failure modes: `consent_as(None)` (denied consent), `set_failure("down")` (503 from the token
endpoint and the API), `set_failure("slow", seconds=...)` (answers late), `await stop()` (the
port refuses connections), and users with an unverified primary email.

    async with running_fake_github() as fake:
        fake.add_user("octocat", email="octo@example.com", orgs=["acme"])
        fake.consent_as("octocat")
        options = fake.provider_options()     # client_id and the three URLs

`FakeGitHub` implements `markco_trio.testing.oauth_kit.IdentityServer`, so the OAuthProvider
contract kit runs against it.

For demos and manual tests, run it on a fixed port (127.0.0.1 only) and point a daemon at it:

    python -m markco_trio.testing.fake_github --port 9100 [--user octocat --email o@example.com]

It prints the `[oauth.github]` section to paste and the secret to export, then serves until
Ctrl-C; everyone who logs in is `--user` (GitHub's consent screen is skipped).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
from base64 import urlsafe_b64encode
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, jsonify, request
from quart_trio import QuartTrio

FailureMode = Literal["down", "slow"]

_ids = itertools.count(1001)


@dataclass
class FakeEmail:
    """One address of a fake user, as `/user/emails` lists it."""

    email: str
    primary: bool = False
    verified: bool = True


@dataclass
class FakeGitHubUser:
    """A GitHub account of the fake."""

    login: str
    id: int
    name: str | None = None
    emails: list[FakeEmail] = field(default_factory=list)
    orgs: set[str] = field(default_factory=set)
    avatar_url: str | None = None

    @property
    def provider_user_id(self) -> str:
        """GitHub's numeric id as markco stores it."""
        return str(self.id)


@dataclass(frozen=True)
class SeenRequest:
    """A request the fake received (for assertions on headers and parameters)."""

    method: str
    path: str
    headers: dict[str, str]
    params: dict[str, str]


@dataclass
class _IssuedCode:
    login: str
    client_id: str
    redirect_uri: str | None
    challenge: str | None
    scopes: frozenset[str]
    issued_at: float
    used: bool = False


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return urlsafe_b64encode(digest).decode().rstrip("=")


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


class FakeGitHub:
    """The fake GitHub's state and HTTP app. Serve it with `running_fake_github()` (or
    `nursery.start(fake.serve)`); change users and failure modes at any time."""

    def __init__(self, *, client_id: str = "markco-test-client",
                 client_secret: str = "markco-test-secret", code_ttl: float = 600.0) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.code_ttl = code_ttl
        self.users: dict[str, FakeGitHubUser] = {}
        self.requests: list[SeenRequest] = []
        self.base_url: str | None = None
        self._consenting: str | None = None
        self._failure: FailureMode | None = None
        self._slow_seconds = 30.0
        self._codes: dict[str, _IssuedCode] = {}
        self._tokens: dict[str, tuple[str, frozenset[str]]] = {}
        self._scope: trio.CancelScope | None = None
        self.app = self._build_app()

    # ------------------------------------------------------------------ test controls

    def add_user(self, login: str, *, email: str | None = None, email_verified: bool = True,
                 name: str | None = None, orgs: Iterable[str] = (),
                 other_emails: Iterable[FakeEmail] = (), id: int | None = None,
                 ) -> FakeGitHubUser:
        """Create (or replace) an account. `email` becomes its primary address."""
        emails = [FakeEmail(email, primary=True, verified=email_verified)] if email else []
        emails.extend(other_emails)
        user = FakeGitHubUser(login=login, id=id if id is not None else next(_ids), name=name,
                              emails=emails, orgs=set(orgs),
                              avatar_url=f"https://avatars.example/{login}.png")
        self.users[login] = user
        return user

    def consent_as(self, login: str | None) -> None:
        """Who is logged in at GitHub and consents; None: the next visitor DENIES consent."""
        if login is not None and login not in self.users:
            raise KeyError(f"no fake GitHub user {login!r}; add_user() first")
        self._consenting = login

    def set_failure(self, mode: FailureMode | None, *, seconds: float = 30.0) -> None:
        """`"down"`: 503 from the token endpoint and the API. `"slow"`: answer after
        `seconds`. None: healthy again."""
        self._failure = mode
        self._slow_seconds = seconds

    async def stop(self) -> None:
        """Stop listening: from now on the port refuses connections."""
        if self._scope is not None:
            self._scope.cancel()
        await trio.lowlevel.checkpoint()

    @property
    def authorize_url(self) -> str:
        """The authorize endpoint (`authorize_url` of `[oauth.github]`)."""
        return f"{self._base()}/login/oauth/authorize"

    @property
    def token_url(self) -> str:
        """The token endpoint (`token_url`)."""
        return f"{self._base()}/login/oauth/access_token"

    @property
    def api_url(self) -> str:
        """The API root (`api_url`)."""
        return self._base()

    def provider_options(self) -> dict[str, str]:
        """`[oauth.github]` keys pointing at this fake (the secret goes in separately, as
        `client_secret_env`/`_file`: secrets never live in a config file)."""
        return {"client_id": self.client_id, "authorize_url": self.authorize_url,
                "token_url": self.token_url, "api_url": self.api_url}

    def seen(self, path: str) -> list[SeenRequest]:
        """The requests received for `path`."""
        return [r for r in self.requests if r.path == path]

    async def visit(self, authorization_url: str) -> dict[str, str]:
        """Be the browser at the consent screen: GET the authorize URL and return the query
        parameters GitHub redirects back with (`code` and `state`, or `error`)."""
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(authorization_url)
        if response.status_code != 302:
            raise AssertionError(f"the fake GitHub did not redirect: HTTP "
                                 f"{response.status_code} {response.text[:200]}")
        return dict(parse_qsl(urlsplit(response.headers["location"]).query))

    # ------------------------------------------------------------------ serving

    async def serve(self, *, port: int = 0,
                    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on 127.0.0.1 (`port`, or a free one) until cancelled or `stop()`ped;
        `started()` reports the base URL."""
        config = HypercornConfig()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 0.5
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(serve, self.app, config)
                self.base_url = binds[0]
                task_status.started(self.base_url)

    def _base(self) -> str:
        if self.base_url is None:
            raise RuntimeError("the fake GitHub is not serving yet")
        return self.base_url

    # ------------------------------------------------------------------ the HTTP app

    def _build_app(self) -> QuartTrio:
        app = QuartTrio("fake_github")

        @app.before_request
        async def _record() -> None:
            form = await request.form if request.method == "POST" else {}
            params = dict(request.args) | dict(form)
            self.requests.append(SeenRequest(request.method, request.path,
                                             dict(request.headers), params))

        @app.get("/login/oauth/authorize")
        async def _authorize() -> Response:
            args = request.args
            if args.get("client_id") != self.client_id:
                return Response("unknown OAuth application", status=404)
            redirect_uri = args.get("redirect_uri")
            if not redirect_uri:
                return Response("redirect_uri is required by this fake", status=400)
            state = args.get("state", "")
            login = self._consenting
            if login is None:
                return _redirect(_with_query(redirect_uri, {
                    "error": "access_denied",
                    "error_description": "The user has denied your application access.",
                    "state": state}))
            method = args.get("code_challenge_method")
            challenge = args.get("code_challenge")
            if challenge is not None and method != "S256":
                return Response("only the S256 code challenge method is supported", status=400)
            code = secrets.token_hex(10)
            self._codes[code] = _IssuedCode(
                login=login, client_id=self.client_id, redirect_uri=redirect_uri,
                challenge=challenge, scopes=frozenset(args.get("scope", "").split()),
                issued_at=trio.current_time())
            return _redirect(_with_query(redirect_uri, {"code": code, "state": state}))

        @app.post("/login/oauth/access_token")
        async def _access_token() -> Response:
            failure = await self._maybe_fail()
            if failure is not None:
                return failure
            form = await request.form
            if form.get("client_id") != self.client_id or not hmac.compare_digest(
                    form.get("client_secret", ""), self.client_secret):
                return _oauth_error("incorrect_client_credentials",
                                    "The client_id and/or client_secret passed are incorrect.")
            issued = self._codes.get(form.get("code", ""))
            if issued is None or issued.used or \
                    trio.current_time() - issued.issued_at > self.code_ttl:
                return _oauth_error("bad_verification_code",
                                    "The code passed is incorrect or expired.")
            issued.used = True  # single use, whatever happens next
            if form.get("redirect_uri") is not None and \
                    form.get("redirect_uri") != issued.redirect_uri:
                return _oauth_error("redirect_uri_mismatch",
                                    "The redirect_uri MUST match the registered callback URL.")
            if issued.challenge is not None:
                verifier = form.get("code_verifier", "")
                if not verifier or not hmac.compare_digest(_s256(verifier), issued.challenge):
                    return _oauth_error("invalid_grant", "The code_verifier does not match.")
            token = "gho_" + secrets.token_hex(18)
            self._tokens[token] = (issued.login, issued.scopes)
            return jsonify({"access_token": token, "token_type": "bearer",
                            "scope": ",".join(sorted(issued.scopes))})

        @app.get("/user")
        async def _user() -> Response:
            who = await self._api_caller()
            if isinstance(who, Response):
                return who
            user, _ = who
            return jsonify({"login": user.login, "id": user.id, "name": user.name,
                            "avatar_url": user.avatar_url, "email": None, "type": "User"})

        @app.get("/user/emails")
        async def _emails() -> Response:
            who = await self._api_caller()
            if isinstance(who, Response):
                return who
            user, scopes = who
            if "user:email" not in scopes and "user" not in scopes:
                return _api_error(404, "Not Found")
            return jsonify([{"email": e.email, "primary": e.primary, "verified": e.verified,
                             "visibility": "private"} for e in user.emails])

        @app.get("/user/orgs")
        async def _orgs() -> Response:
            who = await self._api_caller()
            if isinstance(who, Response):
                return who
            user, _ = who
            return jsonify([{"login": org} for org in sorted(user.orgs)])

        @app.get("/user/memberships/orgs/<org>")
        async def _membership(org: str) -> Response:
            who = await self._api_caller()
            if isinstance(who, Response):
                return who
            user, scopes = who
            if "read:org" not in scopes:
                return _api_error(403, "You need the read:org scope to see memberships.")
            if org.casefold() not in {o.casefold() for o in user.orgs}:
                return _api_error(404, "Not Found")
            return jsonify({"state": "active", "role": "member",
                            "organization": {"login": org}, "user": {"login": user.login}})

        return app

    async def _maybe_fail(self) -> Response | None:
        if self._failure == "down":
            return Response("GitHub is down (fake)", status=503)
        if self._failure == "slow":
            await trio.sleep(self._slow_seconds)
        return None

    async def _api_caller(self) -> Response | tuple[FakeGitHubUser, frozenset[str]]:
        failure = await self._maybe_fail()
        if failure is not None:
            return failure
        if not request.headers.get("User-Agent"):
            return _api_error(403, "Request forbidden by administrative rules. Please make "
                                   "sure your request has a User-Agent header.")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        known = self._tokens.get(token) if scheme.lower() in ("bearer", "token") else None
        if known is None or known[0] not in self.users:
            return _api_error(401, "Bad credentials")
        login, scopes = known
        return self.users[login], scopes


def _redirect(location: str) -> Response:
    return Response("", status=302, headers={"Location": location})


def _oauth_error(error: str, description: str) -> Response:
    # GitHub answers token errors with HTTP 200 and an `error` field.
    return jsonify({"error": error, "error_description": description,
                    "error_uri": "https://docs.github.com/apps/oauth"})


def _api_error(status: int, message: str) -> Response:
    response = jsonify({"message": message, "documentation_url": "https://docs.github.com/rest"})
    response.status_code = status
    return response


@asynccontextmanager
async def running_fake_github(**kwargs: Any) -> AsyncIterator[FakeGitHub]:
    """A `FakeGitHub(**kwargs)` serving on 127.0.0.1 for the duration of the block."""
    fake = FakeGitHub(**kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    """`python -m markco_trio.testing.fake_github --port N`: serve until interrupted."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m markco_trio.testing.fake_github",
        description="A fake GitHub OAuth server on 127.0.0.1, for demos and manual tests.")
    parser.add_argument("--port", type=int, required=True, help="the port on 127.0.0.1")
    parser.add_argument("--user", default="octocat", help="the GitHub login that consents")
    parser.add_argument("--email", default=None, help="its verified primary email "
                        "(default: <user>@example.com)")
    parser.add_argument("--client-id", default="markco-demo-client")
    parser.add_argument("--client-secret", default="markco-demo-secret")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port: expected 1-65535, got {args.port}")
    fake = FakeGitHub(client_id=args.client_id, client_secret=args.client_secret)
    fake.add_user(args.user, email=args.email or f"{args.user}@example.com", name=args.user)
    fake.consent_as(args.user)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(fake.serve, port=args.port))
            options = "\n".join(f'{k} = "{v}"' for k, v in fake.provider_options().items())
            print(f"fake GitHub at {fake.base_url}; everyone logs in as {args.user!r}.\n"
                  f"[oauth]\nproviders = [\"github\"]\n\n[oauth.github]\n{options}\n"
                  f'client_secret_env = "MARKCO_GITHUB_CLIENT_SECRET"\n\n'
                  f"export MARKCO_GITHUB_CLIENT_SECRET={args.client_secret}", flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:  # hypercorn's bind failure, inside its nurseries
        failed = group.subgroup(lambda exc: isinstance(exc, OSError))
        if failed is None:
            raise
        while isinstance(failed, BaseExceptionGroup):
            failed = failed.exceptions[0]
        reason = getattr(failed, "strerror", None) or failed
        print(f"fake GitHub: cannot listen on 127.0.0.1:{args.port}: {reason}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
