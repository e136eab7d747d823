"""Which way a request goes: answered here, to a user's editor, or to the API app.

Pure and tiny: a request head in, a `Decision` out, no sockets. The front door answers `/healthz`
itself (so a crashed API does not make a live daemon look dead), `/readyz` from the daemon's
`ReadinessReport`, and its own `/_markco/` resources (the wait page's script and progress
stream). `/u/<userId>/...` is a `UserPath`: the editor gate (`gate.py`) decides who may pass.
Everything else goes to the API upstream. Paths we refuse to interpret (dot segments, a leading
`//`: see `paths.py`) are answered 400 whichever way they would have gone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from markco_trio.proxy.answers import Answer
from markco_trio.proxy.head import RequestHead
from markco_trio.proxy.paths import (
    NO_EDITOR,
    PROXY_PREFIX,
    USER_PREFIX,
    UserPath,
    bad_path,
    split_user_path,
    valid_user_id,
)
from markco_trio.proxy.waiting import PROGRESS_PREFIX, WAIT_SCRIPT, WAIT_SCRIPT_PATH
from markco_trio.readiness import ReadinessReport

__all__ = ["FORWARD_TO_API", "Decision", "ForwardToApi", "ProgressRoute", "UserPath", "route"]


class ForwardToApi:
    """Decision: forward the request, as it is, to the API app."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FORWARD_TO_API"


FORWARD_TO_API: Final = ForwardToApi()


@dataclass(frozen=True, slots=True)
class ProgressRoute:
    """Decision: stream the start progress of `owner`'s editor (for the wait page)."""

    owner: str


Decision = Answer | ForwardToApi | UserPath | ProgressRoute

_ALIVE: Final = Answer(200, b'{"status":"alive"}')
_METHOD_NOT_ALLOWED: Final = Answer(
    405,
    b'{"error":{"code":"method_not_allowed","message":"use GET or HEAD"}}',
    headers=((b"allow", b"GET, HEAD"),),
)


def route(head: RequestHead, readiness: Callable[[], ReadinessReport]) -> Decision:
    """Decide what to do with `head`; `readiness` is asked only for `/readyz`."""
    path = head.path
    refused = bad_path(path)
    if refused is not None:
        return refused
    if path[:3] == USER_PREFIX:
        return split_user_path(path, head.target)
    if path[:9] == PROXY_PREFIX:
        return _own_resource(head, path)
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


def _own_resource(head: RequestHead, path: bytes) -> Decision:
    if head.method != b"GET" and head.method != b"HEAD":
        return _METHOD_NOT_ALLOWED
    if path == WAIT_SCRIPT_PATH:
        return WAIT_SCRIPT
    if path[: len(PROGRESS_PREFIX)] == PROGRESS_PREFIX:
        owner = path[len(PROGRESS_PREFIX) :]
        if valid_user_id(owner):
            return ProgressRoute(owner.decode("ascii"))
    return NO_EDITOR
