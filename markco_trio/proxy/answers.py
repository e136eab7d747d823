"""Responses the front door writes itself: health answers and the errors of the proxy.

An `Answer` is plain data (status, body, a few headers); `render` turns it into the bytes of an
HTTP/1.1 response, so routing stays pure and the trio layer just sends bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus

__all__ = ["Answer", "json_error", "render"]

_PHRASES = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete response decided without asking any upstream."""

    status: int
    body: bytes
    content_type: bytes = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()


def json_error(status: int, code: str, message: str) -> Answer:
    """An error in the API's convention: `{"error": {"code": ..., "message": ...}}`."""
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":"))
    return Answer(status, body.encode())


def render(answer: Answer, *, head_only: bool = False, keep_alive: bool = True) -> bytes:
    """The response bytes for `answer`; `head_only` for a HEAD request (length kept, no body).

    `keep_alive=False` adds `Connection: close`; the caller closes after sending. HTTP/1.0
    clients are told `Connection: keep-alive` by the caller's choice of `keep_alive` too: the
    header is harmless for HTTP/1.1 clients, so it is always sent when the connection stays open.
    """
    parts = [
        b"HTTP/1.1 %d %b" % (answer.status, _PHRASES.get(answer.status, b"Unknown")),
        b"content-type: " + answer.content_type,
        b"content-length: %d" % len(answer.body),
        b"cache-control: no-store",
    ]
    parts.extend(name + b": " + value for name, value in answer.headers)
    parts.append(b"connection: keep-alive" if keep_alive else b"connection: close")
    parts.append(b"")
    parts.append(b"" if head_only else answer.body)
    return b"\r\n".join(parts)
