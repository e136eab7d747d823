"""Demultiplexing the engine's log stream.

Without a TTY, `/containers/{id}/logs` answers in frames: an 8-byte header (stream: 0 stdin,
1 stdout, 2 stderr; three zero bytes; a big-endian 32-bit length) followed by that many bytes.
The engine already interleaves stdout and stderr in the order they were written, so joining
the payloads gives the container's output as a terminal would have shown it.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">BxxxL")
STREAMS = {0: "stdin", 1: "stdout", 2: "stderr"}


def is_multiplexed(data: bytes) -> bool:
    """Whether `data` starts like a frame stream (a TTY's raw output does not)."""
    return len(data) >= HEADER.size and data[0] in STREAMS and data[1:4] == b"\0\0\0"


def frames(data: bytes) -> list[tuple[str, bytes]]:
    """Split a frame stream into (stream name, payload). A truncated last frame keeps what
    arrived: a log cut mid-line is still worth showing."""
    out: list[tuple[str, bytes]] = []
    offset = 0
    while offset + HEADER.size <= len(data):
        stream, length = HEADER.unpack_from(data, offset)
        offset += HEADER.size
        out.append((STREAMS.get(stream, "stdout"), data[offset:offset + length]))
        offset += length
    return out


def demultiplex(data: bytes) -> str:
    """The text of a log answer: frames joined in order (or raw TTY output as is), decoded as
    UTF-8 with undecodable bytes replaced."""
    if is_multiplexed(data):
        data = b"".join(payload for _, payload in frames(data))
    return data.decode("utf-8", errors="replace")
