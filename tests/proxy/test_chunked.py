"""The chunked framing state machines: finding where a body ends, and refusing bad framing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markco_trio.proxy.chunked import BadChunk, ChunkedDecoder, ChunkedEncoder

BODY = b"5\r\nhello\r\n6;name=value\r\n world\r\n0\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\n"


def feed_in_pieces(
    data: bytes, cuts: list[int], payload: list[bytes | bytearray] | None = None
) -> int:
    """Feed `data` split at `cuts`; the absolute offset where the body ended, or -1."""
    decoder = ChunkedDecoder()
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    for start, end in zip(bounds, bounds[1:], strict=False):
        piece = data[start:end]
        stop = decoder.feed(piece, 0, len(piece), payload)
        if stop >= 0:
            return start + stop
    return -1


def test_the_end_of_a_body_is_found_and_what_follows_is_left_alone() -> None:
    decoder = ChunkedDecoder()
    data = BODY + NEXT
    assert decoder.feed(data) == len(BODY)
    assert decoder.done


def test_a_body_that_goes_on_reports_minus_one() -> None:
    decoder = ChunkedDecoder()
    assert decoder.feed(b"5\r\nhel") == -1
    assert not decoder.done
    assert decoder.feed(b"lo\r\n0\r\n\r\n") == 9


def test_the_payload_is_handed_out_when_asked() -> None:
    payload: list[bytes | bytearray] = []
    ChunkedDecoder().feed(BODY, payload=payload)
    assert b"".join(payload) == b"hello world"


def test_a_range_of_a_larger_buffer_can_be_fed() -> None:
    data = b"junk" + BODY
    assert ChunkedDecoder().feed(data, 4, len(data)) == len(data)


def test_trailers_are_accepted() -> None:
    data = b"1\r\na\r\n0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n"
    assert ChunkedDecoder().feed(data) == len(data)


def test_upper_case_hex_sizes_are_accepted() -> None:
    data = b"A\r\n0123456789\r\n0\r\n\r\n"
    assert ChunkedDecoder().feed(data) == len(data)


def test_whitespace_before_an_extension_is_accepted() -> None:
    data = b"1 ;ext\r\na\r\n0\r\n\r\n"
    assert ChunkedDecoder().feed(data) == len(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(BODY) + len(NEXT)), max_size=12))
def test_any_split_of_the_input_finds_the_same_end(cuts: list[int]) -> None:
    payload: list[bytes | bytearray] = []
    assert feed_in_pieces(BODY + NEXT, cuts, payload) == len(BODY)
    assert b"".join(payload) == b"hello world"


@pytest.mark.parametrize(
    "data",
    [
        b"x\r\n",
        b"0x5\r\nhello\r\n",
        b"+5\r\nhello\r\n",
        b"-5\r\n",
        b" 5\r\nhello\r\n",
        b"5 \r\nhello\r\n",
        b"\r\n",
        b"1_0\r\n",
        b"1234567890123456\r\n",
        b"5\nhello\r\n",
        b"5\r\r\nhello\r\n",
        b"5\r\nhelloXX",
        b"5\r\nhello\n0\r\n\r\n",
        b"5;a\x00b\r\nhello\r\n",
        b"5;a\rb\r\nhello\r\n",
        b"0\r\nbad trailer\r\n\r\n",
        b"0\r\n: novalue\r\n\r\n",
        b"0\r\nX-A: a\x01\r\n\r\n",
        b"0\r\nX-A: a\n\r\n",
    ],
    ids=[
        "non-hex",
        "0x-prefix",
        "plus-sign",
        "negative",
        "leading-space",
        "trailing-space",
        "empty-size",
        "underscore",
        "too-many-digits",
        "bare-lf-after-size",
        "cr-cr-lf",
        "data-not-followed-by-crlf",
        "bare-lf-after-data",
        "nul-in-extension",
        "cr-in-extension",
        "trailer-without-colon",
        "trailer-empty-name",
        "control-in-trailer",
        "bare-lf-in-trailer",
    ],
)
def test_malformed_framing_is_refused(data: bytes) -> None:
    with pytest.raises(BadChunk):
        ChunkedDecoder().feed(data)


def test_a_size_line_longer_than_the_bound_is_refused_before_it_ends() -> None:
    decoder = ChunkedDecoder(max_line=64)
    with pytest.raises(BadChunk):
        decoder.feed(b"1;" + b"x" * 100)


def test_a_trailer_section_larger_than_the_bound_is_refused() -> None:
    decoder = ChunkedDecoder(max_trailer_bytes=100)
    with pytest.raises(BadChunk):
        decoder.feed(b"0\r\n" + b"X-A: " + b"a" * 50 + b"\r\nX-B: " + b"b" * 50 + b"\r\n\r\n")


def test_bytes_after_the_end_are_refused_when_fed_again() -> None:
    decoder = ChunkedDecoder()
    decoder.feed(b"0\r\n\r\n")
    with pytest.raises(BadChunk):
        decoder.feed(b"x")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10))
def test_what_the_encoder_frames_the_decoder_reads_back(pieces: list[bytes]) -> None:
    encoder = ChunkedEncoder()
    framed = b"".join(encoder.encode(p) for p in pieces) + encoder.finish()
    payload: list[bytes | bytearray] = []
    assert ChunkedDecoder().feed(framed, payload=payload) == len(framed)
    assert b"".join(payload) == b"".join(pieces)


def test_the_encoder_never_emits_an_empty_chunk_before_the_end() -> None:
    assert ChunkedEncoder().encode(b"") == b""


def test_the_encoder_refuses_data_after_finish() -> None:
    encoder = ChunkedEncoder()
    encoder.finish()
    with pytest.raises(RuntimeError):
        encoder.encode(b"x")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_nothing_but_bad_chunk(data: bytes) -> None:
    try:
        ChunkedDecoder(max_line=64, max_trailer_bytes=64).feed(data)
    except BadChunk:
        pass
