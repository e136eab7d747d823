"""Following WebSocket frames in relayed bytes: data frames told from control frames, however the
bytes are cut, masked or not, short or long, fragmented or not."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from markco_trio.proxy.wsframes import FrameScanner, close_frame

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = False) -> bytes:
    n = len(payload)
    first = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    if n < 126:
        length = bytes([mask_bit | n])
    elif n < 65536:
        length = bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4) if masked else b""
    return first + length + key + payload  # (the payload's masking is irrelevant here)


def test_a_ping_is_not_data_and_a_text_frame_is() -> None:
    scanner = FrameScanner()
    assert not scanner.feed(frame(PING, b"keep-alive", masked=True))
    assert scanner.feed(frame(TEXT, b"hello", masked=True))
    assert scanner.at_boundary


def test_pong_and_close_are_not_data() -> None:
    scanner = FrameScanner()
    assert not scanner.feed(frame(PONG, b"") + frame(CLOSE, b"\x03\xe8"))


def test_a_chunk_mixing_control_and_data_frames_is_data() -> None:
    assert FrameScanner().feed(frame(PING, b"") + frame(BINARY, b"\x00" * 10) + frame(PONG, b""))


def test_the_rest_of_a_long_data_frame_is_data_and_of_a_ping_is_not() -> None:
    scanner = FrameScanner()
    data = frame(BINARY, b"x" * 70_000, masked=True)
    assert scanner.feed(data[:100])
    assert not scanner.at_boundary
    assert scanner.feed(data[100:50_000])
    assert scanner.feed(data[50_000:])
    assert scanner.at_boundary
    ping = frame(PING, b"p" * 100)
    assert not scanner.feed(ping[:10])
    assert not scanner.feed(ping[10:])
    assert scanner.at_boundary


def test_a_header_cut_anywhere_is_put_back_together() -> None:
    for data in (frame(TEXT, b"y" * 300, masked=True), frame(BINARY, b"z" * 70_000, masked=True),
                 frame(PING, b"q", masked=True)):
        for cut in range(1, 14):
            scanner = FrameScanner()
            seen = scanner.feed(data[:cut]) | scanner.feed(data[cut:])
            assert seen == (data[0] & 0x0F < 8), cut
            assert scanner.at_boundary, cut


def test_a_fragmented_message_is_data_in_every_fragment() -> None:
    scanner = FrameScanner()
    assert scanner.feed(frame(TEXT, b"part 1", fin=False))
    assert not scanner.feed(frame(PING, b""))  # control frames may come between fragments
    assert scanner.feed(frame(CONTINUATION, b"part 2", fin=False))
    assert scanner.feed(frame(CONTINUATION, b"end"))


def test_an_empty_chunk_changes_nothing() -> None:
    scanner = FrameScanner()
    assert not scanner.feed(b"")
    assert scanner.at_boundary


@given(st.lists(st.tuples(st.sampled_from([TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG]),
                          st.integers(0, 70_000), st.booleans()), min_size=1, max_size=6),
       st.lists(st.integers(1, 80_000), max_size=8))
def test_any_cutting_of_any_frames_finds_exactly_their_data(
        frames: list[tuple[int, int, bool]], cuts: list[int]) -> None:
    stream = b"".join(frame(op, b"a" * (n if op < 8 else min(n, 125)), masked=m)
                      for op, n, m in frames)
    scanner = FrameScanner()
    seen = False
    start = 0
    for cut in sorted({c for c in cuts if c < len(stream)}):
        seen |= scanner.feed(stream[start:cut])
        start = cut
    seen |= scanner.feed(stream[start:])
    assert scanner.at_boundary
    assert seen == any(op < 8 for op, _, _ in frames)


def test_a_close_frame_carries_its_code_and_reason_unmasked() -> None:
    assert close_frame(1008, "revoked") == b"\x88\x09\x03\xf0revoked"
    assert len(close_frame(1001, "x" * 500)) == 2 + 125
