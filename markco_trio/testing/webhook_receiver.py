"""A webhook receiver for tests: real HTTP on 127.0.0.1, verifying markco's signatures.

It does what a careful receiver does with `markco_trio.webhooks.verify`: refuses (400) a
delivery whose signature is missing, wrong (altered body or timestamp, other secret), out of
the tolerance, or already seen (a replay); otherwise it accepts with the next scripted status
(204 once the script is used up). Every request is kept in `requests`, accepted ones in
`accepted`, so a test sees retries and what was refused and why.

    async with running_webhook_receiver(secret="s3cret", script=[503, 503]) as receiver:
        ...configure a webhook with url = receiver.url...
        await receiver.wait_accepted(1)
        assert [r.status for r in receiver.requests] == [503, 503, 204]

`script` entries are HTTP statuses, or "hang" (never answer: a receiver that is down but
keeps the connection open).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

from ..webhooks import SIGNATURE_HEADER, ReplayGuard, WebhookVerificationError, verify

Scripted = int | Literal["hang"]


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the receiver saw it, and what it answered (`refused`: why, if so)."""

    headers: dict[str, str]
    body: bytes
    status: int
    refused: str | None
    at: float

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """See the module docstring."""

    secret: str
    script: list[Scripted] = field(default_factory=list)
    tolerance: float = 300.0
    now: Callable[[], float] = time.time
    requests: list[ReceivedRequest] = field(default_factory=list)
    url: str = ""
    _guard: ReplayGuard = field(default_factory=ReplayGuard)
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def accepted(self) -> list[ReceivedRequest]:
        """The requests answered with a 2xx."""
        return [r for r in self.requests if 200 <= r.status < 300]

    async def wait_for(self, check: Callable[[WebhookReceiver], bool], *,
                       within: float = 10.0) -> None:
        """Wait until `check(self)` holds (re-checked after every request); `trio.TooSlowError`
        after `within` seconds, so a test fails instead of hanging."""
        with trio.fail_after(within):
            while not check(self):
                await self._changed.wait()

    async def wait_accepted(self, count: int, *, within: float = 10.0) -> None:
        """Wait until `count` deliveries were accepted."""
        await self.wait_for(lambda r: len(r.accepted) >= count, within=within)

    def _record(self, body: bytes, status: int, refused: str | None) -> None:
        self.requests.append(ReceivedRequest(dict(request.headers), body, status, refused,
                                             self.now()))
        self._changed.set()
        self._changed = trio.Event()

    def app(self) -> QuartTrio:
        """The receiving app: `POST /` (any path)."""
        app = QuartTrio("webhook_receiver")

        @app.post("/", defaults={"path": ""})
        @app.post("/<path:path>")
        async def receive(path: str) -> Response:
            body = await request.get_data(as_text=False)
            assert isinstance(body, bytes)
            try:
                verify(self.secret, body, request.headers.get(SIGNATURE_HEADER),
                       tolerance=self.tolerance, now=self.now(), replay_guard=self._guard)
            except WebhookVerificationError as exc:
                self._record(body, 400, str(exc))
                return Response(str(exc), status=400)
            step: Scripted = self.script.pop(0) if self.script else 204
            if step == "hang":
                self._record(body, 0, None)
                await trio.sleep_forever()
            assert isinstance(step, int)
            self._record(body, step, None)
            return Response("", status=step)

        return app


@asynccontextmanager
async def running_webhook_receiver(secret: str, *, script: Sequence[Scripted] = (),
                                   tolerance: float = 300.0,
                                   now: Callable[[], float] = time.time,
                                   ) -> AsyncIterator[WebhookReceiver]:
    """A `WebhookReceiver` serving on 127.0.0.1 (a free port) for the duration of the block."""
    receiver = WebhookReceiver(secret=secret, script=list(script), tolerance=tolerance, now=now)
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.2
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, receiver.app(), config)
        receiver.url = f"{binds[0]}/hooks/markco"
        try:
            yield receiver
        finally:
            nursery.cancel_scope.cancel()
