"""The exchange core (`markco_trio.proxy.core`) fed bytes directly: no socket, no clock.

Time is explicit: each transition of a `ConnectionClock` is given `now`, and `due(now)` says
which deadline passed, so timeouts are tested at exact instants without waiting.
"""

from __future__ import annotations

import pytest

from markco_trio.proxy.chunked import BadChunk
from markco_trio.proxy.core import (
    SPLICE_AT_LEAST,
    Attempts,
    ConnectionClock,
    Copy,
    Phase,
    Refusal,
    RequestBody,
    RequestReader,
    ResponsePlan,
    ResponseReader,
    answer_keeps_alive,
    error_keeps_alive,
    plan_response,
    request_body,
    switching_protocols,
)
from markco_trio.proxy.head import BadResponse, RequestHead, ResponseHead, parse_request_head

GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
INF = float("inf")


def reader(max_head_bytes: int = 8192) -> RequestReader:
    return RequestReader(max_head_bytes=max_head_bytes, max_headers=50)


def serve(*feeds: bytes) -> list[tuple[bytes, bytes]]:
    """What the trio loop does with a client's bytes, minus the sockets: cut heads, read each
    body (from the buffer and later feeds), keep going while the request keeps alive.
    Returns (target, body) per request served."""
    r = reader()
    pending = list(feeds)
    served: list[tuple[bytes, bytes]] = []
    while True:
        head = r.next_head()
        while head is None:
            if not pending:
                return served
            r.feed(pending.pop(0))
            head = r.next_head()
        body = RequestBody(head, r.take())
        received = bytearray(body.first)
        while not body.done:
            data = pending.pop(0)
            want = body.want(len(data))  # a read of at most what the body still needs
            if want < len(data):
                pending.insert(0, data[want:])
            buffer = bytearray(data[:want])
            n = body.took(buffer, want)
            received += buffer[:n]
        served.append((head.target, bytes(received)))
        if not answer_keeps_alive(head, False) and not head.has_body:
            return served
        r.push_back(body.leftover)


def request(raw: bytes) -> RequestHead:
    return parse_request_head(raw.split(b"\r\n\r\n")[0])


def response(raw: bytes) -> tuple[ResponseHead, bytes, bytes]:
    """Parse `raw` (a response head and what follows) with a ResponseReader."""
    r = ResponseReader(max_head_bytes=8192, max_headers=50)
    r.feed(raw)
    found = r.next_head()
    assert found is not None
    return found[0], found[1], r.buf


# ------------------------------------------------------------------- keep-alive, pipelining


def test_keep_alive_requests_come_one_after_another() -> None:
    assert serve(GET, GET.replace(b"/a", b"/b")) == [(b"/a", b""), (b"/b", b"")]


def test_pipelined_requests_in_one_read_are_served_in_order() -> None:
    data = GET + b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + GET
    assert serve(data) == [(b"/a", b""), (b"/p", b"hello"), (b"/a", b"")]


def test_a_head_split_across_reads_is_waited_for() -> None:
    r = reader()
    for byte in GET[:-1]:
        r.feed(bytes([byte]))
        assert r.next_head() is None
    r.feed(GET[-1:])
    head = r.next_head()
    assert head is not None and head.target == b"/a"
    assert r.buf == b""


def test_a_body_arriving_after_its_head_is_read_to_its_length() -> None:
    head = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
    assert serve(head + b"01", b"2345", b"6789" + GET) == [(b"/p", b"0123456789"), (b"/a", b"")]


def test_a_chunked_body_ends_where_its_framing_says_and_the_next_request_follows() -> None:
    head = b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    served = serve(head + b"3\r\nabc\r\n", b"0\r\n\r\n" + GET)
    assert served == [(b"/c", b"3\r\nabc\r\n0\r\n\r\n"), (b"/a", b"")]


def test_empty_lines_before_a_pipelined_request_are_skipped() -> None:
    body = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
    assert serve(b"\r\n" + body + b"\r\n\r\n" + GET) == [(b"/p", b"ok"), (b"/a", b"")]


def test_http10_without_keep_alive_ends_the_connection() -> None:
    assert serve(b"GET /a HTTP/1.0\r\n\r\n" + GET) == [(b"/a", b"")]


def test_a_locally_answered_request_with_a_body_closes_instead_of_skipping_it() -> None:
    head = request(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
    assert not answer_keeps_alive(head, draining=False)
    assert answer_keeps_alive(request(GET), draining=False)
    assert not answer_keeps_alive(request(GET), draining=True)


# ------------------------------------------------------------------- refusals and smuggling


def refusal(data: bytes, max_head_bytes: int = 8192) -> Refusal:
    r = reader(max_head_bytes)
    r.feed(data)
    with pytest.raises(Refusal) as caught:
        r.next_head()
    return caught.value


def test_content_length_with_transfer_encoding_is_refused() -> None:
    caught = refusal(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
    assert (caught.status, caught.kind) == (400, "bad_request")
    assert "Content-Length and Transfer-Encoding" in caught.reason


def test_a_duplicate_content_length_is_refused_even_when_equal() -> None:
    caught = refusal(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                     b"Content-Length: 3\r\n\r\nabc")
    assert caught.status == 400 and "duplicate Content-Length" in caught.reason


def test_an_obs_fold_continuation_line_is_refused() -> None:
    caught = refusal(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n")
    assert caught.status == 400 and "obs-fold" in caught.reason


def test_a_transfer_coding_other_than_chunked_is_not_implemented() -> None:
    caught = refusal(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert caught.status == 501


def test_a_signed_content_length_is_refused() -> None:
    assert refusal(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc").status == 400


def test_a_bare_lf_head_is_refused_without_waiting_for_more() -> None:
    caught = refusal(b"GET / HTTP/1.1\nHost: x\n\n")
    assert caught.status == 400 and "bare LF" in caught.reason


def test_a_head_reaching_the_limit_unfinished_is_refused_before_more_is_read() -> None:
    caught = refusal(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 200, max_head_bytes=128)
    assert (caught.status, caught.kind) == (431, "head_too_large")


def test_a_whole_head_over_the_limit_is_refused() -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 200 + b"\r\n\r\n"
    assert refusal(data, max_head_bytes=128).status == 431


@pytest.mark.parametrize("framing", [
    b"zz\r\nabc\r\n0\r\n\r\n",  # not hex
    b"-3\r\nabc\r\n0\r\n\r\n",  # signed
    b"3 \r\nabc\r\n0\r\n\r\n",  # whitespace in the number without an extension
    b"1000000000000000\r\n",  # 16 hex digits: past the bound
    b"3\nabc\r\n0\r\n\r\n",  # bare LF
    b"3\r\nabcd\r\n0\r\n\r\n",  # more data than the size says
])
def test_bad_chunked_framing_with_the_head_is_refused(framing: bytes) -> None:
    head = request(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(BadChunk):
        RequestBody(head, framing)


def test_bad_chunked_framing_later_in_the_body_is_refused_when_pumped() -> None:
    head = request(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = RequestBody(head, b"3\r\nabc\r\n")
    assert not body.done
    data = bytearray(b"x1\r\n")
    with pytest.raises(BadChunk):
        body.took(data, len(data))


# ------------------------------------------------------------------- Expect: 100-continue


def test_expect_100_continue_leaves_the_body_to_be_pumped() -> None:
    head = request(b"PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                   b"Content-Length: 4\r\n\r\n")
    assert head.expect_continue
    body = RequestBody(head, b"")
    assert (body.done, body.first, body.want(65536)) == (False, b"", 4)


def test_an_interim_100_comes_before_the_final_response_from_one_read() -> None:
    r = ResponseReader(max_head_bytes=8192, max_headers=50)
    r.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    first = r.next_head()
    assert first is not None and first[0].status == 100
    assert first[1] == b"HTTP/1.1 100 Continue\r\n\r\n"
    final = r.next_head()
    assert final is not None and final[0].status == 201
    assert r.buf == b"ok"


def test_an_early_final_answer_to_an_expecting_request_closes_the_client_connection() -> None:
    head = request(b"PUT /u HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                   b"Content-Length: 4\r\n\r\n")
    resp, raw, rest = response(b"HTTP/1.1 413 Too Big\r\nContent-Length: 3\r\n\r\nbig")
    plan = plan_response(head, resp, raw, rest, draining=False, body_pending=True)
    assert not plan.client_keep and b"connection: close" in plan.send.lower()
    assert not error_keeps_alive(head, body_pending=True, draining=False)


def test_an_unknown_expectation_is_refused_with_417() -> None:
    assert refusal(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n").status == 417


# ------------------------------------------------------------------- retries


def test_a_whole_get_is_sent_again_once_after_a_reused_connection_closed_early() -> None:
    attempts = Attempts(request(GET), body_done=True)
    assert attempts.fresh is False and not attempts.verify
    assert attempts.closed_early(reused=True)
    assert attempts.fresh
    assert not attempts.closed_early(reused=False)  # the fresh connection failed too
    assert not attempts.closed_early(reused=True)  # and never twice


def test_a_request_on_a_fresh_connection_is_not_sent_again() -> None:
    assert not Attempts(request(GET), body_done=True).closed_early(reused=False)


def test_a_post_is_never_sent_again_and_asks_for_a_verified_connection() -> None:
    post = request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
    attempts = Attempts(post, body_done=True)
    assert attempts.verify
    assert not attempts.closed_early(reused=True)


def test_a_get_whose_body_was_not_sent_whole_is_not_sent_again() -> None:
    get = request(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
    assert not Attempts(get, body_done=False).closed_early(reused=True)


def test_an_upstream_closing_before_a_byte_is_an_early_close_and_after_one_is_not() -> None:
    r = ResponseReader(max_head_bytes=8192, max_headers=50)
    assert r.closed_early()
    r.feed(b"HTTP/1.1 200 OK\r\n")
    assert r.next_head() is None
    assert not r.closed_early()


# ------------------------------------------------------------------- timeouts as data


def test_a_new_connection_has_the_header_timeout_from_its_acceptance() -> None:
    clock = ConnectionClock(100.0, 10.0)
    assert clock.phase == Phase.NEW
    assert clock.due(110.0) is None
    assert clock.due(110.001) == "read"


def test_a_head_has_the_header_timeout_from_its_first_byte_however_slow_it_trickles() -> None:
    clock = ConnectionClock(0.0, 10.0)
    clock.idle(5.0, 60.0)
    assert clock.phase == Phase.IDLE and clock.due(64.0) is None
    clock.head_begun(50.0, 10.0)
    assert clock.phase == Phase.HEAD
    assert clock.due(59.9) is None and clock.due(60.1) == "read"


def test_waiting_on_the_upstream_has_no_deadline() -> None:
    clock = ConnectionClock(0.0, 10.0)
    clock.busy()
    assert clock.phase == Phase.BUSY and clock.due(1e12) is None


def test_each_read_of_a_body_renews_its_inactivity_timeout() -> None:
    clock = ConnectionClock(0.0, 10.0)
    clock.body()
    clock.body_wait(1.0, 30.0)
    clock.body_wait(29.0, 30.0)
    assert clock.phase == Phase.BODY
    assert clock.due(40.0) is None  # past the first read's 31 s: the second renewed it
    assert clock.due(59.5) == "read"


def test_a_client_that_takes_no_bytes_is_due_after_the_send_timeout() -> None:
    clock = ConnectionClock(0.0, 10.0)
    clock.busy()
    clock.stalled(3.0, 30.0)
    assert clock.due(32.0) is None and clock.due(33.5) == "write"
    clock.flowing()
    assert clock.due(1e9) is None


def test_a_tunnel_is_kept_by_its_traffic_and_a_progress_stream_has_no_deadline() -> None:
    clock = ConnectionClock(0.0, 10.0)
    clock.tunnel(0.0, 300.0)
    assert clock.phase == Phase.TUNNEL and clock.due(301.0) == "read"
    clock.tunnel(0.0, INF)
    assert clock.due(1e12) is None


# ------------------------------------------------------------------- the response plan


def plan(req: bytes, resp_bytes: bytes, *, draining: bool = False,
         body_pending: bool = False) -> tuple[ResponsePlan, bytes]:
    resp, raw, rest = response(resp_bytes)
    p = plan_response(request(req), resp, raw, rest, draining=draining,
                      body_pending=body_pending)
    return p, p.send


def test_a_whole_small_response_is_sent_at_once_and_both_connections_are_kept() -> None:
    p, send = plan(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert send == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert (p.copy, p.client_keep, p.upstream_clean) == (Copy.NOTHING, True, True)


def test_bytes_past_a_response_of_known_length_make_the_upstream_connection_unusable() -> None:
    p, send = plan(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
    assert send.endswith(b"\r\n\r\nok")
    assert p.client_keep and not p.upstream_clean


def test_the_rest_of_a_long_response_is_copied_and_spliced_when_large() -> None:
    small, _ = plan(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    assert (small.copy, small.length, small.splice) == (Copy.LENGTH, 90, False)
    big, _ = plan(GET, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (SPLICE_AT_LEAST + 1))
    assert (big.copy, big.length, big.splice) == (Copy.LENGTH, SPLICE_AT_LEAST + 1, True)


def test_a_chunked_response_is_relayed_as_is_until_its_last_chunk() -> None:
    p, send = plan(GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert p.copy == Copy.CHUNKED and p.decoder is not None
    assert send.endswith(b"\r\n\r\n3\r\nabc\r\n") and p.client_keep
    done, send = plan(GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert done.copy == Copy.NOTHING and done.upstream_clean


def test_a_chunked_response_to_an_http10_client_is_dechunked_and_closed() -> None:
    p, send = plan(b"GET / HTTP/1.0\r\n\r\n",
                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    assert p.copy == Copy.DECHUNKED and not p.client_keep
    assert send.endswith(b"\r\n\r\nabc") and b"transfer-encoding" not in send.lower()


def test_a_response_ended_by_closing_is_rechunked_for_an_http11_client() -> None:
    p, send = plan(GET, b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert p.copy == Copy.UNTIL_CLOSE and p.encoder is not None
    assert p.client_keep and not p.upstream_clean
    assert send.endswith(b"\r\n\r\n3\r\nabc\r\n") and b"transfer-encoding: chunked" in send


def test_a_response_to_head_has_no_body_whatever_its_length_says() -> None:
    p, send = plan(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
                   b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
    assert (p.copy, p.client_keep, p.upstream_clean) == (Copy.NOTHING, True, True)


def test_draining_closes_the_client_connection_after_the_response() -> None:
    p, send = plan(GET, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", draining=True)
    assert not p.client_keep and b"connection: close" in send.lower()


def test_bad_chunked_framing_in_a_response_is_refused() -> None:
    with pytest.raises(BadChunk):
        plan(GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")


def test_a_response_with_content_length_and_transfer_encoding_is_refused() -> None:
    with pytest.raises(BadResponse):
        response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")


def test_a_response_head_that_never_ends_is_refused_past_the_limit() -> None:
    r = ResponseReader(max_head_bytes=64, max_headers=50)
    r.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100)
    with pytest.raises(BadResponse):
        r.next_head()


# ------------------------------------------------------------------- upgrades


def test_a_101_is_relayed_only_to_websocket_and_only_when_asked() -> None:
    ws = request(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n")
    switch, _, _ = response(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                            b"Upgrade: websocket\r\n\r\n")
    switching_protocols(ws, switch)
    with pytest.raises(BadResponse, match="without an upgrade request"):
        switching_protocols(request(GET), switch)
    h2c, _, _ = response(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                         b"Upgrade: h2c\r\n\r\n")
    with pytest.raises(BadResponse, match="another protocol"):
        switching_protocols(ws, h2c)


def test_receive_is_feed_then_next_head_on_both_sides() -> None:
    requests = reader()
    assert requests.receive(GET[:10]) is None
    head = requests.receive(GET[10:] + GET)
    assert head is not None and requests.buf == GET
    responses = ResponseReader(max_head_bytes=8192, max_headers=50)
    found = responses.receive(b"HTTP/1.1 204 No Content\r\n\r\nrest")
    assert found is not None and found[0].status == 204 and responses.buf == b"rest"


def test_a_bodiless_request_shares_one_complete_body_and_pipelined_bytes_do_not() -> None:
    plain = request(GET)
    assert request_body(plain, b"") is request_body(plain, b"")
    assert request_body(plain, b"").done and request_body(plain, b"").leftover == b""
    pipelined = request_body(plain, GET)
    assert pipelined.done and pipelined.leftover == GET
