"""The hosts' CLI commands: done BY THE RUNNING DAEMON through its admin API.

    markco runtimes move USER --to HOST --config FILE
    markco hosts list --config FILE [--json]
    markco hosts drain HOST --config FILE
    markco hosts moves --config FILE [--json]

The command acts as the deployment's first administrator: it gives itself a five-minute
`admin` API token of theirs (straight into storage: whoever runs it can read the database
anyway), calls `/api/v1` on the daemon's `[server] listen` address and revokes the token.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx
import trio

from ...cli import add_config_argument, context_for, open_storage
from ...context import PluginContext
from ...hookspecs import CliCommand
from ...roles import Storage
from .commands import TIMEOUT_SECONDS, TOKEN_SECONDS, _daemon_url, _find_user


async def _admin_call(ctx: PluginContext, storage: Storage, method: str, path: str,
                      body: dict[str, Any] | None = None) -> tuple[int, Any]:
    from ..auth.tokens import hash_token, new_api_token

    admin = None
    cursor = None
    while admin is None:
        page = await storage.list_users(cursor=cursor, limit=200)
        admin = next((u for u in page.items if u.is_admin and not u.disabled), None)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    if admin is None:
        raise SystemExit("markco: this deployment has no administrator to act as: make one "
                         "first (markco admins add USER)")
    now = ctx.clock.now()
    token = new_api_token()
    record = await storage.create_api_token(
        user_id=admin.id, name="markco CLI (hosts)", token_hash=hash_token(token),
        scopes=("user", "admin"), expires_at=now + TOKEN_SECONDS, now=now)
    try:
        async with httpx.AsyncClient(base_url=_daemon_url(ctx), trust_env=False,
                                     timeout=TIMEOUT_SECONDS) as http:
            response = await http.request(method, path, json=body,
                                          headers={"Authorization": f"Bearer {token}"})
    except httpx.TransportError as exc:
        raise SystemExit(f"markco: the daemon does not answer at {_daemon_url(ctx)} ({exc}); "
                         "is it running?") from None
    finally:
        await storage.revoke_api_token(record.id, now=ctx.clock.now())
    try:
        data = response.json() if response.content else None
    except ValueError:
        data = response.text
    return response.status_code, data


def _failed(status: int, data: Any) -> bool:
    if status < 400:
        return False
    message = data.get("error", {}).get("message") if isinstance(data, dict) else data
    print(f"markco: {message or status}", file=sys.stderr)
    return True


def move_runtime(args: argparse.Namespace) -> int:
    """`markco runtimes move USER --to HOST`."""
    if not args.to:
        print("markco: runtimes move needs --to HOST (markco hosts list names them)",
              file=sys.stderr)
        return 2
    ctx = context_for(args.config)

    async def main() -> int:
        async with open_storage(ctx.config, ctx) as storage:
            user = await _find_user(storage, args.user)
            if user is None:
                print(f"markco: no user {args.user!r}", file=sys.stderr)
                return 1
            status, data = await _admin_call(ctx, storage, "POST",
                                             f"/api/v1/users/{user.id}/runtimes/move",
                                             {"to": args.to})
        if _failed(status, data):
            return 1
        move = data.get("move", {})
        print(f"{user.username}: moved to {args.to} in {move.get('total_ms', '?')} ms "
              f"({move.get('bytes', 0) / (1 << 20):.1f} MiB)")
        return 0

    return trio.run(main)


def _hosts(args: argparse.Namespace) -> int:
    ctx = context_for(args.config)

    async def main() -> int:
        async with open_storage(ctx.config, ctx) as storage:
            if args.action == "drain":
                status, data = await _admin_call(ctx, storage, "POST",
                                                 f"/api/v1/hosts/{args.host}/drain")
            else:
                path = "/api/v1/hosts" if args.action == "list" else "/api/v1/migrations"
                status, data = await _admin_call(ctx, storage, "GET", path)
        if _failed(status, data):
            return 1
        if getattr(args, "json", False):
            print(json.dumps(data, indent=2))
        elif args.action == "drain":
            for user_id, outcome in sorted(data["users"].items()):
                print(f"{user_id}  {outcome}")
            moved = sum(o.startswith("moved") for o in data["users"].values())
            print(f"{args.host}: draining; {moved} of {len(data['users'])} runtimes moved off")
            if moved < len(data["users"]):
                return 1
        elif args.action == "list":
            for host in data["items"]:
                why = f" ({host['reason']})" if host.get("reason") else ""
                print(f"{host['name']:<16} {host['state']}{why}  labels="
                      f"{','.join(host['labels']) or '-'}  reserved {host['reserved_mb']} of "
                      f"{host['memory_budget_mb'] or 'unlimited'} MiB  "
                      f"{len(host['users'])} users")
        else:
            for m in data["items"]:
                print(f"{m['started_at']}  {m['user_id']}  {m['from_host']} -> {m['to_host']}"
                      f"  {m['status']}  checkpoint {m['checkpoint_ms']} ms, transfer "
                      f"{m['transfer_ms']} ms, restore {m['restore_ms']} ms, switch "
                      f"{m['switch_ms']} ms, {(m['bytes'] or 0) / (1 << 20):.1f} MiB"
                      + (f"  {m['error']}" if m.get("error") else ""))
        return 0

    return trio.run(main)


def _configure_hosts(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="the hosts: state, labels, reserved memory, users")
    listing.add_argument("--json", action="store_true")
    add_config_argument(listing)
    drain = sub.add_parser("drain", help="move every runtime off HOST (sleeping ones too); "
                                         "nothing new is placed there")
    drain.add_argument("host")
    add_config_argument(drain)
    moves = sub.add_parser("moves", help="every move between hosts, with its measurements")
    moves.add_argument("--json", action="store_true")
    add_config_argument(moves)


def hosts_commands() -> list[CliCommand]:
    """`hosts list|drain|moves`."""
    return [CliCommand("hosts", "the container hosts: list them, drain one, list the moves "
                                "(daemon running)", _configure_hosts, _hosts)]
