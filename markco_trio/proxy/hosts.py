"""Routing by Host when editors have origins of their own (`[server] editor_domain`).

With `editor_domain = "u.example.org"` and `public_url = "https://notebooks.example.org"`:

- `Host: notebooks.example.org` (the public URL's host, any port): the main origin — the API,
  the dashboard, the admin page, login. It never serves an editor: a GET or HEAD of
  `/u/<id>/...` is redirected (302) to the same path on `<id>`'s editor origin, anything else
  there is 404, and so is the wait page's progress stream.
- `Host: <id>.u.example.org`: `<id>`'s editor origin. It serves `/u/<id>/...` — the SAME path
  as on a single origin, so an editor's BASE_PATH, its cookies' Path and the wait page do not
  change with the setting — plus `/` (redirected to `/u/<id>/`), the front door's own
  `/_markco/wait.js`, `/_markco/progress/<id>`, and `/_markco/editor-auth` (the end of the login
  handshake: `builtin/auth/editor_origin.py`). Nothing else: no API, no dashboard, no other
  user's editor (404).
- Any other Host (an unknown name, a name deeper than one label under the domain, an id that
  is not a user id's shape): 404. `/healthz` and `/readyz` answer on every Host (load
  balancers probe by address).

Editor origins take the public URL's scheme and port: `https://<id>.u.example.org` behind a
TLS proxy on 443, `http://<id>.u.test:3000` for a daemon on port 3000. Host names are compared
lower-cased, and the user id in the name must equal the id in the path (markco's ids are
lower-case hex).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

from markco_trio.proxy.answers import Answer, json_error
from markco_trio.proxy.head import RequestHead
from markco_trio.proxy.paths import (
    NO_EDITOR,
    PROXY_PREFIX,
    USER_PREFIX,
    UserPath,
    bad_path,
    split_user_path,
)

__all__ = ["EDITOR_AUTH_PATH", "EditorAuthRoute", "EditorHosts", "OnEditorHost"]

EDITOR_AUTH_PATH: Final = b"/_markco/editor-auth"
_HEALTH: Final = frozenset([b"/healthz", b"/readyz"])
_LABEL_BYTES: Final = b"-0123456789abcdefghijklmnopqrstuvwxyz"
NOT_HERE: Final = json_error(404, "not_found", "nothing is served at this host name")


class _Main:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MAIN"


MAIN: Final = _Main()


@dataclass(slots=True)
class OnEditorHost:
    """Decision: `path` (a `/u/<owner>/...` request) arrived on `path.owner`'s editor origin."""

    path: UserPath


@dataclass(frozen=True, slots=True)
class EditorAuthRoute:
    """Decision: the handshake's last step on `owner`'s editor origin (redeem a code)."""

    owner: str


def host_name(host: bytes | None) -> bytes | None:
    """The lower-case name of a Host header value, without its port (IPv6 keeps brackets)."""
    if not host:
        return None
    host = host.strip().lower()
    if host[:1] == b"[":
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else None
    return host.partition(b":")[0].rstrip(b".") or None


class EditorHosts:
    """Which origin a request's Host names, and the answers that depend on it."""

    def __init__(self, public_url: str, domain: str) -> None:
        parts = urlsplit(public_url)
        if not parts.hostname or parts.scheme not in ("http", "https"):
            raise ValueError(f"public_url {public_url!r} has no host")
        self.public_url = public_url.rstrip("/")
        self.domain = domain
        self._suffix = b"." + domain.encode("ascii")
        main = parts.hostname.lower()
        self._main = f"[{main}]".encode() if ":" in main else main.encode("idna")
        self.scheme = parts.scheme
        self._port = f":{parts.port}" if parts.port is not None else ""
        self.public_host = parts.netloc.lower().encode("idna")
        self.public_origin = f"{parts.scheme}://{parts.netloc.lower()}".encode("idna")

    def owner_of(self, host: bytes | None) -> str | _Main | None:
        """MAIN for the public URL's host, the user id for `<id>.<domain>`, else None."""
        name = host_name(host)
        if name is None:
            return None
        if name == self._main:
            return MAIN
        if not name.endswith(self._suffix):
            return None
        label = name[: -len(self._suffix)]
        if not 0 < len(label) <= 63 or label.translate(None, _LABEL_BYTES):
            return None
        return label.decode("ascii")

    def origin(self, owner: str) -> str:
        """`owner`'s editor origin: `scheme://<owner>.<domain>[:port]`."""
        return f"{self.scheme}://{owner}.{self.domain}{self._port}"

    def auth_url(self, owner: str, next_target: bytes) -> bytes:
        """Where an editor-origin navigation without a valid editor cookie goes: the main
        origin's `/editor-auth`, which starts the handshake."""
        next_path = quote(next_target.decode("latin-1"), safe="")
        return f"{self.public_url}/editor-auth?user={owner}&next={next_path}".encode("latin-1")

    def route(self, head: RequestHead) -> Answer | OnEditorHost | EditorAuthRoute | None:
        """The decision for `head` when it is not the main origin's to make: an answer, a
        request for the editor of this origin, the handshake, or None (route it as on a
        single origin: the main host, and the front door's health checks)."""
        path = head.path
        if path in _HEALTH:
            return None
        where = self.owner_of(head.host)
        if where is MAIN:
            return self._on_main(head, path)
        if where is None:
            return NOT_HERE
        assert isinstance(where, str)
        return self._on_editor_host(head, path, where)

    def _on_main(self, head: RequestHead, path: bytes) -> Answer | None:
        if path[:3] == USER_PREFIX:
            if bad_path(path) is not None:
                return None  # answered 400 by the usual routing
            split = split_user_path(path, head.target)
            if isinstance(split, Answer):
                return split
            if head.method not in (b"GET", b"HEAD"):
                return NO_EDITOR
            location = self.origin(split.owner).encode("ascii") + head.target
            return Answer(302, b"", b"text/plain", ((b"location", location),))
        if path[: len(PROXY_PREFIX)] == PROXY_PREFIX and path != b"/_markco/wait.js":
            return NO_EDITOR  # progress streams and the handshake live on editor origins
        return None

    def _on_editor_host(
        self, head: RequestHead, path: bytes, owner: str
    ) -> Answer | OnEditorHost | EditorAuthRoute | None:
        refused = bad_path(path)
        if refused is not None:
            return refused
        if path == b"/":
            location = b"/u/" + owner.encode("ascii") + b"/"
            return Answer(302, b"", b"text/plain", ((b"location", location),))
        if path[:3] == USER_PREFIX:
            split = split_user_path(path, head.target)
            if isinstance(split, Answer):
                return split
            if split.owner != owner:
                return NO_EDITOR
            return OnEditorHost(split)
        if path == EDITOR_AUTH_PATH:
            return EditorAuthRoute(owner)
        if path == b"/_markco/wait.js" or path == b"/_markco/progress/" + owner.encode():
            return None  # the front door's own, as on a single origin (gated by the caller)
        return NO_EDITOR
