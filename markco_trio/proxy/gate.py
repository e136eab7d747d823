"""The editor gate: who may pass into `/u/<owner>/`, and how the request is sent on.

The front door's pure core routes `/u/<owner>/...` to a `UserPath`; the gate turns that and the
request head into a decision — an `Answer` to send, or an `EditorForward` saying where the
request goes and how its head changes. It stands between the front door and the rest of the
daemon: the session authority (`ctx.sessions`), the one authorisation decision
(`ctx.authorize`) and compute (`ctx.compute`), all passed in, so the front door
imports none of them and tests can hand it stand-ins.

For each request (DESIGN §3.1, §3.2, §5.3):
1. Fetch Metadata: cross-site requests that are not navigations are refused (403).
2. Who: `Authorization: Bearer mkt_...` (an API token), else the session cookie — from the
   authority's memory (no database round trip in the steady state), awaiting a lookup only on
   a cache miss. The principal is computed for THIS owner (`entering=`), which is what makes
   an admin's explicit entry count for that one editor only. Nobody: a navigation is sent to
   the login page, anything else gets 401.
3. Origin: a WebSocket handshake must come from a markco page (`origin_allowed`); so must a
   state-changing request that carries an Origin. (An API token's client may send no Origin.)
4. May they: `authorize(principal, editor.enter, Resource("editor", owner))`. No: 404, the
   same as for a user that does not exist. (The answer is remembered per principal object:
   see `_admitted_for`.)
5. Activity is noted (navigations and non-GET requests; see `activity.py`).
6. Where: compute's `editor_address_nowait(owner)`. Not ready: a navigation starts (or wakes)
   the user and gets the wait page; everything else gets 503 + Retry-After and starts nothing.
7. How: the `/u/<owner>` prefix is stripped; the Cookie header goes without markco's cookies;
   a markco API token's Authorization is removed; `X-Markco-User` (the caller's user id),
   `X-Markco-Role` (owner | collaborator | admin) and `X-Forwarded-Prefix` are set.
8. Afterwards: a WebSocket admitted here carries its `Credential`; the tunnel guard
   (`guard.py`) asks `still_admitted` again whenever a revocation may have changed the answer,
   and closes the tunnel when it has.

With per-user editor origins (`hosts`: `[server] editor_domain`, see `hosts.py`), a request
that arrived on `<owner>`'s editor origin (`editor_host=True`) is authenticated by that origin's
own cookie (`principal_for_editor_cookie`: the principal of the main session it is a child of;
the main session cookie is never sent there), an anonymous navigation starts the handshake on
the main origin instead of the login page, and an Origin must be that editor origin. The editor
receives the request as on a single origin: its Host and Origin are the public URL's (the front
door checked the real ones; `X-Forwarded-Host` keeps the real host), so editors need no setting
of their own. `editor_auth` ends the handshake (redeems a one-time code for the cookie).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final, Protocol, cast
from urllib.parse import parse_qs

import trio

from markco_trio.authz import Action, Principal, Resource
from markco_trio.proxy import admission
from markco_trio.proxy.activity import ActivityRecord
from markco_trio.proxy.answers import Answer
from markco_trio.proxy.cookies import CookieRules, strip_request_cookies
from markco_trio.proxy.head import RequestHead
from markco_trio.proxy.hosts import EditorHosts
from markco_trio.proxy.paths import UserPath
from markco_trio.proxy.rewrite import EditorScope
from markco_trio.proxy.waiting import message_page, wait_page

__all__ = ["Authority", "Compute", "Credential", "EditorForward", "EditorGate"]

_UNSAFE_METHODS_EXEMPT: Final = frozenset([b"GET", b"HEAD", b"OPTIONS"])
_EDITOR_DROP: Final = frozenset([b"cookie", b"x-forwarded-prefix"])
_EDITOR_DROP_TOKEN: Final = _EDITOR_DROP | frozenset([b"authorization"])
_EDITOR_HOST_DROP: Final = _EDITOR_DROP | frozenset([b"host", b"origin"])
_EDITOR_HOST_DROP_TOKEN: Final = _EDITOR_HOST_DROP | frozenset([b"authorization"])
_MAX_RESOURCES: Final = 10_000
_NO_REFERRER: Final = (b"referrer-policy", b"no-referrer")
_MAX_ADMITTED: Final = 10_000


class Authority(Protocol):
    """What the gate uses of the session authority (`ctx.sessions`, the role
    `markco_trio.roles.SessionAuthority`)."""

    cookie_name: str

    def principal_for_cookie_nowait(
        self, cookie_header: str | None, *, entering: str | None = None
    ) -> Any: ...

    async def principal_for_cookie(
        self, cookie_header: str | None, *, entering: str | None = None
    ) -> Principal | None: ...

    async def principal_for_token(self, token: str) -> Principal | None: ...

    def origin_allowed(self, origin: str | None, referer: str | None = None) -> bool: ...

    @property
    def revision(self) -> int: ...

    async def wait_revision(self, seen: int) -> int: ...


class Compute(Protocol):
    """What the gate and the wait page use of compute (`ctx.compute`, the role
    `markco_trio.roles.ComputeControl`)."""

    def editor_address_nowait(self, user_id: str) -> tuple[str, int] | None: ...

    def state_nowait(self, user_id: str) -> Any: ...

    def request_start(self, user_id: str, *, reason: str) -> None: ...

    def record_activity(self, user_id: str, kind: str) -> None: ...

    def subscribe_progress(
        self, user_id: str
    ) -> AbstractContextManager[trio.MemoryReceiveChannel[Any]]: ...


class EditorAuthority(Protocol):
    """What the gate uses of the authority for per-user editor origins."""

    editor_cookie_name: str

    def principal_for_editor_cookie_nowait(self, cookie_header: str | None,
                                           owner: str) -> Any: ...

    async def principal_for_editor_cookie(self, cookie_header: str | None,
                                          owner: str) -> Principal | None: ...

    def redeem_editor_code(self, code: str, owner: str) -> str | None: ...

    def editor_set_cookie_header(self, token: str) -> str: ...


Authorize = Callable[[Principal | None, str, Resource], bool]


@dataclass(slots=True)
class _Admitted:
    """What the gate concluded for one principal object and one owner: allowed or not, and
    the identity headers and response scope of its requests (see `EditorGate._admitted`)."""

    principal: Principal
    allowed: bool
    add: tuple[bytes, ...]
    scope: EditorScope


@dataclass(frozen=True, slots=True)
class Credential:
    """What a WebSocket handshake (or a request whose response streams) presented: its Cookie
    header, or a markco API token. The tunnel (the stream) keeps it, so that its admission can
    be decided again after a revocation."""

    cookie: str | None
    token: str | None
    editor_host: bool = False  # the cookie is an editor origin's (see `hosts.py`)

    @classmethod
    def of(cls, head: RequestHead, *, editor_host: bool = False) -> Credential:
        """What `head` presented, as `EditorGate.admit` read it. Made on demand for a plain
        request (only once its response turns out to stream), not for every request."""
        return cls(_cookie_header(head.get_all(b"cookie")),
                   admission.markco_bearer_token(head), editor_host)


@dataclass(slots=True)
class EditorForward:
    """Decision: send the request to `owner`'s editor at `address`, its head changed so.

    For a WebSocket handshake, `credential` is what the caller presented, and `timed` says the
    admission holds only for a while (an admin's entry expires): see `still_admitted`.
    """

    owner: str
    address: tuple[str, int]
    target: bytes
    drop: frozenset[bytes]
    add: tuple[bytes, ...]
    scope: EditorScope
    credential: Credential | None = None
    timed: bool = False


class EditorGate:
    """Admission to users' editors (see the module doc).

    `cookie_names` are markco's own cookies (the session cookie under every name it may have,
    the login-in-flight cookie): removed from requests to editors, refused from their
    responses. `login_url` is where anonymous navigations go. `compute` may be None (no compute
    configured): every editor is then unavailable (503).
    """

    def __init__(
        self,
        *,
        authority: Authority,
        authorize: Authorize,
        compute: Compute | None,
        login_url: str,
        cookie_names: Iterable[str],
        activity: ActivityRecord | None = None,
        hosts: EditorHosts | None = None,
    ) -> None:
        self.authority = authority
        self.hosts = hosts
        self._editor_authority = cast(EditorAuthority, authority) if hosts else None
        self.compute = compute
        self._authorize = authorize
        self._login_url = login_url.encode("latin-1")
        self.cookies = CookieRules(cookie_names)
        self.activity = activity or ActivityRecord(
            compute.record_activity if compute is not None else None
        )
        self._resources: dict[str, Resource] = {}
        self._admitted: dict[tuple[int, str], _Admitted] = {}
        self._scopes: dict[str, EditorScope] = {}

    # ---------------------------------------------------------------- admission

    async def admit(self, head: RequestHead, path: UserPath, *,
                    editor_host: bool = False) -> Answer | EditorForward:
        """Decide a request for `path.owner`'s editor (HTTP or a WebSocket upgrade);
        `editor_host`: it arrived on the owner's own editor origin."""
        if admission.refused_cross_site(head):
            return admission.CROSS_SITE
        owner = path.owner
        navigation = admission.is_navigation(head)
        cookies = head.get_all(b"cookie")
        token = admission.markco_bearer_token(head)
        principal = await self._principal(cookies, token, owner, editor_host)
        if principal is None:
            if editor_host and self.hosts is not None and (
                    navigation or _page_load_without_metadata(head)):
                return admission.login_redirect(self.hosts.auth_url(owner, head.target))
            return admission.unauthenticated(navigation, self._login_url, head.target)
        if not self._origin_ok(head, by_token=token is not None,
                               editor_origin=owner if editor_host else None):
            return admission.BAD_ORIGIN
        admitted = self._admitted_for(principal, owner, path.prefix)
        if not admitted.allowed:
            return admission.not_found(navigation)

        method = head.method
        if navigation:
            self.activity.navigation(owner)
        elif method not in _UNSAFE_METHODS_EXEMPT:
            self.activity.request(owner)

        compute = self.compute
        if compute is None:
            return admission.unavailable(
                "compute_unavailable", "no compute is configured on this markco",
                navigation=navigation)
        address = compute.editor_address_nowait(owner)
        if address is None:
            return self._not_ready(compute, owner, navigation and head.upgrade is None)

        add = admitted.add
        if cookies:
            kept = strip_request_cookies(cookies, self.cookies)
            if kept is not None:
                add = (*add, b"cookie: " + kept)
        credential = None
        if head.upgrade is not None:
            credential = Credential(_cookie_header(cookies), token, editor_host)
        drop = _EDITOR_DROP_TOKEN if token is not None else _EDITOR_DROP
        if editor_host and self.hosts is not None:
            # The editor sees the request as on a single origin (checked above).
            drop = _EDITOR_HOST_DROP_TOKEN if token is not None else _EDITOR_HOST_DROP
            add = (*add, b"host: " + self.hosts.public_host)
            if head.get(b"origin") is not None:
                add = (*add, b"origin: " + self.hosts.public_origin)
        return EditorForward(
            owner,
            address,
            path.target,
            drop,
            add,
            admitted.scope,
            credential,
            principal.admin_entry,
        )

    def _admitted_for(self, principal: Principal, owner: str, prefix: bytes) -> _Admitted:
        """The authorisation decision for `principal` entering `owner`'s editor, and the
        identity headers its requests carry.

        Remembered per principal OBJECT: the authority hands out the same immutable
        `Principal` for a session until something about it changes (a revocation, new grants,
        the cache's TTL), and the decision is pure over the principal (DESIGN §5.3), so the
        same object gets the same answer — the pluggy call and the header building are done
        once instead of per request. An admin's entry makes a new principal per request and
        is not remembered.
        """
        key = (id(principal), owner)
        admitted = self._admitted.get(key)
        if admitted is not None and admitted.principal is principal:
            return admitted
        allowed = self._authorize(principal, Action.EDITOR_ENTER, self._resource(owner))
        scope = self._scopes.get(owner)
        if scope is None:
            if len(self._scopes) >= _MAX_RESOURCES:
                self._scopes.clear()
            scope = self._scopes[owner] = EditorScope(prefix, self.cookies)
        admitted = _Admitted(
            principal,
            allowed,
            (
                b"x-markco-user: " + principal.user_id.encode("latin-1"),
                b"x-markco-role: " + admission.role_of(principal, owner),
                b"x-forwarded-prefix: " + prefix,
            ),
            scope,
        )
        if not principal.admin_entry:
            if len(self._admitted) >= _MAX_ADMITTED:
                self._admitted.clear()  # (holding the principals keeps their ids unique)
            self._admitted[key] = admitted
        return admitted

    async def admit_progress(self, head: RequestHead, owner: str, *,
                             editor_host: bool = False) -> Answer | None:
        """Whether the wait page's progress stream for `owner` may be sent: None if so (the
        same people as may enter the editor), else the answer."""
        if admission.refused_cross_site(head):
            return admission.CROSS_SITE
        token = admission.markco_bearer_token(head)
        principal = await self._principal(head.get_all(b"cookie"), token, owner, editor_host)
        if principal is None:
            return admission.unauthenticated(False, self._login_url)
        if not self._authorize(principal, Action.EDITOR_ENTER, self._resource(owner)):
            return admission.not_found(False)
        if self.compute is None:
            return admission.unavailable(
                "compute_unavailable", "no compute is configured on this markco")
        return None

    # ---------------------------------------------------------------- open tunnels

    @property
    def revision(self) -> int:
        """The authority's revocation revision: it moves whenever something it had decided
        may have been revoked (see `wait_revision`)."""
        return self.authority.revision

    async def wait_revision(self, seen: int) -> int:
        """Wait until the revocation revision differs from `seen`; return it."""
        return await self.authority.wait_revision(seen)

    async def still_admitted(self, owner: str, credential: Credential) -> bool:
        """Whether `credential` would still be let into `owner`'s editor: the same decision as
        `admit`'s (who, then may they), made again for an open WebSocket. From the
        authority's memory when it holds the answer; one lookup per credential otherwise."""
        if credential.token is not None:
            principal = await self.authority.principal_for_token(credential.token)
        elif credential.cookie is None:
            return False
        elif credential.editor_host:
            if self._editor_authority is None:
                return False
            principal = await self._editor_authority.principal_for_editor_cookie(
                credential.cookie, owner)
        else:
            principal = await self.authority.principal_for_cookie(
                credential.cookie, entering=owner)
        if principal is None:
            return False
        return self._authorize(principal, Action.EDITOR_ENTER, self._resource(owner))

    # ---------------------------------------------------------------- parts

    async def _principal(
        self, cookies: list[bytes], token: str | None, owner: str, editor_host: bool = False
    ) -> Principal | None:
        authority = self.authority
        if token is not None:
            # An explicit token is the credential: a bad one is not rescued by a cookie.
            return await authority.principal_for_token(token)
        header = _cookie_header(cookies)
        if header is None:
            return None
        if editor_host:
            editor = self._editor_authority
            if editor is None:
                return None
            found = editor.principal_for_editor_cookie_nowait(header, owner)
            if found is None or isinstance(found, Principal):
                return found
            return await editor.principal_for_editor_cookie(header, owner)
        answer = authority.principal_for_cookie_nowait(header, entering=owner)
        if answer is None or isinstance(answer, Principal):
            return answer
        # Not in memory (first request, expiry, a cache flush): one lookup, shared by all.
        return await authority.principal_for_cookie(header, entering=owner)

    def _origin_ok(self, head: RequestHead, *, by_token: bool,
                   editor_origin: str | None = None) -> bool:
        origin = head.get(b"origin")
        if head.upgrade is not None:
            # A WebSocket handshake carries the cookie cross-site (no CORS): Origin decides.
            if origin is None:
                return by_token
            return self._origin_allowed(origin, editor_origin)
        if origin is None or head.method in _UNSAFE_METHODS_EXEMPT:
            return True
        return self._origin_allowed(origin, editor_origin)

    def _origin_allowed(self, origin: bytes, editor_origin: str | None) -> bool:
        if editor_origin is not None and self.hosts is not None:
            # On an editor origin only that origin's own pages count (not the platform's).
            return origin.strip().lower() == self.hosts.origin(editor_origin).encode("ascii")
        return self.authority.origin_allowed(origin.decode("latin-1"), None)

    def editor_auth(self, head: RequestHead, owner: str) -> Answer:
        """The handshake's last step on `owner`'s editor origin: redeem the one-time `code`
        for this origin's cookie and go to `next` (a path on this origin only)."""
        editor = self._editor_authority
        if editor is None or head.method != b"GET":
            return admission.not_found(True)
        query = head.target.partition(b"?")[2].decode("latin-1")
        try:
            params = parse_qs(query, max_num_fields=4, strict_parsing=False)
        except ValueError:
            params = {}
        codes, nexts = params.get("code", []), params.get("next", [])
        next_path = _safe_next(nexts[0]) if len(nexts) == 1 else None
        if len(codes) != 1 or next_path is None:
            return _handshake_refused("This link into the editor is malformed.")
        token = editor.redeem_editor_code(codes[0], owner)  # used up, whatever follows
        if token is None:
            return _handshake_refused(
                "This link into the editor has been used already, has expired, or is for "
                "another editor. Open the editor again from your dashboard.")
        return Answer(303, b"", b"text/plain", (
            (b"location", next_path.encode("latin-1")),
            (b"set-cookie", editor.editor_set_cookie_header(token).encode("latin-1")),
            _NO_REFERRER,
        ))

    def _resource(self, owner: str) -> Resource:
        resource = self._resources.get(owner)
        if resource is None:
            if len(self._resources) >= _MAX_RESOURCES:
                self._resources.clear()
            resource = self._resources[owner] = Resource("editor", owner_id=owner)
        return resource

    def editor_down(self, owner: str, *, navigation: bool) -> Answer:
        """The answer when `owner`'s editor, said to be ready, does not answer (it crashed or
        is restarting): a navigation gets the wait page, anything else 503 + Retry-After."""
        if navigation:
            return wait_page(owner, "Your editor is not answering. Waiting for it\u2026")
        return admission.unavailable(
            "editor_unavailable", "the editor is not answering; try again shortly")

    def _not_ready(self, compute: Compute, owner: str, navigation: bool) -> Answer:
        if not navigation:
            return admission.unavailable(
                "editor_not_ready",
                "the editor is not running; open it in the browser to start it",
            )
        try:
            compute.request_start(owner, reason="navigation")
        except Exception as exc:  # no backend configured, a user compute refuses...
            return admission.unavailable("editor_unavailable", str(exc), navigation=True)
        state = compute.state_nowait(owner)
        return wait_page(owner, str(getattr(state, "message", "") or "Starting\u2026"))


def _page_load_without_metadata(head: RequestHead) -> bool:
    """A GET for a page from a browser that sends no Fetch Metadata (Chromium sends none to
    a plain-http origin other than localhost): sent into the handshake too, which only ever
    leads back here with the visitor's own rights."""
    if head.method != b"GET" or head.get(b"sec-fetch-mode") is not None:
        return False
    accept = head.get(b"accept")
    return accept is not None and b"text/html" in accept


def _safe_next(value: str) -> str | None:
    """`value` if it is a path on this origin (not `//host`, no backslash, no scheme)."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return None
    if any(ord(c) < 0x21 or ord(c) >= 0x7F for c in value):
        return None
    return value


def _handshake_refused(message: str) -> Answer:
    page = message_page(400, "This link does not work", message)
    return Answer(page.status, page.body, page.content_type, (*page.headers, _NO_REFERRER))


def _cookie_header(cookies: list[bytes]) -> str | None:
    """The Cookie header lines of a request as one header value (None: no cookie)."""
    if not cookies:
        return None
    return (cookies[0] if len(cookies) == 1 else b"; ".join(cookies)).decode("latin-1")
