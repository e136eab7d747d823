"""The data plane's pure rules, fed directly: paths, cookies, editor response filtering, and
what kind of request the gate is looking at. No sockets."""

from __future__ import annotations

import pytest

from markco_trio.authz import HeldGrant, Principal
from markco_trio.proxy import admission
from markco_trio.proxy.answers import Answer
from markco_trio.proxy.cookies import CookieRules, filter_set_cookie, strip_request_cookies
from markco_trio.proxy.head import RequestHead, parse_request_head, parse_response_head
from markco_trio.proxy.paths import UserPath, bad_path, split_user_path
from markco_trio.proxy.rewrite import EditorScope, forward_request_head, forward_response_head
from markco_trio.proxy.routing import FORWARD_TO_API, ProgressRoute, route
from markco_trio.readiness import ReadinessReport

RULES = CookieRules(["markco_session", "__Host-markco_session", "markco_login",
                     "__Host-markco_login"])
PREFIX = b"/u/alice"


def head(target: str, *headers: str, method: str = "GET") -> RequestHead:
    lines = [f"{method} {target} HTTP/1.1", "Host: markco.test", *headers]
    return parse_request_head("\r\n".join(lines).encode())


def decide(target: str) -> object:
    return route(head(target), lambda: ReadinessReport(True, ()))


# ------------------------------------------------------------------------------ paths


@pytest.mark.parametrize("path", [
    "/u/bob/../alice/", "/u/bob/./x", "/u/bob/%2e%2e/alice/", "/u/bob/%2E%2e/alice/",
    "/u/bob/..%2falice/", "/u/bob/..%2Falice/", "/u/bob/..%5calice/", "/u/bob/..\\alice/",
    "/api/../u/alice/", "/a/%2e/b", "/..",
])
def test_a_dot_segment_is_refused_however_it_is_written(path: str) -> None:
    answer = decide(path)
    assert isinstance(answer, Answer) and answer.status == 400


def test_a_path_starting_with_two_slashes_is_refused() -> None:
    answer = decide("//u/alice/")
    assert isinstance(answer, Answer) and answer.status == 400


@pytest.mark.parametrize("path", ["/.well-known/x", "/u/alice/a.b/.c.d", "/u/alice/file..txt",
                                  "/u/alice/%2e%2e%2e"])
def test_dots_inside_names_are_not_dot_segments(path: str) -> None:
    assert bad_path(path.encode()) is None


def test_a_user_path_strips_the_prefix_and_keeps_the_query() -> None:
    decision = decide("/u/alice/api/files?x=1&y=%2F")
    assert decision == UserPath("alice", b"/u/alice", b"/api/files?x=1&y=%2F")


def test_the_editor_root_is_slash() -> None:
    assert decide("/u/alice/") == UserPath("alice", b"/u/alice", b"/")


def test_without_its_trailing_slash_a_user_path_is_redirected_with_its_query() -> None:
    answer = decide("/u/alice?a=1")
    assert isinstance(answer, Answer) and answer.status == 308
    assert dict(answer.headers)[b"location"] == b"/u/alice/?a=1"


@pytest.mark.parametrize("path", ["/u//alice/", "/u/al%69ce/", "/u/alice%2fbob/",
                                  "/u/" + "a" * 65 + "/", "/u/al.ice/", "/u/alice%2f..%2fbob/"])
def test_an_id_that_is_not_literally_a_user_id_is_no_editor(path: str) -> None:
    answer = decide(path)
    # (the last one is also a dot segment once decoded: refused with 400 before any lookup)
    assert isinstance(answer, Answer) and answer.status in (404, 400)
    assert answer.status == 404 or ".." in path


def test_only_the_first_segment_picks_the_editor() -> None:
    assert decide("/u/bob/u/alice/x") == UserPath("bob", b"/u/bob", b"/u/alice/x")


def test_runs_of_slashes_in_the_rest_are_merged() -> None:
    assert decide("/u/bob//a///b") == UserPath("bob", b"/u/bob", b"/a/b")


def test_encoded_slashes_in_the_rest_are_the_editors_business() -> None:
    assert decide("/u/bob/files/a%2Fb") == UserPath("bob", b"/u/bob", b"/files/a%2Fb")


def test_other_paths_still_go_to_the_api() -> None:
    assert decide("/u") is FORWARD_TO_API
    assert decide("/users/alice/") is FORWARD_TO_API


def test_the_progress_stream_and_the_wait_script_are_the_front_doors_own() -> None:
    assert decide("/_markco/progress/alice") == ProgressRoute("alice")
    script = decide("/_markco/wait.js")
    assert isinstance(script, Answer) and script.content_type.startswith(b"text/javascript")
    for other in ("/_markco/progress/al%69ce", "/_markco/nothing"):
        answer = decide(other)
        assert isinstance(answer, Answer) and answer.status == 404


def test_split_user_path_directly() -> None:
    assert split_user_path(b"/u/a-b_C9/x", b"/u/a-b_C9/x?q") == UserPath(
        "a-b_C9", b"/u/a-b_C9", b"/x?q")


# ------------------------------------------------------------------------------ cookies


def test_markcos_cookies_are_stripped_and_the_others_kept_in_order() -> None:
    values = [b"a=1; markco_session=SECRET; b=2", b"__Host-markco_session=S2; markco_login=L"]
    assert strip_request_cookies(values, RULES) == b"a=1; b=2"


def test_a_cookie_header_of_only_markco_cookies_disappears() -> None:
    assert strip_request_cookies([b"markco_session=x;  MARKCO_SESSION=y"], RULES) is None


@pytest.mark.parametrize("value", [
    b"markco_session=planted; Path=/", b"__Host-markco_session=x; Secure; Path=/",
    b"MARKCO_Session=x", b" markco_login =x", b"=markco_session=nameless", b"nameless",
])
def test_an_editor_cannot_set_markcos_cookies_or_nameless_ones(value: bytes) -> None:
    assert filter_set_cookie(value, PREFIX, RULES) is None


def test_an_editor_cookie_loses_its_domain_and_stays_under_the_prefix() -> None:
    kept = filter_set_cookie(b"theme=dark; Domain=example.org; Path=/; HttpOnly", PREFIX, RULES)
    assert kept == b"theme=dark; HttpOnly; Path=/u/alice/"


@pytest.mark.parametrize(("path", "scoped"), [
    (b"", b"/u/alice/"), (b"; Path=/api", b"/u/alice/api"), (b"; Path=relative", b"/u/alice/"),
    (b"; Path=/u/alice/x", b"/u/alice/x"), (b"; Path=/u/alice", b"/u/alice"),
    (b"; Path=/u/bob/", b"/u/alice/u/bob/"), (b"; Path=/u/alicex", b"/u/alice/u/alicex"),
])
def test_cookie_paths_are_forced_under_the_prefix(path: bytes, scoped: bytes) -> None:
    kept = filter_set_cookie(b"k=v" + path, PREFIX, RULES)
    assert kept is not None and kept.endswith(b"Path=" + scoped)


def test_other_cookie_attributes_are_kept() -> None:
    kept = filter_set_cookie(b"k=v; Max-Age=60; Secure; SameSite=Strict", PREFIX, RULES)
    assert kept == b"k=v; Max-Age=60; Secure; SameSite=Strict; Path=/u/alice/"


def editor_response(*lines: bytes) -> bytes:
    raw = b"\r\n".join([b"HTTP/1.1 200 OK", *lines, b"", b""])
    resp = parse_response_head(raw[:-4])
    return forward_response_head(resp, raw, scope=EditorScope(PREFIX, RULES))


def test_an_editor_response_keeps_every_cookie_line_but_filters_each() -> None:
    out = editor_response(b"Set-Cookie: a=1", b"Set-Cookie: markco_session=x",
                          b"Set-Cookie: b=2; Domain=x.org", b"Content-Length: 0")
    lines = out.split(b"\r\n")
    assert b"set-cookie: a=1; Path=/u/alice/" in lines
    assert b"set-cookie: b=2; Path=/u/alice/" in lines
    assert not any(b"markco_session" in line for line in lines)


def test_an_editor_cannot_widen_a_service_worker_or_clear_the_sites_data() -> None:
    out = editor_response(b"Service-Worker-Allowed: /", b"Clear-Site-Data: \"*\"",
                          b"X-Other: kept", b"Content-Length: 0")
    assert b"service-worker-allowed" not in out.lower()
    assert b"clear-site-data" not in out.lower()
    assert b"X-Other: kept" in out


def test_an_editor_response_with_nothing_to_filter_passes_byte_for_byte() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n"
    resp = parse_response_head(raw[:-4])
    assert forward_response_head(resp, raw, scope=EditorScope(PREFIX, RULES)) is raw


def test_api_responses_are_not_filtered() -> None:
    raw = b"HTTP/1.1 200 OK\r\nSet-Cookie: markco_session=x\r\nContent-Length: 0\r\n\r\n"
    resp = parse_response_head(raw[:-4])
    assert forward_response_head(resp, raw) is raw


def test_a_request_to_an_editor_gets_its_target_drop_and_identity() -> None:
    request = parse_request_head(b"GET /u/alice/x?y HTTP/1.1\r\nHost: h\r\nCookie: a=1\r\n"
                                 b"X-Markco-User: forged\r\nAuthorization: Bearer mkt_x")
    out = forward_request_head(request, client_ip=b"127.0.0.1", scheme=b"http",
                               request_id=b"r", target=b"/x?y",
                               drop=frozenset([b"cookie", b"authorization"]),
                               add=(b"x-markco-user: alice", b"cookie: a=1"))
    lines = out.split(b"\r\n")
    assert lines[0] == b"GET /x?y HTTP/1.1"
    assert b"x-markco-user: alice" in lines and b"X-Markco-User: forged" not in lines
    assert not any(line.lower().startswith(b"authorization") for line in lines)
    assert sum(line.lower().startswith(b"cookie:") for line in lines) == 1


# ------------------------------------------------------------------------------ admission


@pytest.mark.parametrize(("headers", "method", "navigation"), [
    (("Sec-Fetch-Mode: navigate",), "GET", True),
    (("Sec-Fetch-Dest: document",), "GET", True),
    (("Sec-Fetch-Mode: cors", "Sec-Fetch-Dest: document"), "GET", False),
    (("Sec-Fetch-Mode: navigate",), "POST", False),
    (("Accept: text/html",), "GET", False),
    ((), "GET", False),
])
def test_a_navigation_is_recognised_by_fetch_metadata_only(
        headers: tuple[str, ...], method: str, navigation: bool) -> None:
    assert admission.is_navigation(head("/u/a/", *headers, method=method)) is navigation


@pytest.mark.parametrize(("headers", "method", "refused"), [
    (("Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: cors"), "GET", True),
    (("Sec-Fetch-Site: same-site", "Sec-Fetch-Mode: no-cors"), "GET", True),
    (("Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: navigate"), "GET", False),
    (("Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: navigate"), "POST", True),
    (("Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: websocket"), "GET", True),
    (("Sec-Fetch-Site: same-origin", "Sec-Fetch-Mode: cors"), "POST", False),
    (("Sec-Fetch-Site: none",), "GET", False),
    ((), "POST", False),
])
def test_cross_site_requests_other_than_navigations_are_refused(
        headers: tuple[str, ...], method: str, refused: bool) -> None:
    assert admission.refused_cross_site(head("/u/a/", *headers, method=method)) is refused


def test_only_markco_api_tokens_are_taken_from_authorization() -> None:
    assert admission.markco_bearer_token(head("/", "Authorization: Bearer mkt_abc")) == "mkt_abc"
    assert admission.markco_bearer_token(head("/", "Authorization: bearer mkt_abc")) == "mkt_abc"
    assert admission.markco_bearer_token(head("/", "Authorization: Bearer other")) is None
    assert admission.markco_bearer_token(head("/", "Authorization: Basic eDp5")) is None


def test_the_role_names_the_callers_relation_to_the_owner() -> None:
    owner = Principal("alice", "alice")
    collaborator = Principal("bob", "bob", grants=frozenset([HeldGrant("alice", "p", "editor")]))
    viewer = Principal("carol", "carol", grants=frozenset([HeldGrant("alice", "p", "viewer")]))
    admin = Principal("root", "root", is_admin=True, admin_entry=True)
    assert admission.role_of(owner, "alice") == b"owner"
    assert admission.role_of(collaborator, "alice") == b"collaborator"
    assert admission.role_of(admin, "alice") == b"admin"
    assert admission.role_of(viewer, "alice") == b"collaborator"  # (only if a plugin let it in)
