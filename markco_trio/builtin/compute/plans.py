"""Changing a user's plan (issue 12, item 6): the API, the admin page's form, the CLI.

A plan names the limits of a user's runtime (`[workloads.plans.<name>]`, see `options`). Only
an administrator changes one — through `PUT /api/v1/users/<id>/plan` (an `admin`-scoped token
or an admin's session), the form on `/admin`, or `markco plans set USER PLAN` on the server. A
user cannot change their own (`user.manage` would allow that, so the check is `admin`).

A change is persisted, then published as `user.plan_changed` with `{old, new, by}`, then
applied to the user's running runtime (`ComputeService.apply_plan`: `backend.update_limits`
and a `runtime.limits_changed` event). The compute plugin's observer applies it too, for
changes made elsewhere; applying twice is a no-op. The CLI runs in a process of its own: it
persists and logs the event, and the daemon applies the new limits within
`plan_check_interval` (its actors compare plans and limits periodically).

    markco plans list --config FILE
    markco plans set USER PLAN --config FILE     (USER: a username or a user id)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio
from quart import Blueprint, Response, request

from ...api.conventions import ApiError
from ...api.principal import current_principal
from ...authz import Action, Principal, Resource
from ...cli import add_config_argument, context_for
from ...context import PluginContext
from ...errors import NotFound
from ...events import EventBus
from ...hookspecs import CliCommand
from ...records import User
from ...roles import Storage
from .commands import _run as run_with_user
from .options import PlanLimits, WorkloadsOptions
from .service import ComputeService

PLAN_CHANGED = "user.plan_changed"


class UnknownPlan(ValueError):
    """A plan name that is not configured; the message names the known ones."""

    def __init__(self, plan: object, known: Mapping[str, PlanLimits]) -> None:
        super().__init__(f"unknown plan {plan!r}: the plans are "
                         f"{', '.join(sorted(known))} ([workloads.plans] in the config)")
        self.known = sorted(known)


@dataclass(frozen=True)
class PlanChange:
    """What `change_plan` did: `changed` is False when the user already had `new`."""

    user_id: str
    old: str
    new: str
    changed: bool


async def change_plan(storage: Storage, events: EventBus | None,
                      plans: Mapping[str, PlanLimits], user_id: str, plan: object, *,
                      by: str) -> PlanChange:
    """Give user `user_id` plan `plan`: persist, then publish `user.plan_changed`
    (`{old, new, by}`). `UnknownPlan` for a plan not in `plans`, `NotFound` for no user."""
    if not isinstance(plan, str) or plan not in plans:
        raise UnknownPlan(plan, plans)
    user = await storage.get_user(user_id)
    if user is None:
        raise NotFound(f"no user {user_id!r}")
    if user.plan == plan:
        return PlanChange(user.id, user.plan, plan, changed=False)
    await storage.update_user(user.id, plan=plan)
    if events is not None:
        with trio.CancelScope(shield=True):  # persisted: the event must follow
            await events.publish(PLAN_CHANGED, user_id=user.id,
                                 data={"old": user.plan, "new": plan, "by": by})
    return PlanChange(user.id, user.plan, plan, changed=True)


def plans_json(options: WorkloadsOptions) -> list[dict[str, Any]]:
    """The configured plans and their limits, by name."""
    return [{"name": name, "memory_mib": limits.memory_mib, "cpus": limits.cpus,
             "default": name == options.default_plan}
            for name, limits in sorted(options.all_plans.items())]


def plans_blueprint(service: ComputeService) -> Blueprint:
    """`GET /api/v1/plans`, `PUT /api/v1/users/<id>/plan`, `POST /admin/users/<id>/plan`."""
    bp = Blueprint("plans", __name__)
    ctx = service.ctx

    def admin(who: Principal | None) -> Principal:
        if who is None:
            raise ApiError(401, "unauthenticated", "log in, or send an API token")
        if not ctx.authorize(who, Action.ADMIN, Resource("deployment")):
            raise ApiError(403, "forbidden", "only an administrator (with the admin scope) "
                           "may change a plan")
        return who

    async def apply(user_id: str, plan: object, who: Principal) -> tuple[PlanChange, bool]:
        change = await change_plan(ctx.require_storage(), ctx.events,
                                   service.options.all_plans, user_id, plan,
                                   by=who.username)
        applied = False
        if ctx.backend is not None:
            # At once, so the answer says whether the running runtime has its new limits.
            applied = await service.apply_plan(change.user_id)
        return change, applied

    @bp.get("/api/v1/plans")
    async def list_plans() -> dict[str, Any]:
        """The plans a user can be given, with their limits."""
        if current_principal() is None:
            raise ApiError(401, "unauthenticated", "log in, or send an API token")
        return {"items": plans_json(service.options), "next_cursor": None}

    @bp.put("/api/v1/users/<user_id>/plan")
    async def put_plan(user_id: str) -> dict[str, Any]:
        """`{"plan": "pro"}`: the user's new plan, applied to their running runtime."""
        who = admin(current_principal())
        body = await request.get_json(silent=True)
        if not isinstance(body, dict) or "plan" not in body:
            raise ApiError(400, "bad_plan", "send {\"plan\": \"<name>\"}; the plans are "
                           f"{', '.join(sorted(service.options.all_plans))}")
        try:
            change, applied = await apply(user_id, body["plan"], who)
        except UnknownPlan as exc:
            raise ApiError(400, "unknown_plan", str(exc)) from None
        except NotFound:
            raise ApiError(404, "user_not_found", f"no user {user_id!r}") from None
        return {"user_id": change.user_id, "old": change.old, "new": change.new,
                "changed": change.changed, "applied": applied}

    @bp.post("/admin/users/<user_id>/plan")
    async def admin_form(user_id: str) -> Response:
        """The admin page's form (a session and its form token, checked for every form)."""
        from ..auth.pages import message_page

        who = current_principal()
        if who is None or not ctx.authorize(who, Action.ADMIN, Resource("deployment")):
            return message_page("Administrators only", "Only an administrator can change a "
                                "plan.", status=403, link=("/dashboard", "Back"))
        plan = (await request.form).get("plan", "")
        try:
            await apply(user_id, plan, who)
        except UnknownPlan as exc:
            return message_page("Unknown plan", str(exc), status=400,
                                link=("/admin", "Back to the users"))
        except NotFound:
            return message_page("No such user", "There is no user with this id.",
                                status=404, link=("/admin", "Back to the users"))
        return Response("", status=303, headers={"Location": "/admin"})

    return bp


# ---------------------------------------------------------------------------- CLI


def _set(args: argparse.Namespace) -> int:
    async def change(ctx: PluginContext, storage: Storage, user: User) -> int:
        options: WorkloadsOptions = ctx.config.section("workloads")
        try:
            done = await change_plan(storage, EventBus(storage, ctx.clock), options.all_plans,
                                     user.id, args.plan, by="cli")
        except UnknownPlan as exc:
            print(f"markco: {exc}", file=sys.stderr)
            return 2
        if not done.changed:
            print(f"{user.username} already has plan {done.new}")
        else:
            print(f"{user.username}: plan {done.old} -> {done.new}; a running daemon applies "
                  f"the new limits within {options.plan_check_interval:g} s")
        return 0

    return run_with_user(args, change)


def _list(args: argparse.Namespace) -> int:
    options: WorkloadsOptions = context_for(args.config).config.section("workloads")
    for plan in plans_json(options):
        mark = "  (default)" if plan["default"] else ""
        print(f"{plan['name']:<16} {plan['memory_mib']} MiB  {plan['cpus']:g} CPU{mark}")
    return 0


def _configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="plans_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="the configured plans and their limits")
    add_config_argument(ls)
    ls.set_defaults(_run=_list)
    put = sub.add_parser("set", help="change a user's plan")
    put.add_argument("user", help="a username or a user id")
    put.add_argument("plan", help="a plan name (see `markco plans list`)")
    add_config_argument(put)
    put.set_defaults(_run=_set)


def _needs_action(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires one
    return 2


def plans_commands() -> list[CliCommand]:
    """`markco plans list | set`."""
    return [CliCommand("plans", "users' plans (plans list | set USER PLAN)", _configure,
                       _needs_action)]
