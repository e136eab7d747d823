"""The fault log: counted always, written sparingly (the access log: tests/ops)."""

from __future__ import annotations

import logging

import pytest

from markco_trio.proxy.faults import Faults

logger = logging.getLogger("test.proxy")


def test_faults_are_all_counted_but_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    faults = Faults(logger, interval=60.0)
    caplog.set_level(logging.WARNING, logger="test.proxy")
    for second in range(5):
        faults.record("upstream_unavailable", now=float(second), detail="no socket")
    assert faults.counts["upstream_unavailable"] == 5
    assert len(caplog.records) == 1
    faults.record("upstream_unavailable", now=61.0, detail="no socket")
    assert len(caplog.records) == 2


def test_suppressed_faults_are_summarised_at_flush(caplog: pytest.LogCaptureFixture) -> None:
    faults = Faults(logger)
    caplog.set_level(logging.WARNING, logger="test.proxy")
    for _ in range(3):
        faults.record("upstream_error", now=0.0, detail="reset")
    faults.flush()
    assert "upstream_error x2" in caplog.records[-1].getMessage()


def test_client_mistakes_are_counted_but_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    faults = Faults(logger)
    caplog.set_level(logging.DEBUG, logger="test.proxy")
    faults.record("bad_request", now=0.0, detail="obs-fold")
    faults.record("client_disconnected", now=0.0)
    assert faults.counts == {"bad_request": 1, "client_disconnected": 1}
    assert not caplog.records
