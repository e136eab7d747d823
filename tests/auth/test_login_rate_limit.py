"""A per-client rate limit on login attempts: console login links and OAuth callbacks."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from markco_trio.builtin.auth.login_links import issue_login_link
from markco_trio.builtin.auth.ratelimit import ClientAddress, TokenBuckets
from markco_trio.testing.fake_github import FakeGitHub

from .conftest import StartMarkco

LIMITED = """
login_attempts_burst = 2
login_attempts_per_minute = 1
"""


async def test_a_client_gets_its_burst_then_waits_for_a_token(
        autojump_clock: trio.testing.MockClock) -> None:
    buckets = TokenBuckets(per_minute=6, burst=2, now=trio.current_time)
    assert buckets.take_nowait("10.0.0.1") == 0.0
    assert buckets.take_nowait("10.0.0.1") == 0.0
    assert buckets.take_nowait("10.0.0.1") == 10.0  # one token every 10 s


async def test_a_bucket_refills_at_the_configured_rate(
        autojump_clock: trio.testing.MockClock) -> None:
    buckets = TokenBuckets(per_minute=6, burst=2, now=trio.current_time)
    for _ in range(2):
        buckets.take_nowait("10.0.0.1")
    await trio.sleep(9.5)
    assert buckets.take_nowait("10.0.0.1") == pytest.approx(0.5)
    await trio.sleep(0.5)
    assert buckets.take_nowait("10.0.0.1") == 0.0


async def test_each_client_address_has_its_own_bucket(
        autojump_clock: trio.testing.MockClock) -> None:
    buckets = TokenBuckets(per_minute=1, burst=1, now=trio.current_time)
    assert buckets.take_nowait("10.0.0.1") == 0.0
    assert buckets.take_nowait("10.0.0.1") > 0
    assert buckets.take_nowait("10.0.0.2") == 0.0


async def test_many_addresses_do_not_grow_memory_without_bound(
        autojump_clock: trio.testing.MockClock) -> None:
    buckets = TokenBuckets(per_minute=60, burst=1, now=trio.current_time, max_clients=10)
    for i in range(100):
        buckets.take_nowait(f"10.0.0.{i}")
    assert buckets.statistics() <= 10


def test_the_client_is_the_rightmost_address_not_a_trusted_proxy() -> None:
    address = ClientAddress(["10.0.0.0/8"])
    assert address("1.2.3.4") == "1.2.3.4"
    assert address("6.6.6.6, 1.2.3.4, 10.0.0.5") == "1.2.3.4"  # 6.6.6.6: the client's claim
    assert ClientAddress()("6.6.6.6, 1.2.3.4") == "1.2.3.4"


async def test_login_links_over_the_limit_get_429_with_retry_after(
        start_markco: StartMarkco) -> None:
    markco = await start_markco(auth=LIMITED)
    browser = markco.client()
    for _ in range(2):
        assert (await browser.get("/auth/link/" + "x" * 43)).status_code == 410
    user = await markco.user("ada")
    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=10)
    refused = await browser.get(link)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "60"
    assert "Too many login attempts" in refused.text and "Wait 60 seconds" in refused.text
    markco.clock.advance(60)
    assert (await browser.get(link)).status_code == 303  # the link was not spent by the 429


async def test_oauth_callbacks_over_the_limit_get_429(
        start_markco: StartMarkco, fake_github: FakeGitHub) -> None:
    markco = await start_markco(auth=LIMITED, github=fake_github)
    browser = markco.client()
    for _ in range(2):
        assert (await browser.get("/auth/callback/github?code=x&state=y")).status_code == 400
    assert (await markco.github_login(browser)).status_code == 429
