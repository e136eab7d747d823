"""The pure rules of the editor gate: what kind of request this is, and what a refusal says.

No I/O and no auth lookups here (those are the gate's, `gate.py`): a request head and a
principal in, facts and answers out, so unit tests feed them directly.

- A navigation is recognised by Fetch Metadata (`Sec-Fetch-Mode: navigate` or
  `Sec-Fetch-Dest: document`) on a GET, never by `Accept` (DESIGN §3.2).
- Cross-site requests that are not navigations are refused: `Sec-Fetch-Site: cross-site` — and
  `same-site` too, since a sibling host (a publish host on the same site, say) is not the
  editor's origin either — unless it is a top-level GET navigation (a link into the editor).
  Browsers without Fetch Metadata still have the SameSite=Lax session cookie, which a
  cross-site subrequest does not carry.
- Refusals keep quiet about who exists: a logged-in caller without access to an editor gets the
  same 404 as for a user id that does not exist.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote_from_bytes

from markco_trio.authz import Principal
from markco_trio.proxy.answers import Answer, json_error
from markco_trio.proxy.head import RequestHead
from markco_trio.proxy.waiting import RETRY_AFTER, message_page

__all__ = [
    "API_TOKEN_PREFIX",
    "is_navigation",
    "login_redirect",
    "login_url_returning",
    "markco_bearer_token",
    "not_found",
    "refused_cross_site",
    "role_of",
    "unauthenticated",
    "unavailable",
]

API_TOKEN_PREFIX: Final = b"mkt_"  # markco's API tokens (auth's tokens.py); others pass through
_SAFE_SITES: Final = frozenset([b"same-origin", b"none"])
_NAVIGATION_DESTS: Final = frozenset([b"document", b"iframe", b"frame"])

_UNAUTHENTICATED: Final = Answer(
    401,
    b'{"error":{"code":"unauthenticated","message":"log in, or send an API token"}}',
    headers=((b"www-authenticate", b'Bearer realm="markco"'),),
)
_NOT_FOUND: Final = json_error(404, "not_found", "there is no editor here")
_NOT_FOUND_PAGE: Final = message_page(
    404, "No editor here", "There is no editor at this address that you may open."
)
CROSS_SITE: Final = json_error(
    403, "cross_site", "cross-site requests to an editor are refused (only navigations pass)"
)
BAD_ORIGIN: Final = json_error(
    403, "bad_origin", "this request must come from a page of this markco (Origin)"
)


def is_navigation(head: RequestHead) -> bool:
    """Whether `head` is a browser navigation (a person opening the page)."""
    if head.method != b"GET":
        return False
    mode = head.get(b"sec-fetch-mode")
    if mode is not None:
        return mode.lower() == b"navigate"
    dest = head.get(b"sec-fetch-dest")
    return dest is not None and dest.lower() in _NAVIGATION_DESTS


def refused_cross_site(head: RequestHead) -> bool:
    """Whether Fetch Metadata says this request comes from another site and is not a
    top-level GET navigation."""
    site = head.get(b"sec-fetch-site")
    if site is None or site.lower() in _SAFE_SITES:
        return False
    mode = head.get(b"sec-fetch-mode")
    return not (head.method == b"GET" and mode is not None and mode.lower() == b"navigate")


def markco_bearer_token(head: RequestHead) -> str | None:
    """The markco API token in `Authorization: Bearer mkt_...`, if that is what it holds (an
    Authorization of any other kind belongs to the editor and passes through)."""
    value = head.get(b"authorization")
    if value is None or value[:7].lower() != b"bearer ":
        return None
    token = value[7:].strip(b" \t")
    if token[:4] != API_TOKEN_PREFIX:
        return None
    return token.decode("latin-1")


def role_of(principal: Principal, owner: str) -> bytes:
    """`X-Markco-Role` for an admitted principal: owner, collaborator (an editor grant), or
    admin (an explicit admin entry); a plugin's own grant of entry counts as collaborator."""
    if principal.user_id == owner:
        return b"owner"
    for grant in principal.grants:
        if grant.owner_id == owner and grant.role == "editor":
            return b"collaborator"
    if principal.admin_entry:
        return b"admin"
    return b"collaborator"


def login_redirect(login_url: bytes) -> Answer:
    """Where an anonymous navigation goes: the login page (302)."""
    return Answer(302, b"", b"text/plain", ((b"location", login_url),))


def unauthenticated(navigation: bool, login_url: bytes, target: bytes | None = None) -> Answer:
    """No (valid) credentials: a navigation logs in (and, given the request's `target`, comes
    back to it afterwards: `?next=`), anything else gets 401."""
    if not navigation:
        return _UNAUTHENTICATED
    return login_redirect(login_url if target is None else login_url_returning(login_url,
                                                                                  target))


def login_url_returning(login_url: bytes, target: bytes) -> bytes:
    """`login_url?next=<target>`, the target (a request target of this origin, `/u/...`)
    percent-encoded whole; the login page checks it again before using it."""
    if not target.startswith(b"/") or target.startswith(b"//"):
        return login_url
    return login_url + b"?next=" + quote_from_bytes(target, safe="").encode("ascii")


def not_found(navigation: bool) -> Answer:
    """Forbidden or nonexistent alike (no difference is shown)."""
    return _NOT_FOUND_PAGE if navigation else _NOT_FOUND


def unavailable(code: str, message: str, *, navigation: bool = False) -> Answer:
    """503 with Retry-After (a page for a navigation, JSON otherwise)."""
    if navigation:
        page = message_page(503, "Your editor is not available", message)
        return Answer(page.status, page.body, page.content_type,
                      ((b"retry-after", RETRY_AFTER), *page.headers))
    error = json_error(503, code, message)
    return Answer(error.status, error.body, error.content_type, ((b"retry-after", RETRY_AFTER),))
