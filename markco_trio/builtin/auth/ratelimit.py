"""A per-client rate limit on login attempts (console login links, OAuth callbacks).

A token bucket per client address: `burst` attempts at once, refilled at `per_minute`. An
attempt over the limit is answered 429 with `Retry-After` (the seconds until the next token),
before any storage read or provider call — so guessing login links or replaying callbacks
costs the guesser time, not the daemon work.

The client address is the one the front door saw: the API app sits behind it on a unix socket,
and the front door appends the peer's address to `X-Forwarded-For` (after a configured trusted
proxy's own list). The rightmost entry that is not a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MAX_CLIENTS = 50_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """Token buckets by key (a client address). `now` is the clock (seconds)."""

    def __init__(self, *, per_minute: float, burst: int, now: Callable[[], float],
                 max_clients: int = MAX_CLIENTS) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("per_minute must be more than 0 and burst at least 1")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._now = now
        self._max = max_clients
        self._buckets: dict[str, _Bucket] = {}

    def take_nowait(self, key: str) -> float:
        """Spend one token of `key`'s bucket: 0.0 when allowed, else the seconds until a
        token is available (nothing is spent then)."""
        now = self._now()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        # Buckets that have refilled carry no information: drop them; if none has, start over
        # (a flood of addresses must not grow memory without bound).
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max:
            self._buckets.clear()

    def statistics(self) -> int:
        """How many client addresses are tracked."""
        return len(self._buckets)


def retry_after_header(seconds: float) -> str:
    """`Retry-After` in whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class ClientAddress:
    """The client's address from the front door's `X-Forwarded-For` (see the module doc)."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._networks = tuple(ipaddress.ip_network(t.strip(), strict=False)
                               for t in trusted_proxies)

    def _trusted(self, entry: str) -> bool:
        try:
            address = ipaddress.ip_address(entry.partition("%")[0])
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def __call__(self, forwarded_for: str | None) -> str:
        entries = [e.strip() for e in (forwarded_for or "").split(",") if e.strip()]
        for entry in reversed(entries):
            if not self._trusted(entry):
                return entry
        return entries[0] if entries else "unknown"
