"""The metrics registry and its text exposition (format 0.0.4): pure, no daemon."""

from __future__ import annotations

import math
import re

import pytest

from markco_trio.metrics import Histogram, Metric, Registry

# One sample line of the 0.0.4 text format: name, optional labels (escaped values), value.
SAMPLE = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*'
                    r'(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})?'
                    r' (-?[0-9.e+-]+|\+Inf|-Inf|NaN)\Z')


def lines_of(registry: Registry) -> list[str]:
    text = registry.render().decode()
    assert text.endswith("\n")
    lines = text.splitlines()
    for line in lines:
        assert line.startswith(("# HELP ", "# TYPE ")) or SAMPLE.match(line), line
    return lines


def test_a_counter_is_rendered_with_help_and_type() -> None:
    registry = Registry()
    registry.counter("markco_starts_total", "Runtimes started.").inc(3)
    assert lines_of(registry) == ["# HELP markco_starts_total Runtimes started.",
                                  "# TYPE markco_starts_total counter",
                                  "markco_starts_total 3"]


def test_a_counter_refuses_to_go_down() -> None:
    with pytest.raises(ValueError, match="only goes up"):
        Registry().counter("c_total", "c").inc(-1)


def test_asking_twice_for_a_metric_returns_the_same_one() -> None:
    registry = Registry()
    registry.counter("c_total", "c").inc()
    registry.counter("c_total", "c").inc()
    assert "c_total 2" in lines_of(registry)


def test_the_same_name_with_another_kind_is_refused() -> None:
    registry = Registry()
    registry.counter("c_total", "c")
    with pytest.raises(ValueError, match="already registered as a counter"):
        registry.gauge("c_total", "c")


def test_invalid_names_and_labels_are_refused_with_the_rule() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="not valid in Prometheus"):
        registry.counter("9lives", "x")
    with pytest.raises(ValueError, match="not valid in Prometheus"):
        registry.counter_family("ok_total", "x", ("__reserved",))
    with pytest.raises(ValueError, match="'le'"):
        registry.histogram_family("h_seconds", "x", ("le",))


def test_histogram_buckets_are_cumulative_and_end_at_inf() -> None:
    registry = Registry()
    hist = registry.histogram("markco_x_seconds", "x", buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 0.7, 5.0):
        hist.observe(value)
    lines = lines_of(registry)
    assert 'markco_x_seconds_bucket{le="0.1"} 1' in lines
    assert 'markco_x_seconds_bucket{le="1"} 3' in lines
    assert 'markco_x_seconds_bucket{le="+Inf"} 4' in lines
    assert "markco_x_seconds_count 4" in lines
    assert "markco_x_seconds_sum 6.25" in lines


def test_an_observation_on_a_bucket_bound_counts_in_that_bucket() -> None:
    hist = Histogram((1.0, 2.0))
    hist.observe(1.0)
    assert hist.counts == [1, 0, 0]


def test_histogram_buckets_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram((1.0, 0.5))


def test_label_values_are_escaped() -> None:
    registry = Registry()
    registry.counter_family("e_total", "e", ("type",)).labels('a"b\\c\nd').inc()
    assert 'e_total{type="a\\"b\\\\c\\nd"} 1' in lines_of(registry)


def test_help_text_is_escaped() -> None:
    registry = Registry()
    registry.gauge("g", "line one\nback\\slash")
    assert "# HELP g line one\\nback\\\\slash" in lines_of(registry)


def test_collectors_are_called_at_each_scrape() -> None:
    registry = Registry()
    state = {"open": 1}
    registry.add_collector(lambda: [Metric.gauge("markco_open_tunnels", "t", state["open"])])
    assert "markco_open_tunnels 1" in lines_of(registry)
    state["open"] = 4
    assert "markco_open_tunnels 4" in lines_of(registry)


def test_two_collectors_reporting_one_family_are_merged_under_one_header() -> None:
    registry = Registry()
    registry.add_collector(lambda: [Metric.counter("r_total", "r", 1, {"code": "2xx"})])
    registry.add_collector(lambda: [Metric.counter("r_total", "r", 2, {"code": "5xx"})])
    lines = lines_of(registry)
    assert lines.count("# TYPE r_total counter") == 1
    assert 'r_total{code="5xx"} 2' in lines


def test_special_values_use_the_format_spelling() -> None:
    registry = Registry()
    registry.add_collector(lambda: [Metric.gauge("a", "a", math.inf),
                                    Metric.gauge("b", "b", math.nan),
                                    Metric.gauge("c", "c", 0.25)])
    lines = lines_of(registry)
    assert {"a +Inf", "b NaN", "c 0.25"} <= set(lines)


def test_an_empty_registry_renders_nothing() -> None:
    assert Registry().render() == b""


def test_a_collector_reporting_an_invalid_name_is_refused() -> None:
    registry = Registry()
    registry.add_collector(lambda: [Metric.gauge("bad name", "g", 1)])
    with pytest.raises(ValueError, match="not valid in Prometheus"):
        registry.render()


def test_a_collector_reporting_one_name_with_two_kinds_is_refused() -> None:
    registry = Registry()
    registry.add_collector(lambda: [Metric.gauge("x", "g", 1), Metric.counter("x", "c", 1)])
    with pytest.raises(ValueError, match="reported as gauge and counter"):
        registry.render()
