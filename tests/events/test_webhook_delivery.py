"""Webhook deliveries end to end on loopback: markco signs, a real receiver
(`markco_trio.testing.webhook_receiver`) verifies, refuses replays and alterations, and
sees the retries; every attempt is in the delivery log; a dead webhook never holds up the
producer or the other webhooks."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import httpx
import pytest
import trio
import trio.testing

from markco_trio.builtin.events import WebhookDispatcher, WebhooksOptions, backoff_delay
from markco_trio.builtin.events.query import event_json
from markco_trio.context import PluginContext
from markco_trio.errors import ConfigError
from markco_trio.records import Event, WebhookDelivery
from markco_trio.testing.webhook_receiver import running_webhook_receiver
from markco_trio.webhooks import EVENT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, verify

from .conftest import WEBHOOK_SECRET, WEBHOOK_SECRET_ENV

MakeContext = Callable[[str], PluginContext]


def webhooks_config(endpoints: dict[str, str], *, types: dict[str, list[str]] | None = None,
                    **options: object) -> str:
    """A `[webhooks]` section: fast retries unless told otherwise."""
    settings = {"backoff_initial": 0.01, "backoff_max": 0.05, "timeout": 5.0, **options}
    text = "[webhooks]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    for name, url in endpoints.items():
        text += (f"\n[webhooks.endpoints.{name}]\nurl = \"{url}\"\n"
                 f"secret_env = \"{WEBHOOK_SECRET_ENV}\"\n")
        if types and name in types:
            text += f"types = {json.dumps(types[name])}\n"
    return text


async def running_dispatcher(ctx: PluginContext, nursery: trio.Nursery) -> WebhookDispatcher:
    dispatcher = WebhookDispatcher(ctx, ctx.config.section("webhooks"))
    await nursery.start(dispatcher.run)
    return dispatcher


async def deliveries(ctx: PluginContext, *, count: int, webhook: str | None = None
                     ) -> list[WebhookDelivery]:
    """The delivery log once it holds `count` attempts (of `webhook`)."""
    storage = ctx.require_storage()
    with trio.fail_after(10):
        while True:
            rows = await storage.list_webhook_deliveries(webhook=webhook)
            if len(rows) >= count:
                return rows
            await trio.sleep(0.01)


async def test_a_delivery_is_signed_and_the_receiver_verifies_it(
        make_context: MakeContext, nursery: trio.Nursery) -> None:
    async with running_webhook_receiver(WEBHOOK_SECRET) as receiver:
        ctx = make_context(webhooks_config({"billing": receiver.url}))
        await running_dispatcher(ctx, nursery)
        assert ctx.events is not None
        event = await ctx.events.publish("user.plan_changed", user_id="u1",
                                         data={"old": "free", "new": "pro"})
        await receiver.wait_accepted(1)
    (got,) = receiver.requests
    assert got.status == 204 and got.refused is None
    assert got.json() == {**json.loads(json.dumps(event_json(event))), "attempt": 1}
    assert got.headers[EVENT_HEADER] == "user.plan_changed"
    assert got.headers[EVENT_ID_HEADER] == event.id
    (row,) = await deliveries(ctx, count=1)
    assert (row.webhook, row.event_id, row.attempt, row.outcome, row.status_code) == (
        "billing", event.id, 1, "delivered", 204)


async def test_failed_attempts_are_retried_until_the_receiver_accepts(
        make_context: MakeContext, nursery: trio.Nursery) -> None:
    async with running_webhook_receiver(WEBHOOK_SECRET, script=[503, 500]) as receiver:
        ctx = make_context(webhooks_config({"billing": receiver.url}))
        await running_dispatcher(ctx, nursery)
        assert ctx.events is not None
        event = await ctx.events.publish("critical", user_id="u1")
        await receiver.wait_accepted(1)
    # Every attempt was signed afresh and verified; the receiver saw the retries.
    assert [(r.status, r.refused) for r in receiver.requests] == [
        (503, None), (500, None), (204, None)]
    assert {r.headers[EVENT_ID_HEADER] for r in receiver.requests} == {event.id}
    assert [r.json()["attempt"] for r in receiver.requests] == [1, 2, 3]
    rows = await deliveries(ctx, count=3)
    assert [(r.attempt, r.outcome, r.status_code) for r in rows] == [
        (1, "retrying", 503), (2, "retrying", 500), (3, "delivered", 204)]


async def test_a_replayed_delivery_is_refused_by_the_receiver(
        make_context: MakeContext, nursery: trio.Nursery) -> None:
    async with running_webhook_receiver(WEBHOOK_SECRET) as receiver:
        ctx = make_context(webhooks_config({"billing": receiver.url}))
        await running_dispatcher(ctx, nursery)
        assert ctx.events is not None
        await ctx.events.publish("critical", user_id="u1")
        await receiver.wait_accepted(1)
        original = receiver.requests[0]
        async with httpx.AsyncClient(trust_env=False) as attacker:
            replay = await attacker.post(receiver.url, content=original.body, headers={
                SIGNATURE_HEADER: original.headers[SIGNATURE_HEADER]})
    assert replay.status_code == 400 and "replay" in replay.text
    assert len(receiver.accepted) == 1


async def test_a_delivery_replayed_after_the_tolerance_is_refused(
        make_context: MakeContext, nursery: trio.Nursery) -> None:
    clock_offset = [0.0]
    async with running_webhook_receiver(
            WEBHOOK_SECRET, tolerance=300,
            now=lambda: ctx.clock.now() + clock_offset[0]) as receiver:
        ctx = make_context(webhooks_config({"billing": receiver.url}))
        await running_dispatcher(ctx, nursery)
        assert ctx.events is not None
        await ctx.events.publish("critical", user_id="u1")
        await receiver.wait_accepted(1)
        original = receiver.requests[0]
        clock_offset[0] = 301  # later: past the tolerance (the guard alone would forget it)
        receiver._guard = type(receiver._guard)()
        async with httpx.AsyncClient(trust_env=False) as attacker:
            replay = await attacker.post(receiver.url, content=original.body, headers={
                SIGNATURE_HEADER: original.headers[SIGNATURE_HEADER]})
    assert replay.status_code == 400 and "tolerance" in replay.text


async def test_an_altered_delivery_is_refused_by_the_receiver(
        make_context: MakeContext, nursery: trio.Nursery) -> None:
    async with running_webhook_receiver(WEBHOOK_SECRET) as receiver:
        ctx = make_context(webhooks_config({"billing": receiver.url}))
        await running_dispatcher(ctx, nursery)
        assert ctx.events is not None
        await ctx.events.publish("user.plan_changed", user_id="u1",
                                 data={"old": "free", "new": "pro"})
        await receiver.wait_accepted(1)
        original = receiver.requests[0]
        forged = original.body.replace(b'"pro"', b'"team"')
        assert forged != original.body
        async with httpx.AsyncClient(trust_env=False) as attacker:
            altered = await attacker.post(receiver.url, content=forged, headers={
                SIGNATURE_HEADER: original.headers[SIGNATURE_HEADER]})
    assert altered.status_code == 400 and "does not match" in altered.text


async def test_a_refusal_by_the_receiver_is_not_retried(
        make_context: MakeContext, nursery: trio.Nursery) -> None:
    async with running_webhook_receiver(WEBHOOK_SECRET, script=[410]) as receiver:
        ctx = make_context(webhooks_config({"billing": receiver.url}))
        await running_dispatcher(ctx, nursery)
        assert ctx.events is not None
        await ctx.events.publish("critical")
        rows = await deliveries(ctx, count=1)
        await trio.sleep(0.2)  # room for a (wrong) retry: backoff is 0.01-0.05 s here
    assert [(r.attempt, r.outcome, r.status_code) for r in rows] == [(1, "failed", 410)]
    assert len(receiver.requests) == 1


async def test_delivery_gives_up_after_max_attempts(
        make_context: MakeContext, nursery: trio.Nursery) -> None:
    async with running_webhook_receiver(WEBHOOK_SECRET, script=[503] * 5) as receiver:
        ctx = make_context(webhooks_config({"billing": receiver.url}, max_attempts=3))
        dispatcher = await running_dispatcher(ctx, nursery)
        assert ctx.events is not None
        await ctx.events.publish("critical")
        rows = await deliveries(ctx, count=3)
        await trio.sleep(0.2)
    assert [r.outcome for r in rows] == ["retrying", "retrying", "failed"]
    assert len(receiver.requests) == 3
    stats = dispatcher.statistics()["billing"]
    assert (stats["retried"], stats["failed"], stats["delivered"]) == (2, 1, 0)


async def test_an_unreachable_webhook_is_logged_with_the_error(
        make_context: MakeContext, nursery: trio.Nursery) -> None:
    from markco_trio.testing.network import free_port

    ctx = make_context(webhooks_config({"gone": f"http://127.0.0.1:{free_port()}/x"},
                                       max_attempts=2))
    await running_dispatcher(ctx, nursery)
    assert ctx.events is not None
    await ctx.events.publish("critical")
    rows = await deliveries(ctx, count=2)
    assert [(r.outcome, r.status_code) for r in rows] == [("retrying", None), ("failed", None)]
    assert rows[0].error is not None and "Connect" in rows[0].error


async def test_each_webhook_gets_only_the_types_it_wants(
        make_context: MakeContext, nursery: trio.Nursery) -> None:
    async with running_webhook_receiver(WEBHOOK_SECRET) as everything, \
            running_webhook_receiver(WEBHOOK_SECRET) as plans:
        ctx = make_context(webhooks_config({"all": everything.url, "plans": plans.url},
                                           types={"plans": ["user.plan_changed"]}))
        await running_dispatcher(ctx, nursery)
        assert ctx.events is not None
        for kind in ("critical", "user.plan_changed", "idle-sleep"):
            await ctx.events.publish(kind, user_id="u1")
        await everything.wait_accepted(3)
        await plans.wait_accepted(1)
        await trio.sleep(0.1)
    assert [r.json()["type"] for r in plans.requests] == ["user.plan_changed"]
    assert sorted(r.json()["type"] for r in everything.requests) == [
        "critical", "idle-sleep", "user.plan_changed"]


async def test_a_dead_webhook_never_blocks_the_producer_or_the_other_webhooks(
        make_context: MakeContext, nursery: trio.Nursery) -> None:
    async with running_webhook_receiver(WEBHOOK_SECRET, script=["hang"] * 100) as dead, \
            running_webhook_receiver(WEBHOOK_SECRET) as alive:
        ctx = make_context(webhooks_config({"dead": dead.url, "alive": alive.url},
                                           queue=2, workers=1, timeout=60.0))
        dispatcher = await running_dispatcher(ctx, nursery)
        assert ctx.events is not None
        await ctx.events.publish("critical", data={"i": 0})
        with trio.fail_after(5):
            await dead.wait_for(lambda r: len(r.requests) == 1)  # its one worker now hangs
        with trio.fail_after(10):
            await alive.wait_accepted(1)
            for i in range(1, 20):
                with trio.fail_after(1):  # returns at once, whatever the dead one does
                    await ctx.events.publish("critical", data={"i": i})
                # The live webhook keeps up (its queue is as small as the dead one's).
                await alive.wait_accepted(i + 1)
        stats = dispatcher.statistics()
    assert sorted(r.json()["data"]["i"] for r in alive.accepted) == list(range(20))
    assert len(dead.requests) == 1  # its one worker hangs on the first event
    assert stats["dead"]["dropped"] == 20 - 1 - 2  # one in flight, two queued, the rest lost
    assert stats["alive"]["dropped"] == 0


# ------------------------------------------------------------------ backoff, on a mock clock


def test_backoff_doubles_up_to_the_cap_half_fixed_half_jitter() -> None:
    options = WebhooksOptions(backoff_initial=2.0, backoff_max=30.0)
    rng = random.Random(7)
    for attempt, step in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (9, 30.0)]:
        for _ in range(50):
            delay = backoff_delay(attempt, options, rng)
            assert step / 2 <= delay <= step


class _RecordingStorage:
    """Stand-in for storage in the mock-clock test only: on an autojump MockClock, waiting for
    SQLite's worker thread counts as idle and the clock would jump. Records attempts."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str]] = []

    async def append_webhook_delivery(self, *, attempt: int, outcome: str,
                                      **_: object) -> None:
        self.rows.append((attempt, outcome))


async def test_retries_wait_the_jittered_exponential_backoff(
        make_context: MakeContext, mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    ctx = make_context(webhooks_config({"billing": "https://127.0.0.1:9/markco"},
                                       backoff_initial=2.0, backoff_max=600.0,
                                       max_attempts=5))
    recording = _RecordingStorage()
    ctx.storage = recording  # type: ignore[assignment]
    seen: list[float] = []

    def fail(request: httpx.Request) -> httpx.Response:
        # No packet leaves: httpx's MockTransport answers in-process (a mock clock cannot
        # drive real sockets). The loopback tests above cover the real HTTP.
        verify(WEBHOOK_SECRET, request.content, request.headers[SIGNATURE_HEADER],
               now=ctx.clock.now())
        seen.append(trio.current_time())
        return httpx.Response(503)

    options: WebhooksOptions = ctx.config.section("webhooks")
    dispatcher = WebhookDispatcher(ctx, options, transport=httpx.MockTransport(fail),
                                   rng=random.Random(42))
    event = Event(seq=1, id="e1", type="critical", user_id=None, data={}, created_at=0.0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fail)) as http:
        assert not await dispatcher.deliver(http, "billing", options.endpoints["billing"],
                                            event)
    expected_rng = random.Random(42)
    expected = [backoff_delay(n, options, expected_rng) for n in range(1, 5)]
    gaps = [b - a for a, b in zip(seen, seen[1:], strict=False)]
    assert gaps == pytest.approx(expected)
    assert 1.0 <= gaps[0] <= 2.0  # step 2 s: half fixed, half jitter
    assert recording.rows == [(1, "retrying"), (2, "retrying"), (3, "retrying"),
                              (4, "retrying"), (5, "failed")]


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("endpoint, message", [
    ('url = "https://h.example.org/x"\nsecret = "in-the-file"', "never live in the config"),
    ('url = "http://h.example.org/x"\nsecret_env = "' + WEBHOOK_SECRET_ENV + '"', "use https"),
    ('url = "https://u:p@h.example.org/x"\nsecret_env = "' + WEBHOOK_SECRET_ENV + '"',
     "credentials"),
    ('url = "https://h.example.org/x"', "missing secret"),
    ('url = "https://h.example.org/x"\nsecret_env = "MARKCO_UNSET_SECRET_VAR"', "not set"),
])
async def test_a_bad_webhook_configuration_is_refused_naming_the_key(
        make_context: MakeContext, endpoint: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_context(f"[webhooks.endpoints.billing]\n{endpoint}\n")
