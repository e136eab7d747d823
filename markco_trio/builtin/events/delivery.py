"""Webhook deliveries: every configured webhook gets the events it wants, signed, retried.

One `WebhookDispatcher` runs as a supervised service in the daemon's nursery. For each webhook
it subscribes to the bus with a bounded channel of its own (`[webhooks] queue`) and runs
`workers` delivery tasks reading from it, so a webhook that is down or slow fills only its own
queue: the bus drops (and counts) what does not fit, and neither the producer (the monitor,
the API) nor the other webhooks ever wait for it.

An attempt POSTs the event's JSON (`markco_trio.builtin.events.query.event_json`) with its
`attempt` number, signed as `markco_trio.webhooks` describes (signed afresh at each
attempt). A 2xx is a delivery. A connection error, a timeout, a 5xx, a 408 or a 429 is
retried after an exponential backoff with jitter (half of the wait fixed, half random, so
many failing deliveries do not retry in lockstep); any other answer (a 4xx: the receiver
refused it; a 3xx: redirects are not followed) ends the delivery at once. Each attempt is a
row of the delivery log in storage (`outcome` delivered / retrying / failed), pruned
after `log_days`.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from ... import __version__
from ...context import PluginContext
from ...errors import StorageError
from ...records import Event
from ...webhooks import DELIVERY_HEADER, EVENT_HEADER, EVENT_ID_HEADER, SIGNATURE_HEADER, sign
from .options import WebhookEndpoint, WebhooksOptions
from .query import event_json

log = logging.getLogger("markco.webhooks")

RETRIED_STATUSES = frozenset({408, 429})
PRUNE_INTERVAL = 3600.0


def backoff_delay(attempt: int, options: WebhooksOptions, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): the exponential step
    `backoff_initial * 2**(attempt-1)` capped at `backoff_max`, half of it fixed and half
    uniformly random."""
    step = min(options.backoff_initial * 2.0 ** (attempt - 1), options.backoff_max)
    return step / 2 + rng.uniform(0, step / 2)


@dataclass
class WebhookStatistics:
    """Counts of one webhook since the daemon started."""

    delivered: int = 0
    failed: int = 0
    retried: int = 0


class WebhookDispatcher:
    """Delivers events to the configured webhooks; see the module docstring."""

    def __init__(self, ctx: PluginContext, options: WebhooksOptions, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self.options = options
        self._transport = transport
        self._rng = rng or random.Random()
        self._stats = {name: WebhookStatistics() for name in options.endpoints}

    def statistics(self) -> dict[str, dict[str, Any]]:
        """Per webhook: delivered, failed and retried attempts, and the bus's counts of its
        queue (`queued`: handed over, `dropped`: lost because the queue was full)."""
        bus = self.ctx.events
        subscribers = bus.statistics().subscribers if bus is not None else {}
        out: dict[str, dict[str, Any]] = {}
        for name, stats in self._stats.items():
            queued, dropped = subscribers.get(webhook_subscriber(name), (0, 0))
            out[name] = {"delivered": stats.delivered, "failed": stats.failed,
                         "retried": stats.retried, "queued": queued, "dropped": dropped}
        return out

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Subscribe every webhook, run its workers and the log's pruning, until cancelled."""
        bus = self.ctx.events
        if bus is None or not self.options.endpoints:
            task_status.started()
            await trio.sleep_forever()
        assert bus is not None
        async with httpx.AsyncClient(transport=self._transport, trust_env=False,
                                     follow_redirects=False,
                                     timeout=self.options.timeout) as http, \
                trio.open_nursery() as nursery:
            for name, endpoint in self.options.endpoints.items():
                types = frozenset(endpoint.types) if endpoint.types else None
                receive = bus.subscribe(webhook_subscriber(name), types=types,
                                        buffer=self.options.queue)
                for _ in range(self.options.workers):
                    nursery.start_soon(self._worker, http, name, endpoint, receive.clone())
                receive.close()
            nursery.start_soon(self._prune)
            task_status.started()

    async def _worker(self, http: httpx.AsyncClient, name: str, endpoint: WebhookEndpoint,
                      receive: trio.MemoryReceiveChannel[Event]) -> None:
        with receive:
            async for event in receive:
                try:
                    await self.deliver(http, name, endpoint, event)
                except Exception:
                    # One bad delivery (a bug, a storage outage) must not end the worker.
                    log.exception("webhook %s: delivering event %s failed", name, event.id)

    async def deliver(self, http: httpx.AsyncClient, name: str, endpoint: WebhookEndpoint,
                      event: Event) -> bool:
        """Every attempt for one event, with backoff between them; True once delivered."""
        stats = self._stats.setdefault(name, WebhookStatistics())
        for attempt in range(1, self.options.max_attempts + 1):
            # `attempt` in the body makes every attempt's signature unique, so a receiver's
            # replay guard tells a retry (new) from a replay (the same bytes again).
            body = json.dumps({**event_json(event), "attempt": attempt},
                              separators=(",", ":")).encode()
            status, error, elapsed = await self._attempt(http, endpoint, event, body, attempt)
            ok = status is not None and 200 <= status < 300
            retry = not ok and attempt < self.options.max_attempts and (
                status is None or status >= 500 or status in RETRIED_STATUSES)
            outcome = "delivered" if ok else "retrying" if retry else "failed"
            if ok:
                stats.delivered += 1
            elif retry:
                stats.retried += 1
            else:
                stats.failed += 1
                log.warning("webhook %s: gave up on event %s (%s) after %d attempt(s): %s",
                            name, event.id, event.type, attempt,
                            error or f"HTTP {status}")
            await self._record(name, endpoint, event, attempt, outcome, status, error, elapsed)
            if not retry:
                return ok
            await trio.sleep(backoff_delay(attempt, self.options, self._rng))
        return False

    async def _attempt(self, http: httpx.AsyncClient, endpoint: WebhookEndpoint, event: Event,
                       body: bytes, attempt: int) -> tuple[int | None, str | None, int]:
        timestamp = int(self.ctx.clock.now())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"markco-webhooks/{__version__}",
            SIGNATURE_HEADER: sign(endpoint.secret.reveal(), body, timestamp),
            EVENT_HEADER: event.type,
            EVENT_ID_HEADER: event.id,
            DELIVERY_HEADER: f"{event.id}-{attempt}",
        }
        started = trio.current_time()
        status: int | None = None
        error: str | None = None
        try:
            # The answer's body is never read: a receiver cannot make markco buffer it.
            async with http.stream("POST", endpoint.url, content=body,
                                   headers=headers) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        elapsed = int((trio.current_time() - started) * 1000)
        return status, error, elapsed

    async def _record(self, name: str, endpoint: WebhookEndpoint, event: Event, attempt: int,
                      outcome: str, status: int | None, error: str | None,
                      elapsed: int) -> None:
        try:
            await self.ctx.require_storage().append_webhook_delivery(
                webhook=name, url=endpoint.url, event=event, attempt=attempt, outcome=outcome,
                status_code=status, error=error, duration_ms=elapsed, now=self.ctx.clock.now())
        except StorageError as exc:
            # The delivery happened (or not) all the same; the log line keeps the record.
            log.error("webhook %s: could not log attempt %d of event %s (%s): %s", name,
                      attempt, event.id, outcome, exc)

    async def _prune(self) -> None:
        while True:
            before = self.ctx.clock.now() - self.options.log_days * 86400
            try:
                removed = await self.ctx.require_storage().purge_webhook_deliveries(
                    before=before)
                if removed:
                    log.info("webhooks: pruned %d delivery log rows older than %g days",
                             removed, self.options.log_days)
            except StorageError as exc:
                log.warning("webhooks: pruning the delivery log failed: %s", exc)
            await trio.sleep(PRUNE_INTERVAL)


def webhook_subscriber(name: str) -> str:
    """The bus subscriber name of webhook `name` (its counts in `EventBus.statistics`)."""
    return f"webhook:{name}"
