"""The access log, batched: a stdlib logging call costs ~6 µs (DESIGN §3.1), a tenth of a request.

`record()` is called once per response on the proxy's hot path: it counts the response by status
class (the counts are what `/metrics` reports, read at scrape time) and, depending on the mode,
keeps a tuple. Nothing is formatted or written there. `flush()`, called about once a second by
the front door's sweeper, formats the kept responses and writes them as ONE log record on the
`markco.access` logger, one line per response:

    client=203.0.113.9 method=GET target="/api/v1/me" status=200 request_id=5f3a…

Modes (`[logging] access`):
- `off`: nothing is written (the counts still are kept for the metrics);
- `sampled` (the default): one response in `sample_every`, and every 5xx, up to `max_lines` per
  flush;
- `full`: every response, up to `max_lines` per flush (at 100,000 a second that is ~1 µs each).
Lines beyond `max_lines` are dropped and counted (`lines_dropped`), and the flush says how many.
The request id is the one sent upstream as `X-Request-Id` (the client's own when acceptable),
so an API or editor log line can be matched with the access line.
"""

from __future__ import annotations

import logging
import re
from typing import Literal

__all__ = ["ACCESS_MODES", "AccessLog", "AccessMode"]

AccessMode = Literal["off", "sampled", "full"]
ACCESS_MODES: tuple[AccessMode, ...] = ("off", "sampled", "full")

# Bytes that would let a client forge or break a line: controls, space, quote, backslash,
# non-ASCII. Percent-escaped.
_UNSAFE = re.compile(rb'[\x00-\x20\x7f-\xff"\\]')
_TARGET_LIMIT = 200


def _escape(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match.group()[0]


def _safe(value: bytes, limit: int = _TARGET_LIMIT) -> str:
    value = value[:limit]
    if _UNSAFE.search(value):
        value = _UNSAFE.sub(_escape, value)
    return value.decode("ascii")


class AccessLog:
    """Counts responses by status class; keeps the lines its mode asks for until `flush()`."""

    __slots__ = ("_logger", "_every", "_max_lines", "mode", "by_class", "_seen", "_lines",
                 "_dropped", "lines_dropped", "bytes_sent")

    def __init__(self, logger: logging.Logger | None = None, *, mode: AccessMode = "sampled",
                 sample_every: int = 100, max_lines: int | None = None) -> None:
        if mode not in ACCESS_MODES:
            raise ValueError(f"access log mode must be one of {', '.join(ACCESS_MODES)}, "
                             f"not {mode!r}")
        self._logger = logger or logging.getLogger("markco.access")
        # Keep one response in `_every` (and every 5xx); 1 keeps all, 0 none.
        self._every = {"off": 0, "sampled": max(1, sample_every), "full": 1}[mode]
        if max_lines is None:
            max_lines = 100_000 if mode == "full" else 50
        self._max_lines = max_lines
        self.mode = mode
        # Responses since start, by status class: index 1 for 1xx ... 5 for 5xx (never reset).
        self.by_class = [0] * 6
        self._seen = 0
        self._lines: list[tuple[int, bytes, bytes, bytes, str]] = []
        self._dropped = 0  # since the last flush
        self.lines_dropped = 0  # since start
        # Bytes sent to clients (HTTP heads and bodies; not tunnels), counted by the proxy.
        self.bytes_sent = 0

    def record(
        self, status: int, method: bytes, target: bytes, request_id: bytes, client: str
    ) -> None:
        """Count one response; keep it as a line if the mode asks for it."""
        self.by_class[min(status // 100, 5)] += 1
        every = self._every
        if not every:
            return
        self._seen += 1
        if status < 500 and self._seen % every:
            return
        if len(self._lines) < self._max_lines:
            self._lines.append((status, method, target, request_id, client))
        else:
            self._dropped += 1

    @property
    def responses(self) -> int:
        """Responses counted since start."""
        return sum(self.by_class)

    def flush(self) -> None:
        """Write the lines kept since the last flush as one log record (nothing if none)."""
        lines, dropped = self._lines, self._dropped
        if not lines and not dropped:
            return
        self._lines = []
        self._dropped = 0
        self.lines_dropped += dropped
        out = []
        unsafe = _UNSAFE.search
        for status, method, target, request_id, client in lines:
            target = target[:_TARGET_LIMIT]
            # One search over all the parts (joined by a safe byte) decides the common case.
            if unsafe(b"!".join((client.encode("ascii", "replace"), method, target,
                                 request_id))) is None:
                out.append(f'client={client} method={method.decode()} '
                           f'target="{target.decode()}" status={status} '
                           f'request_id={request_id.decode()}')
            else:  # rare: escape each part (a hostile request, a long method or id)
                out.append(f"client={_safe(client.encode('ascii', 'replace'), 64)} "
                           f"method={_safe(method, 32)} target=\"{_safe(target)}\" "
                           f"status={status} request_id={_safe(request_id, 64)}")
        text = "\n".join(out)
        if dropped:
            note = (f"{dropped} access lines dropped (more than {self._max_lines} a second; "
                    f"the counts in /metrics are complete)")
            text = f"{text}\n{note}" if text else note
        self._logger.info("%s", text)
