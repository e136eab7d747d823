"""The compute plugin's CLI commands (registered through `markco_cli_commands`).

    markco runtimes sleep USER --config FILE
    markco runtimes wake USER --config FILE
    markco runtimes move USER --to HOST --config FILE   (see hosts_commands)
    markco snapshots list USER --config FILE [--json]
    markco snapshots create USER NAME --config FILE
    markco snapshots restore USER SNAPSHOT --config FILE
    markco snapshots delete USER SNAPSHOT --config FILE
    markco workloads purge --config FILE [--yes]

Sleep, wake, create, restore and delete are done BY THE RUNNING DAEMON (they need its user's
actor, which serialises them with everything else the user does): the command gives itself a
five-minute API token of that user (straight into storage, like `markco tokens create`), calls
the daemon's `/api/v1` on its `[server] listen` address, and revokes the token. `list` only
reads storage, so it works with the daemon stopped. USER is a username or a user id.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import trio

from ...api.conventions import iso_time
from ...cli import add_config_argument, context_for, open_storage
from ...context import PluginContext
from ...hookspecs import CliCommand
from ...records import User
from ...roles import Storage

TOKEN_SECONDS = 300.0
TIMEOUT_SECONDS = 600.0


async def _find_user(storage: Storage, key: str) -> User | None:
    return await storage.get_user(key) or await storage.get_user_by_username(key)


def _run(args: argparse.Namespace,
         action: Callable[[PluginContext, Storage, User], Awaitable[int]]) -> int:
    ctx = context_for(args.config)

    async def main() -> int:
        async with open_storage(ctx.config, ctx) as storage:
            if await storage.schema_version() == 0:
                print("markco: the database is empty; start the daemon once first",
                      file=sys.stderr)
                return 1
            user = await _find_user(storage, args.user)
            if user is None:
                print(f"markco: no user {args.user!r}", file=sys.stderr)
                return 1
            return await action(ctx, storage, user)

    return trio.run(main)


def _daemon_url(ctx: PluginContext) -> str:
    host, _, port = ctx.config.server.listen.rpartition(":")
    if host in ("0.0.0.0", "", "[::]", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


async def _call(ctx: PluginContext, storage: Storage, user: User, method: str, path: str,
                body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """Call the daemon's API as `user`, with a short-lived token made for this call."""
    from ..auth.tokens import hash_token, new_api_token

    now = ctx.clock.now()
    token = new_api_token()
    record = await storage.create_api_token(
        user_id=user.id, name="markco CLI (compute)", token_hash=hash_token(token),
        scopes=("user",), expires_at=now + TOKEN_SECONDS, now=now)
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


def _report(status: int, data: Any, done: str) -> int:
    if status >= 400:
        message = data.get("error", {}).get("message") if isinstance(data, dict) else data
        print(f"markco: {message or status}", file=sys.stderr)
        return 1
    print(done)
    return 0


def _runtimes(args: argparse.Namespace) -> int:
    if args.action == "move":
        from .hosts_commands import move_runtime

        return move_runtime(args)

    async def act(ctx: PluginContext, storage: Storage, user: User) -> int:
        path = f"/api/v1/users/{user.id}/runtimes/{args.action}"
        if args.action == "wake":
            path += "?wait=1"
        status, data = await _call(ctx, storage, user, "POST", path)
        summary = data.get("state", {}).get("summary") if isinstance(data, dict) else None
        return _report(status, data, f"{user.username}: {summary or args.action}")

    return _run(args, act)


def _snapshots(args: argparse.Namespace) -> int:
    async def act(ctx: PluginContext, storage: Storage, user: User) -> int:
        base = f"/api/v1/users/{user.id}/snapshots"
        if args.action == "list":
            items = [s for s in await storage.list_snapshots(user.id) if s.kind != "fork"]
            if args.json:
                print(json.dumps([{"id": s.id, "name": s.name, "kind": s.kind,
                                   "size_bytes": s.size_bytes,
                                   "created_at": iso_time(s.created_at)} for s in items],
                                 indent=2))
            else:
                for s in items:
                    print(f"{s.id}  {s.kind:<6} {s.name:<24} {s.size_bytes / (1 << 20):8.1f} MiB"
                          f"  {iso_time(s.created_at)}")
            return 0
        if args.action == "create":
            status, data = await _call(ctx, storage, user, "POST", base, {"name": args.name})
            return _report(status, data, f"snapshot {args.name!r} of {user.username} taken")
        if args.action == "restore":
            status, data = await _call(ctx, storage, user, "POST",
                                       f"{base}/{args.snapshot}/restore")
            return _report(status, data, f"snapshot {args.snapshot!r} restored")
        status, data = await _call(ctx, storage, user, "DELETE", f"{base}/{args.snapshot}")
        return _report(status, data, f"snapshot {args.snapshot!r} deleted")

    return _run(args, act)


def _configure_runtimes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("sleep", "wake", "move"),
                        help="sleep: checkpoint the runtime and stop it; wake: restore it; "
                             "move: to another host (--to HOST, as an administrator)")
    parser.add_argument("user", help="username or user id")
    parser.add_argument("--to", help="move: the host to move the runtime to")
    add_config_argument(parser)


def _configure_snapshots(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="a user's snapshots")
    listing.add_argument("user")
    listing.add_argument("--json", action="store_true")
    add_config_argument(listing)
    create = sub.add_parser("create", help="a named snapshot of the running runtime")
    create.add_argument("user")
    create.add_argument("name")
    add_config_argument(create)
    for name, what in (("restore", "replace the running runtime by a snapshot"),
                       ("delete", "delete a snapshot")):
        command = sub.add_parser(name, help=what)
        command.add_argument("user")
        command.add_argument("snapshot", help="its id or name")
        add_config_argument(command)


def _purge(args: argparse.Namespace) -> int:
    """`markco workloads purge`: remove, for good, every workload (container or process) and
    checkpoint archive of this deployment. Refused while a daemon holds the instance lock, and
    without `--yes` (then it lists what it would remove). Users, their files and the database
    stay; runtime records end `stopped` and snapshot records go with their archives."""
    import shutil
    from contextlib import AsyncExitStack

    from ...errors import AlreadyRunning
    from ...records import RuntimeState

    ctx = context_for(args.config)
    config = ctx.config
    compute = config.roles["compute"]
    snapshots_dir = config.data_dir / "snapshots"

    async def main() -> int:
        async with open_storage(config, ctx) as storage:
            try:
                async with storage.instance_lock():
                    return await purge(storage)
            except AlreadyRunning:
                print("markco: a daemon is running on this deployment's storage; stop it "
                      "first (systemctl stop markco), then purge", file=sys.stderr)
                return 1

    async def purge(storage: Storage) -> int:
        migrated = await storage.schema_version() > 0
        snapshots = await storage.list_snapshots() if migrated else []
        runtimes = await storage.list_runtimes(live_only=True) if migrated else []
        archives = sorted(p for p in snapshots_dir.rglob("*") if p.is_file()) \
            if snapshots_dir.is_dir() else []
        where = f"deployment {config.server.deployment_id!r}"
        async with AsyncExitStack() as stack:
            backend = None
            if compute.names:
                backend = await stack.enter_async_context(compute.make(compute.names[0], ctx))
            workloads = await backend.list() if backend is not None else []
            for info in workloads:
                role = getattr(info.role, "value", info.role)
                print(f"workload {info.name} (user {info.user_id}, {role}, {info.status})")
            for path in archives:
                print(f"archive  {path}")
            if not args.yes:
                print(f"{where}: {len(workloads)} workloads and {len(archives)} archives would "
                      f"be removed for good; run again with --yes to remove them",
                      file=sys.stderr)
                return 1
            for info in workloads:
                assert backend is not None
                await backend.remove(info.handle)
            networks = getattr(backend, "remove_unused_networks", None)
            if networks is not None:
                await networks()
        for snapshot in snapshots:
            await storage.delete_snapshot(snapshot.id)
        now = ctx.clock.now()
        for runtime in runtimes:
            await storage.update_runtime(runtime.id, now=now, state=RuntimeState.STOPPED,
                                         reason="removed by markco workloads purge")
        if snapshots_dir.is_dir():
            await trio.to_thread.run_sync(shutil.rmtree, snapshots_dir)
        print(f"{where}: removed {len(workloads)} workloads and {len(archives)} archives")
        return 0

    return trio.run(main)


def _configure_workloads(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    purge = sub.add_parser(
        "purge", help="remove every workload and checkpoint archive of this deployment for "
                      "good (the daemon stopped; users and their files stay)")
    purge.add_argument("--yes", action="store_true",
                       help="really remove them (without it: list what would go)")
    add_config_argument(purge)
    purge.set_defaults(_run=_purge)


def _needs_action(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires one
    return 2


def compute_commands() -> list[CliCommand]:
    """`runtimes`, `snapshots` and `workloads purge`."""
    return [
        CliCommand("workloads", "remove this deployment's workloads for good (workloads purge)",
                   _configure_workloads, _needs_action),
        CliCommand("runtimes", "put a user's runtime to sleep, or wake it (daemon running)",
                   _configure_runtimes, _runtimes),
        CliCommand("snapshots", "list, create, restore or delete a user's snapshots",
                   _configure_snapshots, _snapshots),
    ]
