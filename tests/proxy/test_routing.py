"""Routing: which requests the front door answers itself, and how it renders those answers."""

from __future__ import annotations

import json

from markco_trio.proxy.answers import Answer, json_error, render
from markco_trio.proxy.head import RequestHead, parse_request_head
from markco_trio.proxy.routing import FORWARD_TO_API, route
from markco_trio.readiness import ReadinessReport

READY = ReadinessReport(ready=True, waiting_for=())
NOT_READY = ReadinessReport(ready=False, waiting_for=("reconciliation", "storage"))


def get(target: str, method: str = "GET") -> RequestHead:
    return parse_request_head(f"{method} {target} HTTP/1.1\r\nHost: a".encode())


def never_asked() -> ReadinessReport:
    raise AssertionError("readiness was asked for a request that does not need it")


def test_healthz_is_answered_alive_without_asking_readiness() -> None:
    decision = route(get("/healthz"), never_asked)
    assert isinstance(decision, Answer)
    assert decision.status == 200
    assert json.loads(decision.body) == {"status": "alive"}


def test_healthz_with_a_query_is_still_healthz() -> None:
    decision = route(get("/healthz?probe=1"), never_asked)
    assert isinstance(decision, Answer) and decision.status == 200


def test_readyz_is_503_with_what_is_missing_while_not_ready() -> None:
    decision = route(get("/readyz"), lambda: NOT_READY)
    assert isinstance(decision, Answer)
    assert decision.status == 503
    assert json.loads(decision.body) == {
        "ready": False,
        "waiting_for": ["reconciliation", "storage"],
    }


def test_readyz_is_200_when_ready() -> None:
    decision = route(get("/readyz"), lambda: READY)
    assert isinstance(decision, Answer)
    assert decision.status == 200
    assert json.loads(decision.body) == {"ready": True, "waiting_for": []}


def test_health_endpoints_refuse_other_methods_with_405() -> None:
    decision = route(get("/healthz", "POST"), never_asked)
    assert isinstance(decision, Answer)
    assert decision.status == 405
    assert (b"allow", b"GET, HEAD") in decision.headers


def test_everything_else_is_forwarded_to_the_api() -> None:
    for target in ("/", "/api/v1/me", "/healthz/", "/healthzz", "/readyz/x", "/u", "/users/abc"):
        assert route(get(target), never_asked) is FORWARD_TO_API


def test_an_answer_renders_as_a_complete_keep_alive_response() -> None:
    raw = render(Answer(200, b'{"a":1}'))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 7" in head and b"connection: keep-alive" in head
    assert body == b'{"a":1}'


def test_an_answer_to_head_keeps_the_length_but_sends_no_body() -> None:
    raw = render(Answer(200, b"12345"), head_only=True)
    assert b"content-length: 5" in raw and raw.endswith(b"\r\n\r\n")


def test_an_answer_that_closes_says_so() -> None:
    assert b"connection: close" in render(Answer(400, b"{}"), keep_alive=False)


def test_errors_follow_the_api_convention() -> None:
    answer = json_error(502, "upstream_unavailable", "try again")
    assert answer.status == 502
    assert json.loads(answer.body) == {
        "error": {"code": "upstream_unavailable", "message": "try again"}
    }
