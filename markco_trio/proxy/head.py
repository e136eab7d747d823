"""Strict HTTP/1.1 message heads: bytes in, a parsed head (or an error naming what is wrong) out.

No I/O here: the trio layer finds the end of a head (the first CRLF CRLF), cuts it off and hands
the bytes before it to `parse_request_head` or `parse_response_head`.

Strict means that every shape two HTTP implementations could read differently is refused rather
than interpreted, because the bytes we accept are re-emitted to an upstream that may read them
its own way (request smuggling): Content-Length together with Transfer-Encoding, a duplicate or
malformed Content-Length, any transfer coding but `chunked`, obs-fold continuation lines, bare CR
or bare LF line endings, NUL and other control characters, header names that are not tokens,
whitespace before the colon, absolute-form and authority-form targets, and versions other than
HTTP/1.0 and HTTP/1.1.

Why a parser of our own rather than httptools (llhttp)? Measured with
`tests/proxy/bench_head_parser.py` on this project's 2-core machine (CPython 3.11, CPU time,
best of repeated runs of 50,000-200,000 parses; the httptools variant gets the same work: a fresh
parser per head, lower-cased names, the raw lines, and the checks llhttp leaves to its caller):

    head                                  this parser   httptools 0.9 + the same checks
    wrk-style GET, 3 headers (75 B)          2.8 µs           2.6 µs
    browser GET, 8 headers (352 B)           4.3 µs           4.1 µs
    POST with Content-Length, 6 headers      3.7 µs           3.6 µs

httptools is faster by 0.1-0.2 µs, about 0.5 % of the ~48 µs of proxy CPU that a forwarded
request costs (`tests/proxy/bench_front_door.py`), so the other differences decide. llhttp in
strict mode does refuse obs-fold, bare LF, CL + TE, duplicate CL and whitespace before the
colon, but accepts absolute-form targets, a missing Host and `Transfer-Encoding: gzip, chunked`,
so the checks stay ours either way; it hands each header to a Python callback and keeps no raw
lines to re-emit; it wants whole messages (each head needs a fresh parser object); and upstream
response heads need the same checks again. This one does its per-byte work in C-level passes
(`bytes.translate` refuses every control byte and bare CR/LF of a head at once;
`split`/`partition` cut it), touches each header once in Python, parses requests and responses
with the same code, and is small enough to fuzz with hypothesis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BadRequest",
    "BadResponse",
    "RequestHead",
    "ResponseHead",
    "WEBSOCKET",
    "names_websocket",
    "parse_request_head",
    "parse_response_head",
]

# Field lines may hold HTAB, SP, visible ASCII and obs-text; everything else (NUL, CR, LF, DEL and
# the other controls) is refused. Deleting the allowed bytes leaves only the line breaks.
_FIELD_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_CRLF = b"\r\n"
# Origin-form targets: visible ASCII, without '#' (a fragment never travels in a request).
_TARGET_BYTES = bytes(range(0x21, 0x7F)).replace(b"#", b"")
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TOKEN_LOWER_BYTES = bytes(sorted(set(_TOKEN_BYTES.lower())))
_HOST_MATCH = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]{1,5})?"
).fullmatch
_COMMON_METHODS = frozenset(
    [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE"]
)
_MAX_METHOD = 32
WEBSOCKET = b"websocket"  # the one protocol the proxy lets a connection switch to
_MAX_LENGTH_DIGITS = 18  # fits an int64; a longer Content-Length is an attack, not a file

# Header names the request parser must look at; every other header is only named and kept.
_HOST_H, _CL_H, _TE_H, _CONN_H, _UPGRADE_H, _EXPECT_H, _RID_H = range(7)
_REQUEST_SPECIAL = {
    b"host": _HOST_H,
    b"content-length": _CL_H,
    b"transfer-encoding": _TE_H,
    b"connection": _CONN_H,
    b"upgrade": _UPGRADE_H,
    b"expect": _EXPECT_H,
    b"x-request-id": _RID_H,
}
# The response parser also notes hop-by-hop headers, so a response without any can be re-emitted
# byte for byte, and the headers an editor's response may not pass unchanged (cookies, and the
# ones that widen a service worker's scope or wipe the whole origin's storage).
_HOP_H = 7
_SENSITIVE_H = 8
_RESPONSE_SPECIAL = {
    b"content-length": _CL_H,
    b"transfer-encoding": _TE_H,
    b"connection": _CONN_H,
    b"upgrade": _UPGRADE_H,
    b"keep-alive": _HOP_H,
    b"proxy-connection": _HOP_H,
    b"te": _HOP_H,
    b"trailer": _HOP_H,
    b"proxy-authenticate": _HOP_H,
    b"set-cookie": _SENSITIVE_H,
    b"service-worker-allowed": _SENSITIVE_H,
    b"clear-site-data": _SENSITIVE_H,
}


class BadRequest(Exception):
    """A request head we refuse: `status` is the answer to send (400, 417, 431, 501, 505)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


class BadResponse(Exception):
    """A response head from an upstream that we will not relay (the client gets a 502)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Malformed(Exception):
    """Internal: a field-line problem, turned into BadRequest or BadResponse by the caller."""


@dataclass(slots=True, eq=False)
class RequestHead:
    """A parsed request head.

    `names[i]` is the lower-cased name of the header whose raw line (without CRLF) is `lines[i]`,
    so forwarding can re-emit the lines it keeps without formatting them again.
    """

    method: bytes
    target: bytes
    path: bytes  # the target without its query
    http11: bool  # False for HTTP/1.0
    names: list[bytes]
    lines: list[bytes]
    host: bytes | None
    content_length: int | None
    chunked: bool
    keep_alive: bool  # what the client asked for; the server may still close
    upgrade: bytes | None  # b"websocket" for a WebSocket handshake (the only upgrade relayed)
    expect_continue: bool
    connection_names: tuple[bytes, ...]  # further hop-by-hop headers named by Connection
    request_id: bytes | None  # the client's X-Request-Id, unvalidated

    @property
    def has_body(self) -> bool:
        """Whether a body follows the head (chunked, or a non-zero Content-Length)."""
        return self.chunked or bool(self.content_length)

    def get(self, name: bytes) -> bytes | None:
        """The value of the first header called `name` (lower case), without surrounding OWS."""
        names = self.names
        # A membership test first: a missing header is the common case, and the ValueError of
        # `index` would cost more than a second scan of a short list.
        if name not in names:
            return None
        return self.lines[names.index(name)].partition(b":")[2].strip(b" \t")

    def get_all(self, name: bytes) -> list[bytes]:
        """The values of every header called `name` (lower case), in order."""
        names = self.names
        if name not in names:
            return []
        if names.count(name) == 1:
            return [self.lines[names.index(name)].partition(b":")[2].strip(b" \t")]
        return [
            line.partition(b":")[2].strip(b" \t")
            for n, line in zip(names, self.lines, strict=True)
            if n == name
        ]


@dataclass(slots=True, eq=False)
class ResponseHead:
    """A parsed response head; `names`/`lines` as in `RequestHead`."""

    status: int
    status_line: bytes
    http11: bool
    names: list[bytes]
    lines: list[bytes]
    content_length: int | None
    chunked: bool
    keep_alive: bool  # False when the upstream said it will close
    hop_by_hop: bool  # a hop-by-hop header (Connection, Keep-Alive, TE, ...) is present
    connection_names: tuple[bytes, ...]
    upgrade: bytes | None
    sensitive: bool = False  # Set-Cookie, Service-Worker-Allowed or Clear-Site-Data is present


def parse_request_head(
    head: bytes, *, max_headers: int = 100, max_bytes: int = 65536
) -> RequestHead:
    """Parse a request head (the bytes before the CRLF CRLF that ends it).

    Raises `BadRequest` with the status to answer for anything we refuse; never anything else.
    """
    if len(head) > max_bytes:
        raise BadRequest(431, "request head too large")
    lines = head.split(_CRLF)
    n = len(lines) - 1
    if n > max_headers:
        raise BadRequest(431, "too many header fields")
    if head.translate(None, _FIELD_BYTES) != _CRLF * n:
        raise BadRequest(400, _diagnose_bytes(head))
    request_line = lines[0]
    del lines[0]

    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if version == b"HTTP/1.1":
        http11 = True
    elif version == b"HTTP/1.0":
        http11 = False
    elif re.fullmatch(rb"HTTP/[0-9]\.[0-9]", version):
        raise BadRequest(505, "HTTP version not supported")
    else:
        raise BadRequest(400, "malformed HTTP version")
    if method not in _COMMON_METHODS and (
        not method or len(method) > _MAX_METHOD or method.translate(None, _TOKEN_BYTES)
    ):
        raise BadRequest(400, "invalid method")
    if target[:1] == b"/":
        if target.translate(None, _TARGET_BYTES):
            raise BadRequest(400, "invalid character in request target")
        q = target.find(b"?")
        path = target if q < 0 else target[:q]
    elif target == b"*" and method == b"OPTIONS":
        path = target
    elif b"://" in target:
        raise BadRequest(400, "absolute-form request target not accepted")
    else:
        raise BadRequest(400, "invalid request target")

    # The field loop of `_scan_fields`, inlined: it runs for every header of every request.
    names: list[bytes] = []
    specials: list[tuple[int, bytes]] = []
    append = names.append
    special = _REQUEST_SPECIAL
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name:
            raise BadRequest(400, _diagnose_line(line))
        name = name.lower()
        append(name)
        if name in special:
            specials.append((special[name], value.strip(b" \t")))
    if b"".join(names).translate(None, _TOKEN_LOWER_BYTES):
        raise BadRequest(400, _diagnose_names(lines))

    host: bytes | None = None
    content_length: int | None = None
    chunked = False
    close = keep_alive_token = upgrade_token = False
    upgrade_value: bytes | None = None
    expect_continue = False
    connection_names: tuple[bytes, ...] = ()
    request_id: bytes | None = None
    seen_te = False
    for code, value in specials:
        if code == _HOST_H:
            if host is not None:
                raise BadRequest(400, "duplicate Host header")
            if _HOST_MATCH(value) is None:
                raise BadRequest(400, "invalid Host header")
            host = value
        elif code == _CL_H:
            if content_length is not None:
                raise BadRequest(400, "duplicate Content-Length header")
            content_length = _content_length(value)
            if content_length < 0:
                raise BadRequest(400, "invalid Content-Length header")
        elif code == _TE_H:
            if seen_te:
                raise BadRequest(400, "duplicate Transfer-Encoding header")
            seen_te = True
            if value.lower() != b"chunked":
                raise BadRequest(501, "transfer coding not supported (only chunked)")
            chunked = True
        elif code == _CONN_H:
            for token in value.lower().split(b","):
                token = token.strip(b" \t")
                if token == b"close":
                    close = True
                elif token == b"keep-alive":
                    keep_alive_token = True
                elif token == b"upgrade":
                    upgrade_token = True
                elif token and not token.translate(None, _TOKEN_LOWER_BYTES):
                    connection_names += (token,)
                elif token:
                    raise BadRequest(400, "invalid Connection header")
        elif code == _UPGRADE_H:
            upgrade_value = value if upgrade_value is None else upgrade_value + b"," + value
        elif code == _EXPECT_H:
            if value.lower() != b"100-continue":
                raise BadRequest(417, "unsupported expectation")
            expect_continue = True
        else:  # _RID_H
            request_id = value

    if chunked:
        if content_length is not None:
            raise BadRequest(400, "both Content-Length and Transfer-Encoding")
        if not http11:
            raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
    if host is None and http11:
        raise BadRequest(400, "missing Host header")
    # Only a WebSocket handshake upgrades, and only as a bodiless GET; any other protocol (h2c
    # above all: its tunnel would carry headers the proxy never sees) makes a plain request,
    # its Upgrade dropped. A list naming websocket is narrowed to websocket alone.
    upgrade = (
        WEBSOCKET
        if upgrade_token
        and upgrade_value
        and names_websocket(upgrade_value)
        and method == b"GET"
        and not chunked
        and not content_length
        else None
    )
    return RequestHead(
        method,
        target,
        path,
        http11,
        names,
        lines,
        host,
        content_length,
        chunked,
        not close and (http11 or keep_alive_token),
        upgrade,
        expect_continue,
        connection_names,
        request_id,
    )


def parse_response_head(head: bytes, *, max_headers: int = 100) -> ResponseHead:
    """Parse an upstream's response head (the bytes before its CRLF CRLF).

    Raises `BadResponse` for anything we would not relay.
    """
    lines = head.split(_CRLF)
    n = len(lines) - 1
    if n > max_headers:
        raise BadResponse("too many header fields")
    if head.translate(None, _FIELD_BYTES) != _CRLF * n:
        raise BadResponse(_diagnose_bytes(head))
    status_line = lines[0]
    del lines[0]
    version, _, rest = status_line.partition(b" ")
    status_bytes = rest[:3]
    if version == b"HTTP/1.1":
        http11 = True
    elif version == b"HTTP/1.0":
        http11 = False
    else:
        raise BadResponse("malformed status line")
    if not (status_bytes.isdigit() and len(status_bytes) == 3 and rest[3:4] in (b" ", b"")):
        raise BadResponse("malformed status code")
    status = int(status_bytes)
    if status < 100:
        raise BadResponse("malformed status code")

    try:
        names, specials = _scan_fields(lines, _RESPONSE_SPECIAL)
    except _Malformed as exc:
        raise BadResponse(str(exc)) from None

    content_length: int | None = None
    chunked = seen_te = False
    close = keep_alive_token = False
    hop_by_hop = sensitive = False
    connection_names: tuple[bytes, ...] = ()
    upgrade: bytes | None = None
    for code, value in specials:
        if code == _SENSITIVE_H:
            sensitive = True
        elif code == _CL_H:
            if content_length is not None:
                raise BadResponse("duplicate Content-Length header")
            content_length = _content_length(value)
            if content_length < 0:
                raise BadResponse("invalid Content-Length header")
        elif code == _TE_H:
            if seen_te or value.lower() != b"chunked":
                raise BadResponse("unsupported Transfer-Encoding")
            seen_te = chunked = True
        elif code == _CONN_H:
            hop_by_hop = True
            for token in value.lower().split(b","):
                token = token.strip(b" \t")
                if token == b"close":
                    close = True
                elif token == b"keep-alive":
                    keep_alive_token = True
                elif token and token != b"upgrade":
                    connection_names += (token,)
        elif code == _UPGRADE_H:
            hop_by_hop = True
            upgrade = value
        else:  # _HOP_H
            hop_by_hop = True
    if chunked and content_length is not None:
        raise BadResponse("both Content-Length and Transfer-Encoding")
    return ResponseHead(
        status,
        status_line,
        http11,
        names,
        lines,
        content_length,
        chunked,
        not close and (http11 or keep_alive_token),
        hop_by_hop,
        connection_names,
        upgrade,
        sensitive,
    )


def _scan_fields(
    lines: list[bytes], special: dict[bytes, int]
) -> tuple[list[bytes], list[tuple[int, bytes]]]:
    """Lower-case every header name; collect the values of the names in `special`.

    The bytes were already checked (no controls, no bare CR/LF); what is left is the shape of
    each line, and that every name is a token.
    """
    names: list[bytes] = []
    specials: list[tuple[int, bytes]] = []
    append = names.append
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name:
            raise _Malformed(_diagnose_line(line))
        name = name.lower()
        append(name)
        if name in special:
            specials.append((special[name], value.strip(b" \t")))
    # One pass over all names at once: any byte left after deleting token bytes is an error.
    if b"".join(names).translate(None, _TOKEN_LOWER_BYTES):
        raise _Malformed(_diagnose_names(lines))
    return names, specials


def _diagnose_names(lines: list[bytes]) -> str:
    """Say what is wrong with the first header whose name is not a token (slow path)."""
    for line in lines:
        if line[: line.find(b":")].translate(None, _TOKEN_BYTES):
            return _diagnose_line(line)
    return "invalid header name"  # pragma: no cover - the fast check found one


def names_websocket(value: bytes) -> bool:
    """Whether an Upgrade value (a comma-separated protocol list) names `websocket`."""
    if value.lower() == WEBSOCKET:
        return True
    return any(p.strip(b" \t").lower() == WEBSOCKET for p in value.split(b","))


def _content_length(value: bytes) -> int:
    """The value of a Content-Length, or -1 when it is not 1*DIGIT of sane length."""
    if value.isdigit() and len(value) <= _MAX_LENGTH_DIGITS:
        return int(value)
    return -1


def _diagnose_line(line: bytes) -> str:
    """Say what is wrong with a field line that failed the fast checks (slow path)."""
    if line[:1] in (b" ", b"\t"):
        return "obs-fold (header continuation line) not accepted"
    colon = line.find(b":")
    if colon < 0:
        return "header line without a colon"
    if colon == 0:
        return "empty header name"
    if line[colon - 1 : colon] in (b" ", b"\t"):
        return "whitespace before the colon of a header"
    return "invalid character in header name"


def _diagnose_bytes(head: bytes) -> str:
    """Name the first forbidden byte of a head (slow path, only after the fast check failed)."""
    for i, byte in enumerate(head):
        if byte == 0x0D:
            if head[i + 1 : i + 2] != b"\n":
                return "bare CR in head"
        elif byte == 0x0A:
            if head[i - 1 : i] != b"\r":
                return "bare LF line ending in head"
        elif byte == 0:
            return "NUL byte in head"
        elif byte < 0x20 and byte != 0x09 or byte == 0x7F:
            return "control character in head"
    return "malformed head"  # pragma: no cover - the fast check found something
