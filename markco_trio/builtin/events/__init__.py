"""The built-in `events` plugin: the event log read out (issue 12, item 7).

- `GET /api/v1/events` (filters, cursor paging) and `GET /api/v1/events/stream` (server-sent
  events, resumable): `api`, `query`, `stream`.
- Webhooks: every configured URL gets the event types it wants, signed with HMAC-SHA256
  (`markco_trio.webhooks`, which receivers use to verify), retried with backoff, each attempt
  in the delivery log: `delivery`, `options`; read back through `GET /api/v1/webhooks/...` and
  `markco webhooks deliveries`.

Events reach both through the bus (`markco_trio.events`): persisted first, then fanned out to
bounded channels, so neither a slow stream nor a dead webhook ever holds up the producer.
"""

from .delivery import WebhookDispatcher, backoff_delay
from .options import EventsOptions, WebhookEndpoint, WebhooksOptions
from .plugin import (
    markco_cli_commands,
    markco_config_sections,
    markco_services,
    markco_web_routes,
)
from .query import BadQuery, EventQuery, event_json

__all__ = [
    "BadQuery",
    "EventQuery",
    "EventsOptions",
    "WebhookDispatcher",
    "WebhookEndpoint",
    "WebhooksOptions",
    "backoff_delay",
    "event_json",
    "markco_cli_commands",
    "markco_config_sections",
    "markco_services",
    "markco_web_routes",
]
