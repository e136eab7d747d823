"""Which way a request goes: answered here, or forwarded to the API app.

Pure and tiny: a request head in, a `Decision` out, no sockets. The front door answers `/healthz`
itself (so a crashed API does not make a live daemon look dead) and `/readyz` from the daemon's
`ReadinessReport`; everything else goes to the API upstream. The per-user editor routes
(`/u/<userId>/...`) join here as another kind of decision.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final

from markco_trio.proxy.answers import Answer
from markco_trio.proxy.head import RequestHead
from markco_trio.readiness import ReadinessReport

__all__ = ["FORWARD_TO_API", "Decision", "ForwardToApi", "route"]


class ForwardToApi:
    """Decision: forward the request, as it is, to the API app."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FORWARD_TO_API"


FORWARD_TO_API: Final = ForwardToApi()

Decision = Answer | ForwardToApi

_ALIVE: Final = Answer(200, b'{"status":"alive"}')
_METHOD_NOT_ALLOWED: Final = Answer(
    405,
    b'{"error":{"code":"method_not_allowed","message":"use GET or HEAD"}}',
    headers=((b"allow", b"GET, HEAD"),),
)


def route(head: RequestHead, readiness: Callable[[], ReadinessReport]) -> Decision:
    """Decide what to do with `head`; `readiness` is asked only for `/readyz`."""
    path = head.path
    if path == b"/healthz":
        if head.method != b"GET" and head.method != b"HEAD":
            return _METHOD_NOT_ALLOWED
        return _ALIVE
    if path == b"/readyz":
        if head.method != b"GET" and head.method != b"HEAD":
            return _METHOD_NOT_ALLOWED
        return readyz_answer(readiness())
    return FORWARD_TO_API


def readyz_answer(report: ReadinessReport) -> Answer:
    """200 when ready, else 503; the body says what the daemon still waits for."""
    body = json.dumps(
        {"ready": report.ready, "waiting_for": list(report.waiting_for)}, separators=(",", ":")
    )
    return Answer(200 if report.ready else 503, body.encode())
