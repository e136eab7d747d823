"""The chunked transfer coding as pure state machines: where a body ends, and how to frame one.

The forwarder relays chunked bodies byte for byte (re-framing costs copies and buys nothing), but
it must know where a body ends to keep the connection alive, and it must refuse framing that
another parser could read differently. So `ChunkedDecoder` walks the framing without copying the
data: strict hex chunk sizes, extensions allowed but bounded, trailers bounded and shaped like
header lines, CRLF everywhere. It can also hand out the payload, for the rare peer that cannot
take chunked (an HTTP/1.0 client). `ChunkedEncoder` frames a body of unknown length.
"""

from __future__ import annotations

__all__ = ["BadChunk", "ChunkedDecoder", "ChunkedEncoder"]

_HEX = b"0123456789abcdefABCDEF"
_MAX_SIZE_DIGITS = 15  # < 2**60: more is an attack, not a chunk
# Extensions: tokens, quoted strings, '=', ';' and whitespace; no controls.
_EXT_BYTES = b"\t" + bytes(range(0x20, 0x7F))
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FIELD_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))

_SIZE, _DATA, _DATA_CR, _DATA_LF, _TRAILER, _DONE = range(6)


class BadChunk(Exception):
    """The chunked framing is malformed or exceeds a bound; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChunkedDecoder:
    """Follows one chunked body through the bytes fed to it, validating its framing.

    `feed(buf, start, end)` consumes `buf[start:end]` and returns the index just past the body's
    final CRLF when the body ends inside that range (the bytes after it belong to the next
    message), or -1 when all of it was body. With `payload`, the chunk data is appended to it.
    """

    __slots__ = ("_state", "_remaining", "_line", "_trailer_bytes", "_max_line", "_max_trailer")

    def __init__(self, *, max_line: int = 4096, max_trailer_bytes: int = 16384) -> None:
        self._state = _SIZE
        self._remaining = 0
        self._line = b""
        self._trailer_bytes = 0
        self._max_line = max_line
        self._max_trailer = max_trailer_bytes

    @property
    def done(self) -> bool:
        """Whether the last chunk and the trailer section have been seen."""
        return self._state == _DONE

    def feed(
        self,
        buf: bytes | bytearray,
        start: int = 0,
        end: int | None = None,
        payload: list[bytes | bytearray] | None = None,
    ) -> int:
        """Consume `buf[start:end]`; return where the body ended in it, or -1 if it goes on."""
        if end is None:
            end = len(buf)
        pos = start
        while pos < end:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, end - pos)
                if payload is not None:
                    payload.append(buf[pos : pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_CR
            elif state == _DATA_CR or state == _DATA_LF:
                expected = b"\r" if state == _DATA_CR else b"\n"
                if buf[pos : pos + 1] != expected:
                    raise BadChunk("chunk data not followed by CRLF")
                pos += 1
                self._state = _DATA_LF if state == _DATA_CR else _SIZE
            elif state == _DONE:
                raise BadChunk("data after the end of the chunked body")
            else:
                nl = buf.find(b"\n", pos, end)
                if nl < 0:
                    self._line += bytes(buf[pos:end])
                    self._check_line_length(len(self._line))
                    return -1
                line = bytes(buf[pos : nl + 1])
                if self._line:
                    line = self._line + line
                    self._line = b""
                pos = nl + 1
                self._check_line_length(len(line))
                if line[-2:-1] != b"\r" or b"\r" in line[:-2]:
                    raise BadChunk("bare CR or LF in chunked framing")
                if state == _SIZE:
                    self._size_line(line[:-2])
                elif self._trailer_line(line[:-2]):
                    self._state = _DONE
                    return pos
        return -1

    def _check_line_length(self, length: int) -> None:
        if self._state == _SIZE and length > self._max_line:
            raise BadChunk("chunk size line too long")
        if self._state == _TRAILER and self._trailer_bytes + length > self._max_trailer:
            raise BadChunk("chunked trailer section too large")

    def _size_line(self, line: bytes) -> None:
        size, semicolon, ext = line.partition(b";")
        if semicolon:
            # Whitespace is allowed only before an extension (BWS), never in the number.
            size = size.rstrip(b" \t")
            if ext.translate(None, _EXT_BYTES):
                raise BadChunk("invalid chunk extension")
        if not size or len(size) > _MAX_SIZE_DIGITS or size.translate(None, _HEX):
            raise BadChunk("invalid chunk size")
        self._remaining = int(size, 16)
        self._state = _DATA if self._remaining else _TRAILER

    def _trailer_line(self, line: bytes) -> bool:
        """Check one trailer field line; True at the empty line that ends the body."""
        if not line:
            return True
        self._trailer_bytes += len(line) + 2
        colon = line.find(b":")
        if colon <= 0 or line[:colon].translate(None, _TOKEN_BYTES):
            raise BadChunk("malformed trailer field")
        if line[colon + 1 :].translate(None, _FIELD_BYTES):
            raise BadChunk("control character in trailer field")
        return False


class ChunkedEncoder:
    """Frames a body of unknown length as chunks; `finish()` once at the end."""

    __slots__ = ("_finished",)

    def __init__(self) -> None:
        self._finished = False

    def encode(self, data: bytes | bytearray | memoryview) -> bytes:
        """One chunk holding `data` (nothing for empty data: a zero chunk would end the body)."""
        if self._finished:
            raise RuntimeError("chunked body already finished")
        if not data:
            return b""
        return b"%x\r\n%b\r\n" % (len(data), bytes(data))

    def finish(self) -> bytes:
        """The last chunk and an empty trailer section."""
        if self._finished:
            raise RuntimeError("chunked body already finished")
        self._finished = True
        return b"0\r\n\r\n"
