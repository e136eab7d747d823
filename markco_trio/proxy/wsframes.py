"""WebSocket frame boundaries in relayed bytes, found without re-framing them (RFC 6455 §5.2).

A tunnel copies bytes as they come; this scanner only reads the frame headers going past, so the
tunnel can tell data frames (text, binary and their continuations) from control frames (close,
ping, pong) and knows when it stands between two frames. That is what a tunnel's idleness is
decided by (keep-alive pings are not activity, DESIGN §3.3) and when a close frame of the proxy's
own may be slipped in (only between frames). Pure: no sockets, no trio.

The cost is a few integer operations per frame header; payload bytes are skipped by length,
never looked at (masked or not, compressed or not: the header says how long the payload is).
"""

from __future__ import annotations

from typing import Final

__all__ = ["GOING_AWAY", "POLICY_VIOLATION", "FrameScanner", "close_frame"]

GOING_AWAY: Final = 1001  # the server is going down (shutdown, or an idle tunnel closed)
POLICY_VIOLATION: Final = 1008  # the caller may no longer be here (access revoked)
_FIRST_CONTROL_OPCODE: Final = 8
_MAX_REASON: Final = 123  # a control frame's payload is at most 125 bytes, 2 of them the code


class FrameScanner:
    """Follows the frames of one direction of a WebSocket, chunk by chunk (`feed`)."""

    __slots__ = ("_need", "_data", "_head")

    def __init__(self) -> None:
        self._need = 0  # payload bytes of the current frame still to come
        self._data = False  # the current frame is a data frame
        self._head = b""  # the start of a frame header split across chunks (rare)

    @property
    def at_boundary(self) -> bool:
        """Whether the bytes fed so far end exactly at the end of a frame."""
        return not self._need and not self._head

    def feed(self, chunk: bytes | bytearray | memoryview) -> bool:
        """Account for the next bytes of the stream; True if any of them belong to a data
        frame (a header or payload of a text, binary or continuation frame)."""
        n = len(chunk)
        need = self._need
        if not need and n > 1 and not self._head:
            # The usual read: exactly one small frame (a message, a ping): no loop.
            second = chunk[1]
            length = second & 0x7F
            if length < 126 and (6 if second & 0x80 else 2) + length == n:
                return chunk[0] & 0x0F < _FIRST_CONTROL_OPCODE
        seen = need > 0 and self._data
        if need >= n:
            self._need = need - n
            return seen
        data = chunk
        pos = need
        if self._head:  # (need is 0 then: a header only starts after a payload ended)
            data = self._head + bytes(chunk)
            n = len(data)
            self._head = b""
        while pos < n:
            if n - pos < 2:
                break
            second = data[pos + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                header = 4
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                header = 10
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            if second & 0x80:
                header += 4  # the masking key
            if n - pos < header:
                break
            is_data = data[pos] & 0x0F < _FIRST_CONTROL_OPCODE
            seen = seen or is_data
            end = pos + header + length
            if end > n:
                self._need = end - n
                self._data = is_data
                return seen
            pos = end
        else:
            self._need = 0
            return seen
        self._head = bytes(data[pos:])
        self._need = 0
        return seen


def close_frame(code: int, reason: str = "") -> bytes:
    """A server's (unmasked) close frame with `code` and a short `reason`."""
    payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:_MAX_REASON]
    return bytes([0x88, len(payload)]) + payload
