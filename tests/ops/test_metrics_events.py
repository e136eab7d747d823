"""What the daemon's metrics make of the lifecycle's events (pure: no daemon runs), and a
collector that fails."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from markco_trio.config import load_config
from markco_trio.context import PluginContext
from markco_trio.metrics import Metric
from markco_trio.observability import DaemonMetrics
from tests.ops.test_metrics_endpoint import METRICS, Start, scrape, value


@pytest.fixture
def observed(write_config: Callable[[str], Path]) -> DaemonMetrics:
    config, pm = load_config(write_config(""), entry_points=False)
    return DaemonMetrics(PluginContext(config=config, plugins=pm), lambda: None)


def text(observed: DaemonMetrics) -> str:
    return observed.registry.render().decode()


def test_a_sleep_is_a_checkpoint_and_a_wake_a_restore(observed: DaemonMetrics) -> None:
    observed.record_event("runtime.sleeping", {"took_ms": 250})
    observed.record_event("runtime.woken", {"took_ms": 1500})
    out = text(observed)
    assert value(out, 'markco_checkpoint_seconds_count{kind="sleep"}') == 1
    assert value(out, 'markco_checkpoint_seconds_sum{kind="sleep"}') == 0.25
    assert value(out, 'markco_checkpoint_seconds_bucket{kind="sleep",le="0.25"}') == 1
    assert value(out, 'markco_restore_seconds_sum{kind="wake"}') == 1.5


def test_snapshots_and_moves_have_their_own_labels(observed: DaemonMetrics) -> None:
    observed.record_event("snapshot.created", {"duration_ms": 100})
    observed.record_event("snapshot.restored", {"took_ms": 200})
    observed.record_event("runtime.moved", {"took_ms": 3000})
    out = text(observed)
    assert value(out, 'markco_checkpoint_seconds_count{kind="snapshot"}') == 1
    assert value(out, 'markco_restore_seconds_count{kind="snapshot"}') == 1
    assert value(out, 'markco_move_seconds_sum{kind="move"}') == 3


def test_starts_are_counted_by_role_and_operation(observed: DaemonMetrics) -> None:
    observed.record_event("runtime.started", {"operation": "recover", "took_ms": 10})
    observed.record_event("editor.started", {"operation": "start", "took_ms": 20})
    observed.record_event("runtime.started", {"operation": "wake"})  # no duration: not timed
    out = text(observed)
    assert value(out, 'markco_starts_total{role="runtime",operation="recover"}') == 1
    assert value(out, 'markco_starts_total{role="runtime",operation="wake"}') == 1
    assert value(out, 'markco_start_seconds_count{role="runtime"}') == 1
    assert value(out, 'markco_start_seconds_count{role="editor"}') == 1


def test_a_malformed_duration_is_counted_as_an_event_but_not_timed(
        observed: DaemonMetrics) -> None:
    for bad in ("12", -5, True, None, float("nan")):
        observed.record_event("runtime.sleeping", {"took_ms": bad})
    out = text(observed)
    assert value(out, 'markco_events_total{type="runtime.sleeping"}') == 5
    assert value(out, 'markco_checkpoint_seconds_count{kind="sleep"}') == 0


async def test_a_failing_collector_answers_500_and_the_listener_keeps_serving(
        daemon: Start) -> None:
    d, _ = await daemon(METRICS)
    broken = True

    def collector() -> Iterable[Metric]:
        if broken:
            raise RuntimeError("collector bug")
        return []

    d.ctx.metrics.add_collector(collector)
    assert (await scrape(d)).status_code == 500
    broken = False
    assert (await scrape(d)).status_code == 200
