"""The `[events]` and `[webhooks]` sections of the built-in `events` plugin.

    [events]
    stream_heartbeat = 15.0     # seconds between SSE comments that keep idle streams open
    stream_buffer = 64          # live events queued per stream before it refills from the log
    max_streams_per_user = 5    # concurrent GET /api/v1/events/stream per user (429 beyond)

    [webhooks]
    queue = 1000                # events waiting per webhook; beyond that they are dropped
    workers = 4                 # concurrent deliveries per webhook
    max_attempts = 8            # first try included; then the attempt is logged `failed`
    backoff_initial = 2.0       # seconds before the 2nd attempt; doubles up to backoff_max,
    backoff_max = 600.0         #   each wait jittered (half fixed, half random)
    timeout = 10.0              # seconds per attempt
    log_days = 30.0             # the delivery log keeps this many days

    [webhooks.endpoints.billing]
    url = "https://billing.example.org/hooks/markco"
    types = ["user.plan_changed", "critical"]      # omitted or []: every type
    secret_env = "MARKCO_WEBHOOK_BILLING_SECRET"   # or secret_file; never the secret itself
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ...config import is_loopback_host
from ...options import Secret

TYPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
ENDPOINT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class EventsOptions:
    """`[events]`: the live stream's limits."""

    stream_heartbeat: float = 15.0
    stream_buffer: int = 64
    max_streams_per_user: int = 5

    def __post_init__(self) -> None:
        if not 0.05 <= self.stream_heartbeat <= 300:
            raise ValueError("stream_heartbeat must be 0.05 to 300 seconds")
        if not 1 <= self.stream_buffer <= 10_000:
            raise ValueError("stream_buffer must be 1 to 10000")
        if not 1 <= self.max_streams_per_user <= 1000:
            raise ValueError("max_streams_per_user must be 1 to 1000")


@dataclass(frozen=True)
class WebhookEndpoint:
    """One receiver: where to POST, which event types it wants, the secret it shares."""

    url: str
    secret: Secret
    types: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"url must be an https:// URL, not {self.url!r}")
        # Deliveries carry users' events: in clear text only to this machine.
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError(f"url {self.url!r}: use https (http only for a loopback address)")
        if parts.username or parts.password:
            raise ValueError("url must not carry credentials; the signature authenticates")
        for name in self.types:
            if not TYPE_NAME.match(name):
                raise ValueError(f"types: {name!r} is not an event type name")


@dataclass(frozen=True)
class WebhooksOptions:
    """`[webhooks]`: where events are POSTed, and how hard markco tries."""

    endpoints: dict[str, WebhookEndpoint] = field(default_factory=dict)
    queue: int = 1000
    workers: int = 4
    max_attempts: int = 8
    backoff_initial: float = 2.0
    backoff_max: float = 600.0
    timeout: float = 10.0
    log_days: float = 30.0

    def __post_init__(self) -> None:
        for name in self.endpoints:
            if not ENDPOINT_NAME.match(name):
                raise ValueError(f"endpoints.{name}: a webhook name is letters, digits, - and _")
        if not 1 <= self.queue <= 1_000_000:
            raise ValueError("queue must be 1 to 1000000")
        if not 1 <= self.workers <= 64:
            raise ValueError("workers must be 1 to 64")
        if not 1 <= self.max_attempts <= 50:
            raise ValueError("max_attempts must be 1 to 50")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("backoff_initial must be positive and at most backoff_max")
        if not 0 < self.timeout <= 300:
            raise ValueError("timeout must be more than 0 and at most 300 seconds")
        if self.log_days <= 0:
            raise ValueError("log_days must be positive")
