"""The access log: counted always, written in one batch a second, in the mode configured
(`off`, `sampled`, `full`), with the request id the upstream (the API, an editor) also sees."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from markco_trio.config import load_config
from markco_trio.errors import ConfigError
from markco_trio.proxy.accesslog import AccessLog
from tests.dataplane.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    XHR,
    RawWebSocket,
    StartPlane,
    eventually,
    start_plane,
)

logger = logging.getLogger("test.access")


def written(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The access lines written so far (each record holds a batch of lines)."""
    return [line for r in caplog.records if r.name == "test.access"
            for line in r.getMessage().splitlines()]


@pytest.fixture(autouse=True)
def capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.access")


def test_nothing_is_written_per_request_only_at_flush(caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog(logger, mode="full")
    for _ in range(10):
        log.record(200, b"GET", b"/x", b"rid", "127.0.0.1")
    assert not caplog.records
    log.flush()
    assert len(caplog.records) == 1  # one batch
    assert len(written(caplog)) == 10


def test_full_mode_writes_every_response_with_its_request_id(
        caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog(logger, mode="full")
    log.record(200, b"GET", b"/a", b"rid-1", "10.0.0.1")
    log.record(404, b"POST", b"/b?q=1", b"rid-2", "10.0.0.2")
    log.flush()
    assert written(caplog) == [
        'client=10.0.0.1 method=GET target="/a" status=200 request_id=rid-1',
        'client=10.0.0.2 method=POST target="/b?q=1" status=404 request_id=rid-2']


def test_sampled_mode_keeps_one_in_n_and_no_summary_line(
        caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog(logger, mode="sampled", sample_every=100)
    for _ in range(250):
        log.record(200, b"GET", b"/x", b"rid", "127.0.0.1")
    log.flush()
    lines = written(caplog)
    assert len(lines) == 2
    assert not any("responses" in line for line in lines)  # the per-second summary is gone


def test_sampled_mode_keeps_every_server_error(caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog(logger, mode="sampled", sample_every=1000)
    log.record(502, b"GET", b"/api", b"rid-7", "10.0.0.1")
    log.flush()
    assert written(caplog) == ['client=10.0.0.1 method=GET target="/api" status=502 '
                               'request_id=rid-7']


def test_off_writes_nothing_but_still_counts(caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog(logger, mode="off")
    log.record(200, b"GET", b"/x", b"r", "c")
    log.record(503, b"GET", b"/x", b"r", "c")
    log.flush()
    assert not caplog.records
    assert log.by_class[2] == 1 and log.by_class[5] == 1
    assert log.responses == 2


def test_counts_by_class_are_never_reset_by_a_flush() -> None:
    log = AccessLog(logger, mode="full")
    log.record(301, b"GET", b"/x", b"r", "c")
    log.flush()
    log.record(302, b"GET", b"/x", b"r", "c")
    assert log.by_class[3] == 2


def test_lines_beyond_the_batch_are_dropped_counted_and_said(
        caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog(logger, mode="full", max_lines=3)
    for _ in range(5):
        log.record(200, b"GET", b"/x", b"r", "c")
    log.flush()
    lines = written(caplog)
    assert len(lines) == 4
    assert lines[-1].startswith("2 access lines dropped")
    assert log.lines_dropped == 2


def test_a_hostile_target_cannot_forge_a_line(caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog(logger, mode="full")
    log.record(200, b"GET", b'/x"\nclient=1.2.3.4 status=200\\', b"r\n", "c")
    log.flush()
    [line] = written(caplog)
    assert line == ('client=c method=GET target="/x%22%0Aclient=1.2.3.4%20status=200%5C" '
                    'status=200 request_id=r%0A')


def test_a_long_target_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog(logger, mode="full")
    log.record(200, b"GET", b"/" + b"a" * 5000, b"r", "c")
    log.flush()
    assert len(written(caplog)[0]) < 300


def test_nothing_is_written_when_nothing_happened(caplog: pytest.LogCaptureFixture) -> None:
    AccessLog(logger, mode="full").flush()
    assert not caplog.records


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="off, sampled, full"):
        AccessLog(logger, mode="verbose")  # type: ignore[arg-type]


def test_the_config_refuses_an_unknown_mode_naming_the_choices(
        write_config: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match=r"\[logging\].*access.*full"):
        load_config(write_config('[logging]\naccess = "verbose"\n'), entry_points=False)


def test_the_config_refuses_a_zero_sample_rate(write_config: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match=r"access_sample_every"):
        load_config(write_config('[logging]\naccess_sample_every = 0\n'), entry_points=False)


async def test_the_editor_sees_the_request_id_the_access_log_writes(
        start_plane: StartPlane,  # noqa: F811 - the fixture imported above
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="markco.access")
    plane = await start_plane(auth='\n[logging]\naccess = "full"\n')
    alice = await plane.user("alice")
    headers = {**plane.cookie(await plane.session(alice)), **XHR}
    client = plane.client()
    chosen = await client.get(f"/u/{alice.id}/whoami",
                              headers={**headers, "X-Request-Id": "trace-e2e-1"})
    generated = await client.get(f"/u/{alice.id}/whoami?second", headers=headers)
    assert chosen.status_code == generated.status_code == 200
    assert dict(chosen.json()["headers"])["x-request-id"] == "trace-e2e-1"
    rid = dict(generated.json()["headers"])["x-request-id"]
    assert rid and rid != "trace-e2e-1"
    plane.front_door.access_log.flush()
    lines = [line for r in caplog.records if r.name == "markco.access"
             for line in r.getMessage().splitlines()]
    assert any(f'target="/u/{alice.id}/whoami" status=200 request_id=trace-e2e-1' in line
               for line in lines)
    assert any(f"status=200 request_id={rid}" in line for line in lines)


async def test_a_websocket_handshake_carries_the_request_id_too(
        start_plane: StartPlane,  # noqa: F811 - the fixture imported above
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="markco.access")
    plane = await start_plane(auth='\n[logging]\naccess = "full"\n')
    bob = await plane.user("bob")
    cookie = plane.cookie(await plane.session(bob))
    status, ws = await RawWebSocket.open(plane, f"/u/{bob.id}/ws",
                                         {**cookie, "X-Request-Id": "ws-trace-1"})
    assert status == 101 and ws is not None
    await ws.aclose()
    _, _, headers = plane.editors[bob.id].last()
    assert headers["x-request-id"] == ["ws-trace-1"]
    # A tunnel's line is kept when the tunnel ends (its status is known at the handshake).
    await eventually(lambda: plane.front_door.access_log.by_class[1] == 1)
    plane.front_door.access_log.flush()
    assert any("status=101 request_id=ws-trace-1" in r.getMessage()
               for r in caplog.records if r.name == "markco.access")
