"""Prometheus metrics: a small registry and the text exposition format 0.0.4.

Why not `prometheus_client`: its counters take a lock per increment and its labelled children a
dict lookup, and the proxy spends ~75 µs of CPU per request (DESIGN §3.1). Here the hot path
never touches this module: the front door counts in plain integer attributes of objects it
already has, and a *collector* — a function the registry calls at scrape time — reads them.
What is not hot (a start, a checkpoint, a monitor poll, a storage call) records directly.

The API, on the registry every daemon has as `ctx.metrics`:

    starts = ctx.metrics.counter("markco_starts_total", "Runtimes started.")
    starts.inc()

    polls = ctx.metrics.histogram("markco_monitor_poll_seconds", "One monitor poll.")
    polls.observe(elapsed)               # or: with polls.time(): ...

    events = ctx.metrics.counter_family("markco_events_total", "Events recorded, by type.",
                                        ("type",))
    events.labels("runtime.started").inc()

    def collect() -> Iterable[Metric]:   # called at each scrape; must be quick and not block
        yield Metric.gauge("markco_open_tunnels", "WebSocket tunnels open.", len(tunnels))
    ctx.metrics.add_collector(collect)

Asking twice for the same name and kind returns the same metric (a supervised service that
restarts registers again); the same name with another kind or other labels is an error.
`Registry.render()` is what `GET /metrics` answers (`CONTENT_TYPE`).
"""

from __future__ import annotations

import math
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "FAST_BUCKETS",
    "Collector",
    "Counter",
    "Family",
    "Gauge",
    "Histogram",
    "Metric",
    "Registry",
    "Sample",
    "histogram_samples",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. Starts, checkpoints, restores and moves take from tens of milliseconds to minutes.
DURATION_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                       30.0, 60.0, 120.0, 300.0)
# Seconds. Storage calls and monitor polls: sub-millisecond to a few seconds.
FAST_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                   0.5, 1.0, 2.5, 5.0)

Kind = Literal["counter", "gauge", "histogram", "untyped"]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"metric name {name!r} is not valid in Prometheus: use letters, "
                         "digits, '_' and ':', not starting with a digit")


def _check_labels(labelnames: Sequence[str], *, histogram: bool = False) -> None:
    for label in labelnames:
        if not _LABEL.match(label) or label.startswith("__"):
            raise ValueError(f"label name {label!r} is not valid in Prometheus: use letters, "
                             "digits and '_', not starting with a digit or '__'")
        if histogram and label == "le":
            raise ValueError("a histogram cannot have a label named 'le' (its buckets use it)")
    if len(set(labelnames)) != len(labelnames):
        raise ValueError(f"label names repeat: {list(labelnames)}")


class Counter:
    """A value that only goes up. `value` is a plain attribute: `inc()` is one addition."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        """Add `amount` (must not be negative: a counter never goes down)."""
        if amount < 0:
            raise ValueError(f"a counter only goes up; inc({amount}) is negative")
        self.value += amount


class Gauge:
    """A value that goes up and down."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def set(self, value: float) -> None:
        """Set the value."""
        self.value = value

    def inc(self, amount: float = 1) -> None:
        """Add `amount`."""
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        """Subtract `amount`."""
        self.value -= amount


class Histogram:
    """Observations counted into buckets (upper bounds, seconds for durations), with their sum.

    `observe()` is a bisection and two additions: fine for a start or a storage call, not meant
    for the proxy's per-request path."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        bounds = tuple(float(b) for b in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram buckets must be increasing and distinct: {buckets}")
        if bounds[-1] != math.inf:
            bounds = (*bounds, math.inf)
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative (rendering sums them)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    @contextmanager
    def time(self) -> Iterator[None]:
        """Observe the wall time the block takes (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - start)


M = TypeVar("M", Counter, Gauge, Histogram)


class Family(Generic[M]):
    """A metric with labels: one child per combination of label values."""

    def __init__(self, labelnames: tuple[str, ...], make: Callable[[], M]) -> None:
        self.labelnames = labelnames
        self._make: Callable[[], M] = make
        self.children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        """The child for these label values (created at first use). Keep it if it is used
        often: this is a dict lookup."""
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"expected {len(self.labelnames)} label values "
                                 f"{self.labelnames}, got {values}")
            child = self.children[values] = self._make()
        return child


@dataclass(frozen=True)
class Sample:
    """One exposition line: `<name><suffix>{labels} value`."""

    suffix: str
    labels: tuple[tuple[str, str], ...]
    value: float


@dataclass
class Metric:
    """One metric family as a collector reports it at scrape time."""

    name: str
    kind: Kind
    help: str
    samples: list[Sample] = field(default_factory=list)

    @classmethod
    def counter(cls, name: str, help: str, value: float = 0,
                labels: dict[str, str] | None = None) -> Metric:
        """A counter with one sample (`add()` more for other labels)."""
        return cls(name, "counter", help).add(value, labels)

    @classmethod
    def gauge(cls, name: str, help: str, value: float = 0,
              labels: dict[str, str] | None = None) -> Metric:
        """A gauge with one sample (`add()` more for other labels)."""
        return cls(name, "gauge", help).add(value, labels)

    def add(self, value: float, labels: dict[str, str] | None = None) -> Metric:
        """Add a sample; returns self so calls chain."""
        self.samples.append(Sample("", tuple((labels or {}).items()), value))
        return self


Collector = Callable[[], Iterable[Metric]]


class Registry:
    """The daemon's metrics: the ones recorded directly and the collectors read at scrape."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[Kind, str, Family[Counter] | Family[Gauge]
                                        | Family[Histogram]]] = {}
        self._collectors: list[Collector] = []

    def _family(self, name: str, kind: Kind, help: str, labelnames: Sequence[str],
                make: Callable[[], M]) -> Family[M]:
        _check_name(name)
        _check_labels(labelnames, histogram=kind == "histogram")
        labels = tuple(labelnames)
        known = self._families.get(name)
        if known is not None:
            known_kind, _, family = known
            if known_kind != kind or family.labelnames != labels:
                raise ValueError(f"metric {name!r} is already registered as a {known_kind} "
                                 f"with labels {family.labelnames}")
            return family  # type: ignore[return-value]
        created: Family[M] = Family(labels, make)
        self._families[name] = (kind, help, created)  # type: ignore[assignment]
        return created

    def counter(self, name: str, help: str) -> Counter:
        """A counter without labels (name it `..._total`)."""
        return self._family(name, "counter", help, (), Counter).labels()

    def gauge(self, name: str, help: str) -> Gauge:
        """A gauge without labels."""
        return self._family(name, "gauge", help, (), Gauge).labels()

    def histogram(self, name: str, help: str,
                  buckets: Sequence[float] = DURATION_BUCKETS) -> Histogram:
        """A histogram without labels (name it `..._seconds` for durations)."""
        return self._family(name, "histogram", help, (),
                            lambda: Histogram(buckets)).labels()

    def counter_family(self, name: str, help: str, labelnames: Sequence[str]) -> Family[Counter]:
        """Counters by label values."""
        return self._family(name, "counter", help, labelnames, Counter)

    def gauge_family(self, name: str, help: str, labelnames: Sequence[str]) -> Family[Gauge]:
        """Gauges by label values."""
        return self._family(name, "gauge", help, labelnames, Gauge)

    def histogram_family(self, name: str, help: str, labelnames: Sequence[str],
                         buckets: Sequence[float] = DURATION_BUCKETS) -> Family[Histogram]:
        """Histograms by label values."""
        return self._family(name, "histogram", help, labelnames, lambda: Histogram(buckets))

    def add_collector(self, collector: Collector) -> None:
        """Call `collector()` at every scrape (once, however often it is added)."""
        if collector not in self._collectors:
            self._collectors.append(collector)

    def remove_collector(self, collector: Collector) -> None:
        """Stop calling `collector` (nothing if it was not added)."""
        if collector in self._collectors:
            self._collectors.remove(collector)

    def collect(self) -> list[Metric]:
        """Every metric now: the registered ones, then each collector's, by name."""
        out: list[Metric] = []
        for name, (kind, help, family) in self._families.items():
            metric = Metric(name, kind, help)
            for values, child in family.children.items():
                labels = tuple(zip(family.labelnames, values, strict=True))
                if isinstance(child, Histogram):
                    metric.samples.extend(histogram_samples(child, labels))
                else:
                    metric.samples.append(Sample("", labels, child.value))
            out.append(metric)
        for collector in list(self._collectors):
            out.extend(collector())
        merged: dict[str, Metric] = {}
        for metric in out:  # two collectors may report samples of one family
            known = merged.get(metric.name)
            if known is None:
                _check_name(metric.name)
                merged[metric.name] = Metric(metric.name, metric.kind, metric.help,
                                             list(metric.samples))
            elif known.kind != metric.kind:
                raise ValueError(f"metric {metric.name!r} reported as {known.kind} and "
                                 f"{metric.kind}")
            else:
                known.samples.extend(metric.samples)
        return [merged[name] for name in sorted(merged)]

    def render(self) -> bytes:
        """The text exposition format 0.0.4 of `collect()`."""
        return render(self.collect())


def histogram_samples(hist: Histogram,
                      labels: tuple[tuple[str, str], ...] = ()) -> Iterator[Sample]:
    """The `_bucket` (cumulative), `_sum` and `_count` samples of `hist`, for a collector
    that reports a histogram it keeps itself."""
    running = 0
    for bound, count in zip(hist.bounds, hist.counts, strict=True):
        running += count
        yield Sample("_bucket", (*labels, ("le", _number(bound))), running)
    yield Sample("_sum", labels, hist.sum)
    yield Sample("_count", labels, hist.count)


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(metrics: Iterable[Metric]) -> bytes:
    """Metrics in the text exposition format 0.0.4: `# HELP` and `# TYPE` once per family,
    then its samples; label values escaped; every line ends with a line feed."""
    lines: list[str] = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for sample in metric.samples:
            if sample.labels:
                inner = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in sample.labels)
                lines.append(f"{metric.name}{sample.suffix}{{{inner}}} {_number(sample.value)}")
            else:
                lines.append(f"{metric.name}{sample.suffix} {_number(sample.value)}")
    return ("\n".join(lines) + "\n").encode() if lines else b""
