"""The access log and the fault log: counted always, written sparingly."""

from __future__ import annotations

import logging

import pytest

from markco_trio.proxy.accesslog import AccessLog
from markco_trio.proxy.faults import Faults

logger = logging.getLogger("test.proxy")


def test_the_access_log_writes_a_summary_and_a_sample_not_a_line_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = AccessLog(logger, sample_every=100)
    caplog.set_level(logging.INFO, logger="test.proxy")
    for _ in range(250):
        log.record(200, b"GET", b"/x", b"rid", "127.0.0.1")
    assert not caplog.records  # nothing is written per request
    log.flush()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("proxy: 250 responses (2xx 250")
    assert len(messages) == 1 + 2  # the summary and the two sampled lines


def test_the_access_log_keeps_every_server_error(caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog(logger, sample_every=1000)
    caplog.set_level(logging.INFO, logger="test.proxy")
    log.record(502, b"GET", b"/api", b"rid-7", "10.0.0.1")
    log.flush()
    assert any("/api 502 request_id=rid-7" in r.getMessage() for r in caplog.records)


def test_the_access_log_says_nothing_when_nothing_happened(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="test.proxy")
    AccessLog(logger).flush()
    assert not caplog.records


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
