"""How a head changes on its way through the proxy: pure functions from a parsed head to bytes.

Requests: hop-by-hop headers go (Connection and the headers it names, Keep-Alive, TE, Trailer,
Proxy-*, Upgrade unless the request really upgrades); the identity headers the proxy alone may
set (`X-Markco-User`, `X-Markco-Role`) are always stripped from clients; X-Forwarded-For/-Proto/
-Host and `Forwarded` come from the connection, except that a configured trusted proxy's own
X-Forwarded-* are kept (its X-Forwarded-For gets the peer appended, as Caddy does); every request
leaves with an `X-Request-Id`. Framing headers are re-emitted canonically, never dropped, so a
`Connection: content-length` trick cannot make the upstream see a different body.

Requests to an editor also get their target replaced (the `/u/<userId>` prefix stripped), some
headers dropped (the Cookie header, re-added without markco's cookies; a markco API token's
Authorization) and the identity headers added (`X-Markco-User`, `X-Markco-Role`,
`X-Forwarded-Prefix`): the gate decides them, this module only writes them.

Responses: hop-by-hop headers go, framing is re-stated when the proxy re-frames, and a response
that needs no change is passed on as the very bytes the upstream sent. An editor's response is
filtered too (`EditorScope`): its cookies are confined to its prefix (`cookies.py`), and
`Service-Worker-Allowed` and `Clear-Site-Data` are stripped.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence

from markco_trio.proxy.cookies import CookieRules, filter_set_cookie
from markco_trio.proxy.head import RequestHead, ResponseHead

__all__ = [
    "EditorScope",
    "RequestIds",
    "TrustedProxies",
    "acceptable_request_id",
    "forward_request_head",
    "forward_response_head",
    "forwarded_client",
]

# Hop-by-hop, framing we re-state ourselves, identity only the proxy sets, our own request id.
_REQUEST_DROP = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
        b"http2-settings",  # h2c's: never relayed (only WebSocket upgrades are)
        b"transfer-encoding",
        b"x-markco-user",
        b"x-markco-role",
        b"x-request-id",
    ]
)
_FORWARDING = frozenset(
    [
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-prefix",
        b"forwarded",
        b"x-real-ip",
    ]
)
_UNTRUSTED_DROP = _REQUEST_DROP | _FORWARDING
# Headers a client cannot make us drop by naming them in Connection.
_NEVER_CONNECTION_NAMED = (
    frozenset([b"host", b"content-length", b"transfer-encoding", b"x-request-id"]) | _FORWARDING
)
_RESPONSE_DROP = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"transfer-encoding",
    ]
)
# What an editor may not tell the browser: widen a service worker's scope beyond its prefix, or
# wipe the storage (and cookies) of the whole origin.
_EDITOR_RESPONSE_DROP = frozenset([b"service-worker-allowed", b"clear-site-data"])
_REQUEST_ID_BYTES = b"-._:0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_MAX_REQUEST_ID = 128


def forward_request_head(
    head: RequestHead,
    *,
    client_ip: bytes,
    scheme: bytes,
    request_id: bytes,
    trusted: bool = False,
    default_host: bytes = b"localhost",
    target: bytes | None = None,
    drop: frozenset[bytes] = frozenset(),
    add: tuple[bytes, ...] = (),
) -> bytes:
    """The request head to send upstream, always as HTTP/1.1, ending with CRLF CRLF.

    `trusted` says the peer is a configured trusted proxy whose X-Forwarded-* headers we keep.
    `default_host` stands in for the Host an HTTP/1.0 client may omit. For an editor: `target`
    replaces the request target, the headers named in `drop` (lower case) are left out and the
    header lines in `add` are appended.
    """
    out = [head.method + b" " + (head.target if target is None else target) + b" HTTP/1.1"]
    append = out.append
    extra = _connection_named(head.connection_names) if head.connection_names else ()
    forwarded_for: list[bytes] = []
    have_proto = have_host = False
    base = _REQUEST_DROP if trusted else _UNTRUSTED_DROP
    for name, line in zip(head.names, head.lines, strict=True):
        # `proxy*` covers Proxy-Authorization/-Connection and the httpoxy `Proxy:` header.
        if name in base or name[:5] == b"proxy" or (extra and name in extra) or name in drop:
            continue
        if trusted and name in _FORWARDING:
            if name == b"x-forwarded-for":
                forwarded_for.append(line.partition(b":")[2].strip(b" \t"))
                continue
            have_proto = have_proto or name == b"x-forwarded-proto"
            have_host = have_host or name == b"x-forwarded-host"
        append(line)
    if head.host is None:
        append(b"host: " + default_host)
    if head.chunked:
        append(b"transfer-encoding: chunked")
    if head.upgrade is not None:
        append(b"connection: upgrade")
        append(b"upgrade: " + head.upgrade)
    forwarded_for.append(client_ip)
    append(b"x-forwarded-for: " + b", ".join(forwarded_for))
    if not have_proto:
        append(b"x-forwarded-proto: " + scheme)
    if not have_host and head.host is not None:
        append(b"x-forwarded-host: " + head.host)
    append(b"x-request-id: " + request_id)
    out.extend(add)
    append(b"")
    append(b"")
    return b"\r\n".join(out)


def forwarded_client(head: RequestHead) -> bytes | None:
    """The client address a trusted proxy forwarded for (the last X-Forwarded-For entry: the
    one the proxy itself added), or None when there is none."""
    values = head.get_all(b"x-forwarded-for")
    if not values:
        return None
    last = values[-1].rpartition(b",")[2].strip(b" \t")
    return last or None


class EditorScope:
    """How an editor's responses are filtered: its prefix (`/u/<id>`) and markco's cookies."""

    __slots__ = ("prefix", "cookies")

    def __init__(self, prefix: bytes, cookies: CookieRules) -> None:
        self.prefix = prefix
        self.cookies = cookies


def forward_response_head(
    resp: ResponseHead,
    raw: bytes,
    *,
    connection: bytes | None = None,
    chunked: bool | None = None,
    scope: EditorScope | None = None,
) -> bytes:
    """The response head to send to the client, ending with CRLF CRLF.

    `raw` is the upstream's head as received (with its CRLF CRLF): returned unchanged when no
    header has to go or change. `connection` is the Connection value to state (b"close",
    b"keep-alive", b"upgrade") or None; `chunked` overrides whether the body goes out chunked
    (None: as the upstream framed it). `scope`: the response comes from an editor, whose
    cookies and storage-wide headers are filtered.
    """
    if chunked is None:
        chunked = resp.chunked
    filtered = scope is not None and resp.sensitive
    if not resp.hop_by_hop and connection is None and chunked == resp.chunked and not filtered:
        return raw
    out = [resp.status_line]
    append = out.append
    extra = resp.connection_names
    for name, line in zip(resp.names, resp.lines, strict=True):
        if name in _RESPONSE_DROP or (extra and name in extra):
            continue
        if filtered:
            assert scope is not None
            if name in _EDITOR_RESPONSE_DROP:
                continue
            if name == b"set-cookie":
                kept = filter_set_cookie(
                    line.partition(b":")[2].strip(b" \t"), scope.prefix, scope.cookies
                )
                if kept is not None:
                    append(b"set-cookie: " + kept)
                continue
        append(line)
    if chunked:
        append(b"transfer-encoding: chunked")
    if connection is not None:
        append(b"connection: " + connection)
        if connection == b"upgrade" and resp.upgrade is not None:
            append(b"upgrade: " + resp.upgrade)
    append(b"")
    append(b"")
    return b"\r\n".join(out)


def _connection_named(names: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(name for name in names if name not in _NEVER_CONNECTION_NAMED)


def acceptable_request_id(value: bytes | None) -> bool:
    """Whether a client's X-Request-Id is safe to keep (short, no characters that forge logs)."""
    return (
        value is not None
        and 0 < len(value) <= _MAX_REQUEST_ID
        and not value.translate(None, _REQUEST_ID_BYTES)
    )


class RequestIds:
    """Request ids unique within this daemon's run: a random prefix and a counter (cheap)."""

    __slots__ = ("_prefix", "_count")

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex().encode()
        self._count = 0

    def next(self) -> bytes:
        """A new id."""
        self._count += 1
        return b"%b-%x" % (self._prefix, self._count)


class TrustedProxies:
    """The peers (addresses or CIDR networks) whose X-Forwarded-* headers we believe."""

    def __init__(self, entries: Sequence[str] = ()) -> None:
        networks = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {entry!r} is neither an IP address nor a CIDR network "
                    "(examples: 10.0.0.5, 10.0.0.0/8, ::1)"
                ) from None
        self._networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, ip: object) -> bool:
        if not self._networks or not isinstance(ip, str):
            return False
        try:
            address = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)
