"""The access log, sampled and batched: a stdlib logging line costs ~6 µs (DESIGN §3.1).

Every response is counted by status class; one in `sample_every` responses, and every 5xx (up to
`max_lines` per flush), is kept as a line. `flush()`, called about once a second by the front
door's sweeper, writes one summary line and the kept lines.
"""

from __future__ import annotations

import logging

__all__ = ["AccessLog"]


class AccessLog:
    """Counts responses and keeps a sample of them until the next `flush()`."""

    __slots__ = ("_logger", "_every", "_max_lines", "_counts", "_seen", "_lines", "_dropped")

    def __init__(
        self, logger: logging.Logger, *, sample_every: int = 100, max_lines: int = 50
    ) -> None:
        self._logger = logger
        self._every = max(1, sample_every)
        self._max_lines = max_lines
        self._counts = [0] * 6  # by status class: index 1 for 1xx ... 5 for 5xx
        self._seen = 0
        self._lines: list[tuple[int, bytes, bytes, bytes, str]] = []
        self._dropped = 0

    def record(
        self, status: int, method: bytes, target: bytes, request_id: bytes, client: str
    ) -> None:
        """Count one response; keep it as a line if it is sampled or a server error."""
        self._seen += 1
        self._counts[min(status // 100, 5)] += 1
        if status >= 500 or not self._seen % self._every:
            if len(self._lines) < self._max_lines:
                self._lines.append((status, method, target, request_id, client))
            else:
                self._dropped += 1

    def flush(self) -> None:
        """Write the summary of the responses counted since the last flush, and the kept lines."""
        if not self._seen:
            return
        c = self._counts
        self._logger.info(
            "proxy: %d responses (2xx %d, 3xx %d, 4xx %d, 5xx %d)%s",
            self._seen,
            c[2],
            c[3],
            c[4],
            c[5],
            f"; {self._dropped} sampled lines dropped" if self._dropped else "",
        )
        for status, method, target, request_id, client in self._lines:
            self._logger.info(
                "proxy: %s %s %s %d request_id=%s",
                client,
                method.decode("ascii", "replace"),
                target[:200].decode("ascii", "replace"),
                status,
                request_id.decode("ascii", "replace"),
            )
        self._counts = [0] * 6
        self._seen = 0
        self._lines = []
        self._dropped = 0
