"""The events plugin's CLI commands.

    markco webhooks list --config FILE
    markco webhooks deliveries --config FILE [--webhook NAME] [--outcome failed]
                                             [--event EVENT_ID] [--limit N] [--json]

Both read the configuration and storage only, so they work with the daemon stopped.
`deliveries` shows the newest attempts last (the log is oldest first).
"""

from __future__ import annotations

import argparse
import json
import sys

import trio

from ...api.conventions import iso_time, to_json
from ...cli import add_config_argument, context_for, open_storage
from ...hookspecs import CliCommand
from ...records import WebhookDelivery
from .options import WebhooksOptions


def _list(args: argparse.Namespace) -> int:
    ctx = context_for(args.config)
    options: WebhooksOptions = ctx.config.section("webhooks")
    if not options.endpoints:
        print("no webhooks configured ([webhooks.endpoints.<name>] in the config)")
    for name, endpoint in sorted(options.endpoints.items()):
        types = ", ".join(endpoint.types) if endpoint.types else "every type"
        print(f"{name}  {endpoint.url}  ({types}; secret from {endpoint.secret.source})")
    return 0


def _deliveries(args: argparse.Namespace) -> int:
    ctx = context_for(args.config)

    async def main() -> int:
        async with open_storage(ctx.config, ctx) as storage:
            if await storage.schema_version() < 4:
                print("markco: the database has no delivery log yet; run `markco db upgrade`",
                      file=sys.stderr)
                return 1
            rows: list[WebhookDelivery] = []
            after = 0
            while True:  # the newest `limit` rows: read through, keep the tail
                page = await storage.list_webhook_deliveries(
                    after_seq=after, limit=500, webhook=args.webhook, event_id=args.event,
                    outcome=args.outcome)
                rows = (rows + page)[-args.limit:]
                if len(page) < 500:
                    break
                after = page[-1].seq
        if args.json:
            print(json.dumps([to_json(r, omit=("seq", "event_seq")) for r in rows], indent=2))
            return 0
        if not rows:
            print("no deliveries")
        for r in rows:
            answer = f"HTTP {r.status_code}" if r.status_code is not None else r.error or "-"
            print(f"{iso_time(r.created_at)}  {r.webhook:<16} {r.event_type:<24} "
                  f"#{r.attempt} {r.outcome:<9} {answer} ({r.duration_ms} ms)  {r.event_id}")
        return 0

    return trio.run(main)


def _configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="the configured webhooks")
    add_config_argument(ls)
    ls.set_defaults(_run=_list)
    log = sub.add_parser("deliveries", help="the delivery log, newest last")
    add_config_argument(log)
    log.add_argument("--webhook", help="only this webhook's deliveries")
    log.add_argument("--outcome", choices=("delivered", "retrying", "failed"))
    log.add_argument("--event", metavar="EVENT_ID", help="only this event's deliveries")
    log.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    log.add_argument("--json", action="store_true", help="machine-readable output")
    log.set_defaults(_run=_deliveries)


def _needs_action(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires one
    return 2


def events_commands() -> list[CliCommand]:
    """`markco webhooks list | deliveries`."""
    return [CliCommand("webhooks", "webhooks (webhooks list | deliveries)", _configure,
                       _needs_action)]
