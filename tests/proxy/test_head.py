"""The request and response head parsers: what they accept, and every shape they refuse."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markco_trio.proxy.head import (
    BadRequest,
    BadResponse,
    parse_request_head,
    parse_response_head,
)

BROWSER_GET = (
    b"GET /api/v1/projects?limit=20 HTTP/1.1\r\n"
    b"Host: markco.dev\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: application/json\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: markco_session=abc"
)


def head(*lines: bytes) -> bytes:
    return b"\r\n".join(lines)


def test_a_browser_get_is_parsed_into_method_target_path_and_flags() -> None:
    h = parse_request_head(BROWSER_GET)
    assert (h.method, h.target, h.path) == (
        b"GET",
        b"/api/v1/projects?limit=20",
        b"/api/v1/projects",
    )
    assert h.http11 and h.keep_alive
    assert h.host == b"markco.dev"
    assert h.content_length is None and not h.chunked and not h.has_body
    assert h.upgrade is None and not h.expect_continue


def test_raw_header_lines_are_kept_beside_lower_cased_names() -> None:
    h = parse_request_head(BROWSER_GET)
    assert h.names == [b"host", b"user-agent", b"accept", b"connection", b"cookie"]
    assert h.lines[0] == b"Host: markco.dev"
    assert h.lines[4] == b"Cookie: markco_session=abc"


def test_header_values_are_looked_up_by_lower_case_name_without_ows() -> None:
    h = parse_request_head(head(b"GET / HTTP/1.1", b"Host: a", b"X-A:  one \t", b"x-a: two"))
    assert h.get(b"x-a") == b"one"
    assert h.get_all(b"x-a") == [b"one", b"two"]
    assert h.get(b"missing") is None


def test_content_length_is_read() -> None:
    h = parse_request_head(head(b"POST /u HTTP/1.1", b"Host: a", b"Content-Length: 42"))
    assert h.content_length == 42 and h.has_body


def test_chunked_transfer_encoding_is_read_case_insensitively() -> None:
    h = parse_request_head(head(b"POST /u HTTP/1.1", b"Host: a", b"Transfer-Encoding: Chunked"))
    assert h.chunked and h.has_body


def test_connection_close_turns_keep_alive_off() -> None:
    h = parse_request_head(head(b"GET / HTTP/1.1", b"Host: a", b"Connection: close"))
    assert not h.keep_alive


def test_http10_keeps_alive_only_when_asked() -> None:
    assert not parse_request_head(b"GET / HTTP/1.0").keep_alive
    asked = parse_request_head(head(b"GET / HTTP/1.0", b"Connection: Keep-Alive"))
    assert asked.keep_alive and not asked.http11


def test_http10_may_omit_host() -> None:
    assert parse_request_head(b"GET / HTTP/1.0").host is None


def test_connection_names_further_hop_by_hop_headers() -> None:
    h = parse_request_head(head(b"GET / HTTP/1.1", b"Host: a", b"Connection: keep-alive, X-Hop"))
    assert h.connection_names == (b"x-hop",)


def test_an_upgrade_is_recognised_for_a_get_with_connection_upgrade() -> None:
    h = parse_request_head(
        head(b"GET /ws HTTP/1.1", b"Host: a", b"Connection: Upgrade", b"Upgrade: websocket")
    )
    assert h.upgrade == b"websocket"


@pytest.mark.parametrize("offer", [b"h2c", b"H2C", b"TLS/1.0", b"websocketx", b"web socket"])
def test_an_upgrade_to_another_protocol_than_websocket_is_not_an_upgrade(offer: bytes) -> None:
    h = parse_request_head(
        head(b"GET / HTTP/1.1", b"Host: a", b"Connection: Upgrade", b"Upgrade: " + offer)
    )
    assert h.upgrade is None


@pytest.mark.parametrize(
    "offer", [b"WebSocket", b"websocket, h2c", b"h2c, WEBSOCKET", b"foo/2 ,\twebsocket"]
)
def test_an_offer_naming_websocket_in_any_case_is_a_websocket_upgrade(offer: bytes) -> None:
    h = parse_request_head(
        head(b"GET /ws HTTP/1.1", b"Host: a", b"Connection: UPGRADE", b"Upgrade: " + offer)
    )
    assert h.upgrade == b"websocket"


def test_two_upgrade_headers_are_one_offer() -> None:
    h = parse_request_head(
        head(b"GET /ws HTTP/1.1", b"Host: a", b"Connection: upgrade", b"Upgrade: h2c",
             b"Upgrade: websocket")
    )
    assert h.upgrade == b"websocket"


def test_connection_upgrade_without_an_upgrade_header_is_not_an_upgrade() -> None:
    h = parse_request_head(head(b"GET /ws HTTP/1.1", b"Host: a", b"Connection: upgrade"))
    assert h.upgrade is None


def test_upgrade_without_connection_upgrade_is_not_an_upgrade() -> None:
    h = parse_request_head(head(b"GET /ws HTTP/1.1", b"Host: a", b"Upgrade: websocket"))
    assert h.upgrade is None


def test_upgrade_with_a_body_is_not_an_upgrade() -> None:
    h = parse_request_head(
        head(
            b"POST /ws HTTP/1.1",
            b"Host: a",
            b"Connection: upgrade",
            b"Upgrade: h2c",
            b"Content-Length: 3",
        )
    )
    assert h.upgrade is None


def test_expect_100_continue_is_noted() -> None:
    h = parse_request_head(
        head(b"PUT /f HTTP/1.1", b"Host: a", b"Expect: 100-Continue", b"Content-Length: 9")
    )
    assert h.expect_continue


def test_options_asterisk_is_accepted() -> None:
    assert parse_request_head(head(b"OPTIONS * HTTP/1.1", b"Host: a")).path == b"*"


def test_extension_methods_that_are_tokens_are_accepted() -> None:
    assert parse_request_head(head(b"PROPFIND /dav HTTP/1.1", b"Host: a")).method == b"PROPFIND"


def test_obs_text_in_a_header_value_is_accepted() -> None:
    h = parse_request_head(head(b"GET / HTTP/1.1", b"Host: a", b"X-Name: Zo\xc3\xab"))
    assert h.get(b"x-name") == b"Zo\xc3\xab"


def test_x_request_id_is_noted_as_sent() -> None:
    h = parse_request_head(head(b"GET / HTTP/1.1", b"Host: a", b"X-Request-Id: abc-1"))
    assert h.request_id == b"abc-1"


GOOD = [b"GET / HTTP/1.1", b"Host: a"]

REFUSED = [
    # --- request smuggling shapes
    ("cl-and-te", [*GOOD, b"Content-Length: 5", b"Transfer-Encoding: chunked"], 400),
    ("te-and-cl", [*GOOD, b"Transfer-Encoding: chunked", b"Content-Length: 5"], 400),
    ("duplicate-cl-equal", [*GOOD, b"Content-Length: 5", b"Content-Length: 5"], 400),
    ("duplicate-cl-different", [*GOOD, b"Content-Length: 5", b"Content-Length: 6"], 400),
    ("cl-list", [*GOOD, b"Content-Length: 5, 5"], 400),
    ("cl-signed", [*GOOD, b"Content-Length: +5"], 400),
    ("cl-negative", [*GOOD, b"Content-Length: -1"], 400),
    ("cl-hex", [*GOOD, b"Content-Length: 0x10"], 400),
    ("cl-empty", [*GOOD, b"Content-Length:"], 400),
    ("cl-inner-space", [*GOOD, b"Content-Length: 1 0"], 400),
    ("cl-too-long", [*GOOD, b"Content-Length: 1234567890123456789"], 400),
    ("cl-unicode-digit", [*GOOD, "Content-Length: \u0661".encode()], 400),
    ("te-gzip", [*GOOD, b"Transfer-Encoding: gzip"], 501),
    ("te-list", [*GOOD, b"Transfer-Encoding: gzip, chunked"], 501),
    ("te-chunked-twice-in-list", [*GOOD, b"Transfer-Encoding: chunked, chunked"], 501),
    ("te-xchunked", [*GOOD, b"Transfer-Encoding: xchunked"], 501),
    ("te-chunked-with-params", [*GOOD, b"Transfer-Encoding: chunked;q=1"], 501),
    ("te-duplicate", [*GOOD, b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], 400),
    ("te-in-http10", [b"POST / HTTP/1.0", b"Transfer-Encoding: chunked"], 400),
    ("te-vertical-tab", [*GOOD, b"Transfer-Encoding:\x0bchunked"], 400),
    ("obs-fold", [*GOOD, b"X-A: one", b" two"], 400),
    ("obs-fold-tab", [*GOOD, b"X-A: one", b"\ttwo"], 400),
    ("obs-fold-first-header", [b"GET / HTTP/1.1", b" Host: a"], 400),
    ("space-before-colon", [*GOOD, b"Content-Length : 5"], 400),
    ("tab-before-colon", [*GOOD, b"Transfer-Encoding\t: chunked"], 400),
    # --- line endings and bytes
    ("bare-lf", [b"GET / HTTP/1.1\nHost: a"], 400),
    ("bare-lf-in-value", [*GOOD, b"X-A: a\nX-B: b"], 400),
    ("bare-cr", [*GOOD, b"X-A: a\rX-B: b"], 400),
    ("cr-cr-lf", [*GOOD, b"X-A: a\r"], 400),
    ("nul-in-value", [*GOOD, b"X-A: a\x00b"], 400),
    ("nul-in-name", [*GOOD, b"X-\x00A: a"], 400),
    ("control-in-value", [*GOOD, b"X-A: a\x01b"], 400),
    ("escape-in-value", [*GOOD, b"X-A: \x1b[31m"], 400),
    ("del-in-value", [*GOOD, b"X-A: a\x7fb"], 400),
    ("nul-in-target", [b"GET /a\x00b HTTP/1.1", b"Host: a"], 400),
    # --- header names
    ("name-with-bracket", [*GOOD, b"X[A]: a"], 400),
    ("name-with-slash", [*GOOD, b"X/A: a"], 400),
    ("name-with-quote", [*GOOD, b'X"A: a'], 400),
    ("name-non-ascii", [*GOOD, b"X-\xc3\xa9: a"], 400),
    ("name-empty", [*GOOD, b": a"], 400),
    ("no-colon", [*GOOD, b"X-A a"], 400),
    ("empty-line-inside", [*GOOD, b"", b"X-A: a"], 400),
    # --- request line
    ("request-line-empty", [b"", b"Host: a"], 400),
    ("request-line-two-parts", [b"GET /", b"Host: a"], 400),
    ("request-line-double-space", [b"GET  / HTTP/1.1", b"Host: a"], 400),
    ("request-line-tab", [b"GET\t/ HTTP/1.1", b"Host: a"], 400),
    ("request-line-trailing-space", [b"GET / HTTP/1.1 ", b"Host: a"], 400),
    ("space-in-target", [b"GET /a b HTTP/1.1", b"Host: a"], 400),
    ("method-with-slash", [b"G/T / HTTP/1.1", b"Host: a"], 400),
    ("method-empty", [b" / HTTP/1.1", b"Host: a"], 400),
    ("method-too-long", [b"X" * 40 + b" / HTTP/1.1", b"Host: a"], 400),
    ("target-relative", [b"GET index.html HTTP/1.1", b"Host: a"], 400),
    ("target-absolute-form", [b"GET http://evil.example/ HTTP/1.1", b"Host: a"], 400),
    ("target-authority-form", [b"CONNECT evil.example:443 HTTP/1.1", b"Host: a"], 400),
    ("target-asterisk-for-get", [b"GET * HTTP/1.1", b"Host: a"], 400),
    ("target-fragment", [b"GET /a#b HTTP/1.1", b"Host: a"], 400),
    ("target-non-ascii", [b"GET /caf\xc3\xa9 HTTP/1.1", b"Host: a"], 400),
    ("target-backslash-ok-but-del", [b"GET /a\x7f HTTP/1.1", b"Host: a"], 400),
    ("version-lower-case", [b"GET / http/1.1", b"Host: a"], 400),
    ("version-garbage", [b"GET / HTTP/one", b"Host: a"], 400),
    ("version-http2", [b"GET / HTTP/2.0", b"Host: a"], 505),
    ("version-http12", [b"GET / HTTP/1.2", b"Host: a"], 505),
    ("version-http09", [b"GET / HTTP/0.9", b"Host: a"], 505),
    # --- Host, Expect, Connection
    ("missing-host", [b"GET / HTTP/1.1"], 400),
    ("duplicate-host", [*GOOD, b"Host: b"], 400),
    ("host-with-path", [b"GET / HTTP/1.1", b"Host: a/b"], 400),
    ("host-with-userinfo", [b"GET / HTTP/1.1", b"Host: user@a"], 400),
    ("host-with-space", [b"GET / HTTP/1.1", b"Host: a b"], 400),
    ("host-bad-port", [b"GET / HTTP/1.1", b"Host: a:http"], 400),
    ("expect-other", [*GOOD, b"Expect: 200-ok"], 417),
    ("connection-bad-token", [*GOOD, b"Connection: close, x y"], 400),
]


@pytest.mark.parametrize(
    ("lines", "status"),
    [(lines, status) for _, lines, status in REFUSED],
    ids=[name for name, _, _ in REFUSED],
)
def test_refused_shapes_get_the_right_status(lines: list[bytes], status: int) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request_head(head(*lines))
    assert caught.value.status == status


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (head(*GOOD, b"X-A: one", b" two"), "obs-fold"),
        (b"GET / HTTP/1.1\nHost: a", "bare LF"),
        (head(*GOOD, b"X-A: a\rb"), "bare CR"),
        (head(*GOOD, b"X-A: a\x00"), "NUL"),
        (head(*GOOD, b"X-A : a"), "whitespace before the colon"),
        (head(*GOOD, b"Content-Length: 1", b"Transfer-Encoding: chunked"), "Content-Length and"),
    ],
    ids=["obs-fold", "bare-lf", "bare-cr", "nul", "space-before-colon", "cl-te"],
)
def test_refusals_name_what_was_wrong(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request_head(raw)
    assert reason in caught.value.reason


def test_too_many_headers_get_431() -> None:
    lines = [*GOOD] + [b"X-%d: v" % i for i in range(101)]
    with pytest.raises(BadRequest) as caught:
        parse_request_head(head(*lines))
    assert caught.value.status == 431


def test_a_head_over_the_byte_limit_gets_431() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_request_head(head(*GOOD, b"X-Big: " + b"a" * 2000), max_bytes=1024)
    assert caught.value.status == 431


def test_the_header_count_limit_is_configurable() -> None:
    with pytest.raises(BadRequest):
        parse_request_head(head(*GOOD, b"X-A: 1", b"X-B: 2"), max_headers=2)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_nothing_but_bad_request(data: bytes) -> None:
    try:
        parse_request_head(data)
    except BadRequest as exc:
        assert exc.status in (400, 417, 431, 501, 505)


# Heads built from plausible pieces reach deeper than random bytes do.
_pieces = st.sampled_from(
    [
        b"GET",
        b"POST",
        b" ",
        b"/",
        b"/a?b=c",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b"\r\n",
        b"\n",
        b"\r",
        b":",
        b"Host: a",
        b"Content-Length: 5",
        b"Content-Length: x",
        b"Transfer-Encoding: chunked",
        b"Connection: close, upgrade, X-Y",
        b"Upgrade: websocket",
        b"Expect: 100-continue",
        b"X-Request-Id: r",
        b"\t",
        b"\x00",
        b"\xff",
        b"a",
    ]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(_pieces, max_size=30))
def test_structured_garbage_raises_nothing_but_bad_request(pieces: list[bytes]) -> None:
    try:
        parsed = parse_request_head(b"".join(pieces))
    except BadRequest:
        return
    # Whatever was accepted is internally consistent.
    assert len(parsed.names) == len(parsed.lines)
    assert not (parsed.chunked and parsed.content_length is not None)


@settings(max_examples=300, deadline=None)
@given(st.lists(_pieces, max_size=30))
def test_response_parser_raises_nothing_but_bad_response(pieces: list[bytes]) -> None:
    try:
        parse_response_head(b"HTTP/1.1 200 OK\r\n" + b"".join(pieces))
    except BadResponse:
        pass


def test_a_response_head_is_parsed() -> None:
    r = parse_response_head(head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Server: x"))
    assert (r.status, r.content_length, r.chunked, r.keep_alive, r.hop_by_hop) == (
        200,
        5,
        False,
        True,
        False,
    )


def test_a_response_status_line_may_omit_the_reason() -> None:
    assert parse_response_head(b"HTTP/1.1 204 ").status == 204
    assert parse_response_head(b"HTTP/1.1 204").status == 204


def test_a_chunked_response_with_connection_close_is_noted() -> None:
    r = parse_response_head(
        head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", b"Connection: close")
    )
    assert r.chunked and not r.keep_alive and r.hop_by_hop


@pytest.mark.parametrize(
    "raw",
    [
        head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Transfer-Encoding: chunked"),
        head(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Content-Length: 6"),
        head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip"),
        head(b"HTTP/1.1 20 OK"),
        head(b"HTTP/1.1 abc OK"),
        head(b"HTTP/2 200 OK"),
        head(b"HTTP/1.1 200 OK", b"X: a\nY: b"),
    ],
    ids=["cl-te", "duplicate-cl", "te-gzip", "short-status", "text-status", "http2", "bare-lf"],
)
def test_malformed_responses_are_refused(raw: bytes) -> None:
    with pytest.raises(BadResponse):
        parse_response_head(raw)
