"""Which origin a Host names when editors have their own (`proxy/hosts.py`): pure, no sockets."""

from __future__ import annotations

import pytest

from markco_trio.proxy.answers import Answer
from markco_trio.proxy.head import RequestHead, parse_request_head
from markco_trio.proxy.hosts import (
    MAIN,
    EditorAuthRoute,
    EditorHosts,
    OnEditorHost,
    host_name,
)

HOSTS = EditorHosts("https://notebooks.example.org", "u.example.org")
ALICE = "0123456789abcdef0123456789abcdef"


def head(path: str, host: str, method: str = "GET") -> RequestHead:
    raw = f"{method} {path} HTTP/1.1\r\nHost: {host}".encode()
    return parse_request_head(raw, max_headers=100, max_bytes=65536)


@pytest.mark.parametrize(("value", "name"), [
    (b"A.U.Example.ORG:443", b"a.u.example.org"), (b"[::1]:3000", b"[::1]"),
    (b"example.org.", b"example.org"), (b"", None), (None, None)])
def test_a_host_header_names_a_host_without_its_port(value: bytes | None,
                                                    name: bytes | None) -> None:
    assert host_name(value) == name


def test_the_public_hosts_name_is_the_main_origin_on_any_port() -> None:
    assert HOSTS.owner_of(b"notebooks.example.org") is MAIN
    assert HOSTS.owner_of(b"notebooks.example.org:8443") is MAIN


def test_one_label_under_the_editor_domain_is_that_users_origin() -> None:
    assert HOSTS.owner_of(f"{ALICE}.u.example.org".encode()) == ALICE


@pytest.mark.parametrize("host", [b"u.example.org", b"a.b.u.example.org", b"a_b.u.example.org",
                                  b"evilu.example.org", b"example.org", b"a.u.example.org.evil"])
def test_other_names_are_no_origin(host: bytes) -> None:
    assert HOSTS.owner_of(host) is None


def test_an_editor_origin_has_the_public_urls_scheme_and_port() -> None:
    assert HOSTS.origin(ALICE) == f"https://{ALICE}.u.example.org"
    assert EditorHosts("http://127.0.0.1:3000", "u.test").origin("a") == "http://a.u.test:3000"


def test_the_root_of_an_editor_origin_leads_to_the_editor() -> None:
    answer = HOSTS.route(head("/", f"{ALICE}.u.example.org"))
    assert isinstance(answer, Answer) and answer.status == 302
    assert (b"location", f"/u/{ALICE}/".encode()) in answer.headers


def test_an_editor_origin_serves_its_own_editor_and_handshake() -> None:
    host = f"{ALICE}.u.example.org"
    routed = HOSTS.route(head(f"/u/{ALICE}/x?y", host))
    assert isinstance(routed, OnEditorHost) and routed.path.target == b"/x?y"
    auth = HOSTS.route(head("/_markco/editor-auth?code=c", host))
    assert auth == EditorAuthRoute(ALICE)


@pytest.mark.parametrize("path", ["/u/ffff/", "/api/v1/me", "/dashboard", "/editor-auth",
                                  "/_markco/progress/ffff"])
def test_an_editor_origin_serves_nothing_else(path: str) -> None:
    answer = HOSTS.route(head(path, f"{ALICE}.u.example.org"))
    assert isinstance(answer, Answer) and answer.status == 404
