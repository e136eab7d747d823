"""Head rewriting: what a request looks like upstream, and a response on its way back."""

from __future__ import annotations

import pytest

from markco_trio.proxy.head import parse_request_head, parse_response_head
from markco_trio.proxy.rewrite import (
    RequestIds,
    TrustedProxies,
    acceptable_request_id,
    forward_request_head,
    forward_response_head,
    forwarded_client,
)


def forwarded(*lines: bytes, trusted: bool = False, client: bytes = b"198.51.100.7") -> list[bytes]:
    head = parse_request_head(b"\r\n".join(lines))
    out = forward_request_head(
        head, client_ip=client, scheme=b"http", request_id=b"rid-1", trusted=trusted
    )
    assert out.endswith(b"\r\n\r\n")
    return out[:-4].split(b"\r\n")


def names(lines: list[bytes]) -> list[bytes]:
    return [line.partition(b":")[0].lower() for line in lines[1:]]


def value(lines: list[bytes], name: bytes) -> bytes | None:
    for line in lines[1:]:
        n, _, v = line.partition(b":")
        if n.lower() == name:
            return v.strip()
    return None


def test_the_request_line_goes_upstream_as_http11() -> None:
    assert forwarded(b"GET /a?b HTTP/1.0")[0] == b"GET /a?b HTTP/1.1"


def test_end_to_end_headers_are_kept_as_sent() -> None:
    lines = forwarded(b"GET / HTTP/1.1", b"Host: a", b"Accept: text/html", b"Cookie: s=1")
    assert lines[1:4] == [b"Host: a", b"Accept: text/html", b"Cookie: s=1"]


def test_markco_identity_headers_from_clients_are_always_stripped() -> None:
    for trusted in (False, True):
        lines = forwarded(
            b"GET / HTTP/1.1",
            b"Host: a",
            b"X-Markco-User: admin",
            b"x-markco-role: owner",
            trusted=trusted,
        )
        assert b"x-markco-user" not in names(lines)
        assert b"x-markco-role" not in names(lines)


def test_forwarded_headers_come_from_the_connection_for_untrusted_peers() -> None:
    lines = forwarded(
        b"GET / HTTP/1.1",
        b"Host: markco.dev",
        b"X-Forwarded-For: 10.0.0.1",
        b"X-Forwarded-Proto: https",
        b"X-Forwarded-Host: evil.example",
        b"Forwarded: for=10.0.0.1",
        b"X-Real-IP: 10.0.0.1",
    )
    assert names(lines).count(b"x-forwarded-for") == 1
    assert value(lines, b"x-forwarded-for") == b"198.51.100.7"
    assert value(lines, b"x-forwarded-proto") == b"http"
    assert value(lines, b"x-forwarded-host") == b"markco.dev"
    assert b"forwarded" not in names(lines) and b"x-real-ip" not in names(lines)


def test_a_trusted_proxy_keeps_its_forwarded_headers_and_gets_appended() -> None:
    lines = forwarded(
        b"GET / HTTP/1.1",
        b"Host: markco.dev",
        b"X-Forwarded-For: 203.0.113.9",
        b"X-Forwarded-Proto: https",
        trusted=True,
        client=b"127.0.0.1",
    )
    assert value(lines, b"x-forwarded-for") == b"203.0.113.9, 127.0.0.1"
    assert value(lines, b"x-forwarded-proto") == b"https"
    assert names(lines).count(b"x-forwarded-proto") == 1
    assert value(lines, b"x-forwarded-host") == b"markco.dev"


def test_hop_by_hop_headers_are_removed() -> None:
    lines = forwarded(
        b"GET / HTTP/1.1",
        b"Host: a",
        b"Connection: keep-alive, X-Hop",
        b"Keep-Alive: timeout=5",
        b"TE: trailers",
        b"Trailer: X-Sum",
        b"Upgrade: websocket",
        b"Proxy-Authorization: Basic x",
        b"Proxy-Connection: keep-alive",
        b"Proxy: http://evil.example",
        b"X-Hop: 1",
        b"X-Kept: 1",
    )
    assert names(lines)[:2] == [b"host", b"x-kept"]
    for gone in (b"connection", b"keep-alive", b"te", b"trailer", b"upgrade", b"x-hop"):
        assert gone not in names(lines)
    assert not any(n.startswith(b"proxy") for n in names(lines))


def test_connection_cannot_make_the_proxy_drop_framing_or_forwarding_headers() -> None:
    lines = forwarded(
        b"POST / HTTP/1.1",
        b"Host: a",
        b"Content-Length: 3",
        b"Connection: content-length, host, x-forwarded-for, x-request-id",
    )
    assert value(lines, b"content-length") == b"3"
    assert value(lines, b"host") == b"a"
    assert value(lines, b"x-forwarded-for") == b"198.51.100.7"


def test_a_chunked_request_is_restated_as_exactly_chunked() -> None:
    lines = forwarded(b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: Chunked")
    assert b"transfer-encoding: chunked" in lines
    assert b"Transfer-Encoding: Chunked" not in lines


def test_an_upgrade_request_keeps_connection_upgrade() -> None:
    lines = forwarded(
        b"GET /ws HTTP/1.1", b"Host: a", b"Connection: Upgrade", b"Upgrade: websocket"
    )
    assert value(lines, b"connection") == b"upgrade"
    assert value(lines, b"upgrade") == b"websocket"


def test_an_h2c_offer_leaves_as_a_plain_request() -> None:
    lines = forwarded(
        b"GET / HTTP/1.1", b"Host: a", b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c",
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
    )
    assert not {b"connection", b"upgrade", b"http2-settings"} & set(names(lines))


def test_http2_settings_never_goes_upstream() -> None:
    lines = forwarded(b"GET / HTTP/1.1", b"Host: a", b"HTTP2-Settings: AAMAAABk")
    assert b"http2-settings" not in names(lines)


def test_an_offer_naming_websocket_goes_upstream_as_websocket_alone() -> None:
    lines = forwarded(
        b"GET /ws HTTP/1.1", b"Host: a", b"Connection: Upgrade", b"Upgrade: h2c, WebSocket"
    )
    assert value(lines, b"upgrade") == b"websocket"
    assert names(lines).count(b"upgrade") == 1


def test_every_request_leaves_with_exactly_one_request_id() -> None:
    lines = forwarded(b"GET / HTTP/1.1", b"Host: a", b"X-Request-Id: client-chosen")
    assert names(lines).count(b"x-request-id") == 1
    assert value(lines, b"x-request-id") == b"rid-1"


def test_an_http10_request_without_host_gets_one() -> None:
    assert value(forwarded(b"GET / HTTP/1.0"), b"host") == b"localhost"


@pytest.mark.parametrize(
    ("candidate", "ok"),
    [
        (b"abc-123", True),
        (b"4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7", True),
        (None, False),
        (b"", False),
        (b"a" * 129, False),
        (b"a b", False),
        (b'a"b', False),
        (b"x\xc3\xa9", False),
    ],
)
def test_client_request_ids_are_kept_only_when_short_and_plain(
    candidate: bytes | None, ok: bool
) -> None:
    assert acceptable_request_id(candidate) is ok


def test_generated_request_ids_are_unique_and_acceptable() -> None:
    ids = RequestIds()
    made = {ids.next() for _ in range(1000)}
    assert len(made) == 1000
    assert all(acceptable_request_id(i) for i in made)


RAW_RESPONSE = b"HTTP/1.1 200 \r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n"


def test_a_response_that_needs_no_change_is_passed_on_as_received() -> None:
    resp = parse_response_head(RAW_RESPONSE[:-4])
    assert forward_response_head(resp, RAW_RESPONSE) is RAW_RESPONSE


def test_a_response_loses_its_hop_by_hop_headers_and_states_connection() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n"
        b"X-Hop: 1\r\nProxy-Authenticate: Basic\r\ncontent-length: 0\r\n\r\n"
    )
    out = forward_response_head(parse_response_head(raw[:-4]), raw, connection=b"close")
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def test_a_dechunked_response_loses_its_transfer_encoding() -> None:
    raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    out = forward_response_head(
        parse_response_head(raw[:-4]), raw, connection=b"close", chunked=False
    )
    assert b"transfer-encoding" not in out


def test_a_switching_protocols_response_keeps_its_upgrade() -> None:
    raw = (
        b"HTTP/1.1 101 \r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-accept: x\r\n\r\n"
    )
    out = forward_response_head(parse_response_head(raw[:-4]), raw, connection=b"upgrade")
    assert b"connection: upgrade\r\nupgrade: websocket" in out
    assert b"sec-websocket-accept: x" in out


def test_trusted_proxies_match_addresses_and_networks() -> None:
    trusted = TrustedProxies(["10.0.0.0/8", "192.0.2.1", "::1"])
    assert "10.1.2.3" in trusted and "192.0.2.1" in trusted and "::1" in trusted
    assert "192.0.2.2" not in trusted and "11.0.0.1" not in trusted
    assert "::ffff:10.0.0.9" in trusted  # IPv4-mapped peers of a dual-stack listener
    assert "not an ip" not in trusted


def test_no_trusted_proxies_trusts_nobody() -> None:
    assert "127.0.0.1" not in TrustedProxies()


def test_a_malformed_trusted_proxy_entry_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'10.0.0.300'"):
        TrustedProxies(["10.0.0.300"])


@pytest.mark.parametrize(
    ("lines", "client"),
    [
        ((b"X-Forwarded-For: 203.0.113.9",), b"203.0.113.9"),
        ((b"X-Forwarded-For: 10.0.0.1, 203.0.113.9",), b"203.0.113.9"),
        ((b"X-Forwarded-For: 10.0.0.1", b"X-Forwarded-For: 2001:db8::7 "), b"2001:db8::7"),
        ((), None),
        ((b"X-Forwarded-For: ",), None),
    ],
)
def test_the_forwarded_client_is_the_last_address_the_proxy_added(
    lines: tuple[bytes, ...], client: bytes | None
) -> None:
    head = parse_request_head(b"\r\n".join([b"GET / HTTP/1.1", b"Host: a", *lines]))
    assert forwarded_client(head) == client
