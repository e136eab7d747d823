"""Who may talk to the editor: requests proxied by markco, not web pages of other sites.

The identity headers markco sets (`X-Markco-User`, `X-Markco-Role`) are trustworthy only because
nothing but markco's proxy reaches the editor. Where a browser might reach it anyway (a
container's port published on the host's loopback, an editor run by hand), two checks keep other
sites out (docs/editor-contract.md):

- **Host** (DNS rebinding): the `Host` header must be markco's public host (`MARKCO_PUBLIC_URL`,
  which markco's proxy passes through) or a loopback name (`localhost`, `127.0.0.1`, `[::1]`,
  any port: what markco's readiness check and a person running the editor by hand send). A page
  of `evil.example` whose name was rebound to 127.0.0.1 sends `Host: evil.example`: refused
  (421).
- **Origin / Fetch Metadata** (cross-site requests) for state-changing requests (anything but
  GET, HEAD, OPTIONS) and WebSocket handshakes: an `Origin` must be markco's public origin, or the
  editor's own loopback origin (an `Origin` equal to a loopback `Host`); a `Sec-Fetch-Site`
  must be `same-origin` or `none`. Refused with 403. Requests without either header (no
  browser: markco's own calls, curl) pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["HostAndOrigin"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAFE_SITES = frozenset({"same-origin", "none"})


def _split_authority(authority: str) -> tuple[str, str]:
    """`Host:port` → (lower-case host, port text or ''); IPv6 keeps its brackets."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return authority, ""
        return authority[: end + 1], authority[end + 2 :]
    host, _, port = authority.partition(":")
    return host, port


class HostAndOrigin:
    """The checks of the module doc for one editor (`public_url`: markco's, may be empty)."""

    def __init__(self, public_url: str) -> None:
        self.public_origin: str | None = None
        self.public_hosts: frozenset[str] = frozenset()
        if public_url:
            parts = urlsplit(public_url)
            if parts.scheme in ("http", "https") and parts.netloc:
                netloc = parts.netloc.lower().rpartition("@")[2]
                self.public_origin = f"{parts.scheme}://{netloc}"
                default = "443" if parts.scheme == "https" else "80"
                host, port = _split_authority(netloc)
                hosts = {netloc}
                if port in ("", default):
                    hosts.update({host, f"{host}:{default}"})
                self.public_hosts = frozenset(hosts)

    def host_allowed(self, host: str | None) -> bool:
        """Whether a `Host` header names this editor (see the module doc)."""
        if not host:
            return False
        host = host.strip().lower()
        if host in self.public_hosts:
            return True
        name, port = _split_authority(host)
        return name in LOOPBACK_NAMES and (port == "" or port.isdigit())

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        """Whether a request's `Origin` is markco's public origin or the editor's own loopback
        origin (an http(s) origin whose authority is the request's loopback `Host`)."""
        origin = origin.strip().lower()
        if self.public_origin is not None and origin == self.public_origin:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not host:
            return False
        name, _ = _split_authority(parts.netloc)
        return name in LOOPBACK_NAMES and parts.netloc == host.strip().lower()

    def refusal(self, method: str, headers: Mapping[str, str], *,
                websocket: bool) -> tuple[int, str, str] | None:
        """(status, code, message) when the request must be refused, else None. `headers`
        are lower-case names."""
        host = headers.get("host")
        if not self.host_allowed(host):
            return (421, "wrong_host",
                    "this editor answers only to markco's own host name (Host)")
        if not websocket and method.upper() in SAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site")
        if site is not None and site.strip().lower() not in SAFE_SITES:
            return (403, "cross_site", "requests from other sites are refused (Sec-Fetch-Site)")
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin, host):
            return (403, "bad_origin", "requests from other origins are refused (Origin)")
        return None
