"""The auth plugin's CLI commands (registered through `markco_cli_commands`).

    markco login-link USER --config FILE [--minutes N]
    markco tokens create USER --scope user [--scope admin ...] --name NAME [--expires-days N]
    markco tokens list USER --config FILE [--json]
    markco tokens revoke TOKEN_ID --config FILE
    markco sessions list USER --config FILE
    markco sessions revoke-all USER --config FILE
    markco admins add USER --config FILE
    markco admins remove USER --config FILE

They open the storage directly, possibly while the daemon runs: each change is one storage
transaction, and every revocation bumps the revocation epoch, which the daemon polls — so a
revocation made here ends the daemon's cached sessions within `revocation_poll_seconds`.
Events are recorded in the event log like the daemon's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ...api.conventions import iso_time
from ...cli import add_config_argument, context_for, open_storage
from ...context import PluginContext
from ...errors import MarkcoError
from ...events import EventBus
from ...hookspecs import CliCommand
from ...records import User
from ...roles import Storage
from .api_tokens import create_api_token
from .login_links import announce, ensure_user, issue_login_link
from .options import AuthOptions

Action = Callable[[argparse.Namespace, PluginContext, Storage, EventBus], Awaitable[int]]


def _with_storage(action: Action) -> Callable[[argparse.Namespace], int]:
    """Run `action` with the configured storage open (in a fresh trio run)."""

    def run(args: argparse.Namespace) -> int:
        ctx = context_for(args.config)

        async def main() -> int:
            async with open_storage(ctx.config, ctx) as storage:
                if await storage.schema_version() == 0:
                    print("markco: the database is empty; start the daemon once or run "
                          "`markco db upgrade` first", file=sys.stderr)
                    return 1
                return await action(args, ctx, storage, EventBus(storage, ctx.clock))

        return trio.run(main)

    return run


async def _user(storage: Storage, username: str) -> User:
    user = await storage.get_user_by_username(username)
    if user is None:
        raise MarkcoError(f"no user named {username!r} (see `markco users list`)")
    return user


# ---------------------------------------------------------------------------- login-link


async def _login_link(args: argparse.Namespace, ctx: PluginContext, storage: Storage,
                      events: EventBus) -> int:
    options: AuthOptions = ctx.config.section("auth")
    if args.user == options.login_link_user:
        user, _ = await ensure_user(storage, ctx.clock, args.user, admin=True)
    else:
        user = await _user(storage, args.user)
    minutes = args.minutes if args.minutes is not None else options.login_link_minutes
    if not 0 < minutes <= 24 * 60:
        raise MarkcoError("--minutes: more than 0 and at most 1440")
    url = await issue_login_link(storage, ctx.clock, user,
                                 public_url=ctx.config.server.public_url, minutes=minutes)
    await events.publish("auth.login_link.created", user_id=user.id, data={"by": "cli"})
    announce(url, user.username, minutes)
    return 0


# ---------------------------------------------------------------------------- tokens


async def _tokens_create(args: argparse.Namespace, ctx: PluginContext, storage: Storage,
                         events: EventBus) -> int:
    user = await _user(storage, args.user)
    token, record = await create_api_token(storage, ctx.clock, user, name=args.name,
                                           scopes=args.scope or ["user"],
                                           expires_days=args.expires_days)
    await events.publish("token.created", user_id=user.id,
                         data={"token_id": record.id, "name": record.name,
                               "scopes": list(record.scopes), "via": "cli"})
    # The token alone on stdout (for scripts); what it is on stderr.
    print(f"created API token {record.id} ({record.name}) for {user.username}, scopes "
          f"{' '.join(record.scopes)}, expires {iso_time(record.expires_at) or 'never'}. "
          f"It is shown only now:", file=sys.stderr)
    print(token, flush=True)
    return 0


async def _tokens_list(args: argparse.Namespace, ctx: PluginContext, storage: Storage,
                       events: EventBus) -> int:
    user = await _user(storage, args.user)
    tokens = await storage.list_api_tokens(user.id)
    now = ctx.clock.now()
    rows: list[dict[str, Any]] = [{"id": t.id, "name": t.name, "scopes": list(t.scopes),
             "created_at": iso_time(t.created_at), "expires_at": iso_time(t.expires_at),
             "state": "revoked" if t.revoked_at is not None else
             "expired" if t.expires_at is not None and t.expires_at <= now else "live"}
            for t in tokens]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"{user.username} has no API tokens")
    for row in rows if not args.json else []:
        print(f"{row['id']}  {row['state']:<8} {' '.join(row['scopes']):<24} {row['name']}")
    return 0


async def _tokens_revoke(args: argparse.Namespace, ctx: PluginContext, storage: Storage,
                         events: EventBus) -> int:
    if not await storage.revoke_api_token(args.token_id, now=ctx.clock.now()):
        raise MarkcoError(f"no live API token with id {args.token_id!r}")
    await events.publish("token.revoked", user_id=None,
                         data={"token_id": args.token_id, "via": "cli"})
    print(f"revoked API token {args.token_id}")
    return 0


# ---------------------------------------------------------------------------- sessions


async def _sessions_list(args: argparse.Namespace, ctx: PluginContext, storage: Storage,
                         events: EventBus) -> int:
    user = await _user(storage, args.user)
    sessions = await storage.list_sessions(user.id, now=ctx.clock.now())
    if not sessions:
        print(f"{user.username} has no live sessions")
    for s in sessions:
        print(f"{s.id}  since {iso_time(s.created_at)}  expires {iso_time(s.expires_at)}  "
              f"{s.user_agent or '-'}")
    return 0


async def _sessions_revoke_all(args: argparse.Namespace, ctx: PluginContext,
                               storage: Storage, events: EventBus) -> int:
    user = await _user(storage, args.user)
    count = await storage.revoke_user_sessions(user.id, now=ctx.clock.now())
    await events.publish("auth.session_revoked", user_id=user.id,
                         data={"count": count, "by": "cli", "reason": "revoke-all"})
    print(f"revoked {count} session(s) of {user.username}")
    return 0


# ---------------------------------------------------------------------------- admins


async def _admins_add(args: argparse.Namespace, ctx: PluginContext, storage: Storage,
                      events: EventBus) -> int:
    user = await _user(storage, args.user)
    if not user.is_admin:
        await storage.update_user(user.id, is_admin=True)
        await events.publish("user.admin_granted", user_id=user.id, data={"by": "cli"})
    print(f"{user.username} is an administrator (effective at their next login, or within "
          f"[auth] cache_ttl_seconds for live sessions)")
    return 0


async def _admins_remove(args: argparse.Namespace, ctx: PluginContext, storage: Storage,
                         events: EventBus) -> int:
    user = await _user(storage, args.user)
    now = ctx.clock.now()
    if user.is_admin:
        await storage.update_user(user.id, is_admin=False)
    # Demotion must not wait for caches: end the sessions and admin-scoped tokens, whose
    # revocation also moves the revocation epoch the daemon polls.
    sessions = await storage.revoke_user_sessions(user.id, now=now)
    tokens = 0
    for token in await storage.list_api_tokens(user.id):
        if "admin" in token.scopes and await storage.revoke_api_token(token.id, now=now):
            tokens += 1
    await events.publish("user.admin_revoked", user_id=user.id,
                         data={"by": "cli", "sessions": sessions, "tokens": tokens})
    print(f"{user.username} is not an administrator; ended {sessions} session(s) and "
          f"revoked {tokens} admin token(s)")
    return 0


# ---------------------------------------------------------------------------- parsers


def _sub(parent: argparse.ArgumentParser, dest: str) -> Any:
    return parent.add_subparsers(dest=dest, required=True, metavar="ACTION")


def _configure_login_link(p: argparse.ArgumentParser) -> None:
    p.add_argument("user", help="the username to log in as")
    p.add_argument("--minutes", type=float, default=None,
                   help="how long the link stays valid (default: [auth] login_link_minutes)")
    add_config_argument(p)


def _configure_tokens(p: argparse.ArgumentParser) -> None:
    sub = _sub(p, "tokens_command")
    create = sub.add_parser("create", help="create an API token (printed once)")
    create.add_argument("user")
    create.add_argument("--scope", action="append", metavar="SCOPE",
                        help="user, admin or events:read; repeat for several (default: user)")
    create.add_argument("--name", required=True, help="what the token is for")
    create.add_argument("--expires-days", type=float, default=None, metavar="N")
    add_config_argument(create)
    create.set_defaults(_run=_with_storage(_tokens_create))
    ls = sub.add_parser("list", help="list a user's API tokens")
    ls.add_argument("user")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    add_config_argument(ls)
    ls.set_defaults(_run=_with_storage(_tokens_list))
    revoke = sub.add_parser("revoke", help="revoke an API token by id")
    revoke.add_argument("token_id")
    add_config_argument(revoke)
    revoke.set_defaults(_run=_with_storage(_tokens_revoke))


def _configure_sessions(p: argparse.ArgumentParser) -> None:
    sub = _sub(p, "sessions_command")
    ls = sub.add_parser("list", help="list a user's live sessions")
    ls.add_argument("user")
    add_config_argument(ls)
    ls.set_defaults(_run=_with_storage(_sessions_list))
    revoke = sub.add_parser("revoke-all", help="end every session of a user")
    revoke.add_argument("user")
    add_config_argument(revoke)
    revoke.set_defaults(_run=_with_storage(_sessions_revoke_all))


def _configure_admins(p: argparse.ArgumentParser) -> None:
    sub = _sub(p, "admins_command")
    add = sub.add_parser("add", help="make a user an administrator")
    add.add_argument("user")
    add_config_argument(add)
    add.set_defaults(_run=_with_storage(_admins_add))
    remove = sub.add_parser("remove", help="demote an administrator (ends their sessions)")
    remove.add_argument("user")
    add_config_argument(remove)
    remove.set_defaults(_run=_with_storage(_admins_remove))


def _needs_action(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires one
    return 2


def auth_commands() -> list[CliCommand]:
    """The commands of the auth plugin."""
    return [
        CliCommand("login-link", "print a one-time login link for a user",
                   _configure_login_link, _with_storage(_login_link)),
        CliCommand("tokens", "API tokens (tokens create | list | revoke)", _configure_tokens,
                   _needs_action),
        CliCommand("sessions", "browser sessions (sessions list | revoke-all)",
                   _configure_sessions, _needs_action),
        CliCommand("admins", "administrators (admins add | remove)", _configure_admins,
                   _needs_action),
    ]
