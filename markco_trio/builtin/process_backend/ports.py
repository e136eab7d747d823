"""Choosing a listening port for a workload: inside the configured range, outside the kernel's
ephemeral range (so an outgoing connection of any process cannot be holding it), not reserved by
another workload, and free right now."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection
from pathlib import Path

from ...errors import BackendError

EPHEMERAL_RANGE_PATH = Path("/proc/sys/net/ipv4/ip_local_port_range")


def parse_range(text: str) -> tuple[int, int]:
    """`"20000-32000"` → (20000, 32000); ValueError naming the problem."""
    low, sep, high = text.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"port_range: expected LOW-HIGH such as 20000-32000, got {text!r}")
    lo, hi = int(low), int(high)
    if not 1024 <= lo <= hi <= 65535:
        raise ValueError(f"port_range: expected 1024 <= LOW <= HIGH <= 65535, got {text!r}")
    return lo, hi


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports."""
    try:
        low, high = EPHEMERAL_RANGE_PATH.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on `host:port` (nor on the wildcard address)."""
    for address in (host, "0.0.0.0"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


def choose_port(port_range: tuple[int, int], reserved: Collection[int], *,
                host: str = "127.0.0.1", rng: random.Random | None = None) -> int:
    """A free port of `port_range`, outside the ephemeral range and not in `reserved`.

    Random rather than sequential, so two daemons on one machine rarely race for one port.
    """
    lo, hi = port_range
    eph_lo, eph_hi = ephemeral_range()
    candidates = [p for p in range(lo, hi + 1)
                  if not eph_lo <= p <= eph_hi and p not in reserved]
    (rng or random).shuffle(candidates)
    for port in candidates[:500]:
        if is_free(port, host):
            return port
    raise BackendError(
        f"process backend: no free port in {lo}-{hi} outside the ephemeral range "
        f"{eph_lo}-{eph_hi}; widen [compute.process] port_range")
