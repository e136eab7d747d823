"""What observability costs the proxy: the access log per response in each mode, its batched
flush per written line, and a `/metrics` scrape (not collected by pytest).

Run: `.venv/bin/python bench/metrics.py`. Times are the best of several interleaved rounds
(the machine is shared); the verdict is a ratio against a baseline measured in the same run: a
response's access-log bookkeeping against `REQUEST_US`, the proxy's CPU per request
(DESIGN §3.1), and a flushed line against one logging record per line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from markco_trio.metrics import FAST_BUCKETS, Metric, Registry
from markco_trio.proxy.accesslog import AccessLog

REQUEST_US = 75.0
ROUNDS = 7
N = 200_000
LINE = (200, b"GET", b"/api/v1/users/abc/runtimes?all=1", b"8c1f0e2a9b44-3", "127.0.0.1")


def best(fn: Callable[[], object], number: int) -> float:
    """Best time of one call of `fn`, in microseconds, over ROUNDS rounds of `number`."""
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number * 1e6)
    return min(times)


def main() -> None:
    logger = logging.getLogger("bench.access")
    logger.addHandler(logging.NullHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logs = {mode: AccessLog(logger, mode=mode, max_lines=10**9)
            for mode in ("off", "sampled", "full")}  # type: ignore[arg-type]
    baseline = best(lambda: None, N)
    print(f"empty call: {baseline * 1000:.0f} ns (subtracted below)")
    for mode, log in logs.items():
        record = log.record
        cost = best(lambda r=record: r(*LINE), N) - baseline  # type: ignore[misc]
        log._lines = []
        print(f"record, {mode:8s}: {cost * 1000:5.0f} ns a response = "
              f"{cost / REQUEST_US * 100:.2f} % of a {REQUEST_US:g} us request")
    batch = logs["full"]

    def flush_batch() -> None:
        batch._lines = [LINE] * 1000
        batch.flush()

    per_line = best(flush_batch, 20) / 1000

    def one_record_per_line() -> None:
        for _ in range(1000):
            logger.info("proxy: %s %s %s %d request_id=%s", LINE[4], "GET", LINE[2], 200,
                        LINE[3])

    per_record = best(one_record_per_line, 20) / 1000
    print(f"full flush: {per_line:.2f} us a line, batched; one record per line: "
          f"{per_record:.2f} us ({per_record / per_line:.1f}x)")
    registry = Registry()
    for i in range(20):
        registry.counter(f"bench_counter_{i}_total", "c").inc(i)
    events = registry.counter_family("bench_events_total", "e", ("type",))
    for i in range(40):
        events.labels(f"type.{i}").inc()
    for i in range(6):
        hist = registry.histogram_family(f"bench_{i}_seconds", "h", ("kind",), FAST_BUCKETS)
        for kind in ("a", "b"):
            hist.labels(kind).observe(0.01)
    registry.add_collector(lambda: [Metric.gauge(f"bench_gauge_{i}", "g", i) for i in range(20)])
    size = len(registry.render())
    print(f"scrape render: {best(registry.render, 50):.0f} us for {size} bytes "
          f"(~{size // 60} samples)")


if __name__ == "__main__":
    main()
