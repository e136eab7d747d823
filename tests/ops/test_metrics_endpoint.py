"""`/metrics` on its own address: off by default, loopback unless told otherwise, served by a
small listener that answers only `GET /metrics`, and counters that move with real traffic."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trio

from markco_trio.config import load_config
from markco_trio.daemon import Daemon
from markco_trio.errors import ConfigError
from markco_trio.metrics import CONTENT_TYPE

Start = Callable[..., Awaitable[tuple[Daemon, int]]]

METRICS = '[metrics]\nlisten = "127.0.0.1:0"\n'


def value(text: str, sample: str) -> float:
    """The value of the sample line starting with `sample` (name and labels), 0 if absent."""
    match = re.search("^" + re.escape(sample) + r" (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def scrape(d: Daemon, **kwargs: object) -> httpx.Response:
    assert d.metrics_listener is not None
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.get(f"http://127.0.0.1:{d.metrics_listener.port}/metrics",
                                **kwargs)  # type: ignore[arg-type]


async def raw(port: int, data: bytes) -> bytes:
    """Send `data` as is; the first bytes of the answer."""
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(data)
            return await stream.receive_some(100)


@pytest.fixture
async def with_metrics(daemon: Start) -> AsyncIterator[tuple[Daemon, int]]:
    yield await daemon(METRICS)


async def test_metrics_are_off_unless_configured(daemon: Start) -> None:
    d, _ = await daemon("")
    assert d.metrics_listener is None


async def test_the_public_front_door_does_not_serve_metrics(
        with_metrics: tuple[Daemon, int]) -> None:
    _, port = with_metrics
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert answer.status_code == 404
    assert b"markco_proxy_requests_total" not in answer.content


async def test_a_scrape_answers_the_text_format(with_metrics: tuple[Daemon, int]) -> None:
    d, _ = with_metrics
    answer = await scrape(d)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == CONTENT_TYPE
    assert "# TYPE markco_proxy_responses_total counter" in answer.text
    assert value(answer.text, "markco_ready") == 1


async def test_requests_through_the_proxy_move_the_counters(
        with_metrics: tuple[Daemon, int]) -> None:
    d, port = with_metrics
    before = (await scrape(d)).text
    async with httpx.AsyncClient(trust_env=False) as client:
        for _ in range(5):
            assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        assert (await client.get(f"http://127.0.0.1:{port}/api/v1/nothing")).status_code == 404
    after = (await scrape(d)).text
    ok = 'markco_proxy_responses_total{code="2xx"}'
    missing = 'markco_proxy_responses_total{code="4xx"}'
    assert value(after, ok) - value(before, ok) == 5
    assert value(after, missing) - value(before, missing) == 1
    assert value(after, "markco_proxy_requests_total") - \
        value(before, "markco_proxy_requests_total") == 6
    assert value(after, "markco_proxy_sent_bytes_total") > \
        value(before, "markco_proxy_sent_bytes_total")


async def test_events_are_counted_by_type(with_metrics: tuple[Daemon, int]) -> None:
    d, _ = with_metrics
    assert d.ctx.events is not None
    await d.ctx.events.publish("ops.test_event", data={})
    await d.ctx.events.publish("ops.test_event", data={})
    sample = 'markco_events_total{type="ops.test_event"}'
    with trio.fail_after(5):  # the observer runs in its own task: scrape until it caught up
        while value((await scrape(d)).text, sample) < 2:  # noqa: ASYNC110
            await trio.sleep(0.02)
    assert value((await scrape(d)).text, sample) == 2


async def test_storage_latency_is_a_histogram_by_kind(with_metrics: tuple[Daemon, int]) -> None:
    d, _ = with_metrics
    text = (await scrape(d)).text
    assert "# TYPE markco_storage_seconds histogram" in text
    assert value(text, 'markco_storage_seconds_count{kind="read"}') > 0
    assert value(text, 'markco_storage_seconds_bucket{kind="write",le="+Inf"}') == \
        value(text, 'markco_storage_seconds_count{kind="write"}')


async def test_users_are_reported_by_state(with_metrics: tuple[Daemon, int]) -> None:
    d, _ = with_metrics
    text = (await scrape(d)).text
    for state in ("active", "sleeping", "failed", "stopped"):
        assert f'markco_users{{state="{state}"}} 0' in text


async def test_only_get_metrics_is_served(with_metrics: tuple[Daemon, int]) -> None:
    d, _ = with_metrics
    assert d.metrics_listener is not None
    base = f"http://127.0.0.1:{d.metrics_listener.port}"
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.get(f"{base}/")).status_code == 404
        assert (await client.get(f"{base}/api/v1/me")).status_code == 404
        refused = await client.post(f"{base}/metrics", content=b"x")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, HEAD"
        head = await client.head(f"{base}/metrics")
        assert head.status_code == 200 and head.content == b""


async def test_a_garbage_request_gets_400_not_a_crash(with_metrics: tuple[Daemon, int]) -> None:
    d, _ = with_metrics
    assert d.metrics_listener is not None
    assert (await raw(d.metrics_listener.port, b"\x00\x01 not http at all\r\n\r\n")
            ).startswith(b"HTTP/1.1 400")
    assert (await scrape(d)).status_code == 200  # still serving


async def test_an_oversized_request_head_is_refused(with_metrics: tuple[Daemon, int]) -> None:
    d, _ = with_metrics
    assert d.metrics_listener is not None
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000
    assert (await raw(d.metrics_listener.port, head)).startswith(b"HTTP/1.1 400")


async def test_a_token_is_required_when_configured(daemon: Start) -> None:
    d, _ = await daemon(METRICS + 'token_env = "MARKCO_TEST_METRICS_TOKEN"\n',
                        environ={"MARKCO_TEST_METRICS_TOKEN": "s3cret-token"})
    assert (await scrape(d)).status_code == 401
    wrong = await scrape(d, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = await scrape(d, headers={"Authorization": "Bearer s3cret-token"})
    assert right.status_code == 200
    assert "markco_proxy_requests_total" in right.text


def test_a_public_address_is_refused_without_allow_remote(
        write_config: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match=r"\[metrics\].*not a loopback address.*allow_remote"):
        load_config(write_config('[metrics]\nlisten = "0.0.0.0:9464"\n'), entry_points=False)


def test_a_public_address_is_accepted_with_allow_remote(
        write_config: Callable[[str], Path]) -> None:
    config, _ = load_config(write_config(
        '[metrics]\nlisten = "0.0.0.0:9464"\nallow_remote = true\n'), entry_points=False)
    assert (config.metrics.host, config.metrics.port) == ("0.0.0.0", 9464)


def test_a_malformed_listen_names_the_expected_form(
        write_config: Callable[[str], Path]) -> None:
    with pytest.raises(ConfigError, match=r"\[metrics\].*HOST:PORT"):
        load_config(write_config('[metrics]\nlisten = "9464"\n'), entry_points=False)


async def test_a_busy_metrics_port_ends_the_start_naming_the_setting(
        write_config: Callable[[str], Path], caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        config, pm = load_config(write_config(
            f'[metrics]\nlisten = "127.0.0.1:{taken}"\n'), entry_points=False)
        code = await Daemon(config, pm).run(handle_signals=False)
    assert code == 1
    assert any("[metrics] listen" in r.getMessage() and "already in use" in r.getMessage()
               for r in caplog.records)


def test_the_front_doors_own_address_is_refused_for_metrics(
        write_config: Callable[[str], Path]) -> None:
    text = ('[server]\nlisten = "127.0.0.1:3000"\ndata_dir = "data"\n\n'
            '[metrics]\nlisten = "127.0.0.1:3000"\n')
    with pytest.raises(ConfigError, match=r"\[metrics\] listen.*front door's address"):
        load_config(write_config(text), entry_points=False)
