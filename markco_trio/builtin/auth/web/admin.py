"""The admin page and what an administrator does from it: `GET /admin` (runtimes, hosts,
users, recent events), `POST /admin/runtimes/<user_id>/<action>` (stop, sleep, wake a user's
workloads) and `POST /admin/enter/<user_id>` (an audited entry into a user's editor).

Only an administrator logged in with a BROWSER SESSION acts here (an API token, even an
admin's, gets 403: these are pages, and an admin's actions are kept to a person at a
browser). Every action is a POST; `web/request_auth.py` has already refused any that did not
come from a markco page (Origin) or lacks the session's form token, before these handlers
run. Each action is recorded in the event log (`admin.action`, `admin.entry`).

The page is built from awaited reads that are each bounded: one page of users, the live
workload records, memory from the monitor's last readings (or, for a runtime it has not read,
one sample from the backend, all at once, given `STATS_SECONDS` in total), and the newest
`RECENT_EVENTS` events (found in O(log n) one-row reads, then one read of about as many).
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from quart import Blueprint, Response, request

from ....authz import Principal
from ....errors import MarkcoError
from ....records import Event, Runtime, RuntimeState, User, WorkloadRole
from .. import pages
from ..state import AuthState
from .login import redirect
from .next_path import login_url
from .request_auth import current_form_token, session_principal, session_token

log = logging.getLogger("markco.auth")

ADMIN_PAGE_SIZE = 200
RECENT_EVENTS = 30
STATS_SECONDS = 1.5
MAX_SAMPLED = 100  # memory samples per page view (the rest show "—")
ACTIONS = ("stop", "sleep", "wake")


def _refused() -> Response:
    return pages.message_page(
        "Administrators only", "Only an administrator, logged in with a browser session, can "
        "use the admin page and its actions.", status=403,
        link=("/dashboard", "Back to your dashboard"))


def _admin() -> Principal | None:
    principal = session_principal()
    return principal if principal is not None and principal.is_admin else None


async def _last_seq(storage: Any) -> int:
    """The newest event's `seq` (0: none), in O(log n) one-row reads: the event log is read
    forward only (`seq > after`), so double a bound until nothing lies past it, then halve the
    gap."""

    async def any_after(seq: int) -> bool:
        return bool(await storage.list_events(after_seq=seq, limit=1))

    if not await any_after(0):
        return 0
    low, high = 0, 1  # some event lies past `low`; is any past `high`?
    while await any_after(high):
        low, high = high, high * 2
    while high - low > 1:  # some event past `low`, none past `high`
        middle = (low + high) // 2
        if await any_after(middle):
            low = middle
        else:
            high = middle
    return high


async def recent_events(state: AuthState, *, count: int = RECENT_EVENTS) -> list[Event]:
    """The newest `count` events, newest first: found from the newest `seq` backwards (seqs
    may have gaps: the span read widens until it holds `count` or starts at the first)."""
    storage = state.storage
    last = await _last_seq(storage)
    span = 2 * count
    while True:
        after = max(0, last - span)
        found = await storage.list_events(after_seq=after, limit=last - after)
        if len(found) >= count or after == 0:
            return list(reversed(found[-count:]))
        span *= 4


def _backend(compute: Any) -> Any:
    """Compute's container backend, or None (no compute, or none configured)."""
    try:
        return getattr(compute, "backend", None)
    except Exception:  # ComputeUnavailable: [compute] names no backend
        return None


async def _memory(compute: Any, monitor: Any,
                  records: list[Runtime]) -> dict[str, tuple[int, int]]:
    """(working set, limit) of each running runtime record by user id: the monitor's last
    reading when it has one (no I/O), else one sample each from the backend, all at once."""
    backend = _backend(compute)
    found: dict[str, tuple[int, int]] = {}
    reading_nowait = getattr(monitor, "reading_nowait", None)
    if reading_nowait is not None:
        for record in records:
            reading = reading_nowait(record.user_id)[0]
            if reading is not None:
                found[record.user_id] = (reading.working_set, reading.limit)
    if backend is None:
        return found

    async def sample(record: Runtime) -> None:
        try:
            stats = await backend.stats(record.handle or "")
        except Exception as exc:  # a workload that just stopped, an engine that is down
            log.debug("admin page: no memory sample of %s: %s", record.id, exc)
            return
        found[record.user_id] = (stats.memory_working_set, stats.memory_limit)

    running = [r for r in records if r.role == WorkloadRole.RUNTIME and r.user_id not in found
               and r.state == RuntimeState.RUNNING and r.handle][:MAX_SAMPLED]
    with trio.move_on_after(STATS_SECONDS):
        async with trio.open_nursery() as nursery:
            for record in running:
                nursery.start_soon(sample, record)
    return found


async def admin_view(state: AuthState, users_by_id: dict[str, User],
                     ) -> tuple[list[pages.AdminRuntime], list[pages.AdminHost]]:
    """The runtimes and hosts sections' rows, from the live workload records and compute."""
    storage = state.storage
    compute = state.ctx.compute
    records = await storage.list_runtimes(live_only=True)
    memory = await _memory(compute, state.ctx.monitor, records)
    by_user: dict[str, list[Runtime]] = {}
    for record in records:
        by_user.setdefault(record.user_id, []).append(record)
    runtimes = []
    for user_id, held in by_user.items():
        user = users_by_id.get(user_id) or await storage.get_user(user_id)
        runtime = next((r for r in held if r.role == WorkloadRole.RUNTIME), held[0])
        summary = runtime.state.value
        last = None
        if compute is not None:
            summary = getattr(compute.state_nowait(user_id), "summary", summary)
            last = compute.last_activity_nowait(user_id)
        used, limit = memory.get(user_id, (None, None))
        runtimes.append(pages.AdminRuntime(
            user_id=user_id, username=user.username if user else user_id, state=summary,
            host=runtime.host, backend=runtime.backend, memory_bytes=used,
            memory_limit=limit, last_activity=last,
            roles=", ".join(sorted(r.role.value for r in held))))
    hosts: dict[str, pages.AdminHost] = {}
    backend = _backend(compute)
    if backend is not None:
        name = str(getattr(compute, "host", "local"))
        hosts[name] = pages.AdminHost(
            name=name, backend=str(getattr(backend, "name", "?")), workloads=0, running=0,
            sleeping=0, memory_bytes=None, checkpoints=backend.capabilities().checkpoint,
            notes="this daemon's host")
    for record in records:
        host = hosts.get(record.host) or pages.AdminHost(
            name=record.host, backend=record.backend, workloads=0, running=0, sleeping=0,
            memory_bytes=None, checkpoints=None)
        used = memory.get(record.user_id, (None, None))[0] \
            if record.role == WorkloadRole.RUNTIME else None
        hosts[record.host] = pages.AdminHost(
            name=host.name, backend=host.backend, workloads=host.workloads + 1,
            running=host.running + (record.state == RuntimeState.RUNNING),
            sleeping=host.sleeping + (record.state == RuntimeState.SLEEPING),
            memory_bytes=(host.memory_bytes or 0) + used if used is not None
            else host.memory_bytes,
            checkpoints=host.checkpoints, notes=host.notes)
    return runtimes, list(hosts.values())


def admin_blueprint(state: AuthState) -> Blueprint:
    """`/admin` and its actions."""
    bp = Blueprint("markco_auth_admin", __name__)
    storage, authority = state.storage, state.authority

    @bp.get("/admin")
    async def admin() -> Response:
        principal = session_principal()
        if principal is None:
            return redirect(state.url(login_url("/admin")))
        if not principal.is_admin:
            return _refused()
        try:
            page = await storage.list_users(cursor=request.args.get("cursor") or None,
                                            limit=ADMIN_PAGE_SIZE)
        except ValueError:
            return pages.message_page(
                "Bad page link", "This page link is damaged (its cursor was not made by "
                "markco). Start again from the first page.", status=400,
                link=("/admin", "The first page of users"))
        users_by_id = {u.id: u for u in page.items}
        runtimes, hosts = await admin_view(state, users_by_id)
        events = await recent_events(state)
        usernames = {u.id: u.username for u in page.items}
        usernames.update({r.user_id: r.username for r in runtimes})
        # Plans (issue 12): the compute plugin's plans, when it runs; its route takes the form.
        plans = sorted(getattr(getattr(state.ctx.compute, "options", None),
                               "all_plans", None) or ())
        extra = [pages.admin_plans_section(page.items, plans, form_token=current_form_token())
                 ] if plans else []
        # Several hosts (issue 16): the hosts a runtime can be moved to.
        compute = state.ctx.compute
        move_hosts = list(getattr(compute, "host_names", list)())
        from ...compute.service import ComputeService
        if isinstance(compute, ComputeService) and len(move_hosts) > 1:  # every move
            from ...compute.hosts_api import migrations_view, moves_section

            extra.append(moves_section(await migrations_view(compute)))
        return pages.admin_page(page.items, next_cursor=page.next_cursor,
                                me=principal.user_id, form_token=current_form_token(),
                                runtimes=runtimes, hosts=hosts, events=events,
                                usernames=usernames, extra_sections=extra,
                                move_hosts=move_hosts)

    @bp.post("/admin/runtimes/<user_id>/move")
    async def runtime_move(user_id: str) -> Response:
        """Move `user_id`'s runtime to the form's `to` host (queued: the page shows it)."""
        principal = _admin()
        if principal is None:
            return _refused()
        compute = state.ctx.compute
        target = await storage.get_user(user_id)
        to = (await request.form).get("to", "")
        back = ("/admin", "Back to the admin page")
        if len(getattr(compute, "host_names", list)()) < 2:
            return pages.message_page(
                "Unknown action", f"This markco runs workloads on one host: the admin page "
                f"can {', '.join(ACTIONS)} a runtime, not move it.", status=404, link=back)
        if compute is None or target is None:
            return pages.message_page("Not available", "No such user, or this markco runs no "
                                      "workspaces.", status=404, link=back)
        try:
            compute.request_move(target.id, to, reason=f"admin @{principal.username}")
        except MarkcoError as exc:
            return pages.message_page("Cannot move", str(exc), status=409, link=back)
        await state.publish("admin.action", user_id=target.id,
                            data={"action": "move", "to": to, "admin_id": principal.user_id,
                                  "admin": principal.username, "owner": target.username})
        return redirect(state.url("/admin#runtimes"))

    @bp.post("/admin/runtimes/<user_id>/<action>")
    async def runtime_action(user_id: str, action: str) -> Response:
        """Stop, sleep or wake `user_id`'s workloads (queued: the page shows the progress)."""
        principal = _admin()
        if principal is None:
            return _refused()
        if action not in ACTIONS:
            return pages.message_page(
                "Unknown action", f"{action!r} is not something the admin page does to a "
                f"runtime; it can {', '.join(ACTIONS)}.", status=404,
                link=("/admin", "Back to the admin page"))
        compute = state.ctx.compute
        if compute is None:
            return pages.message_page("Not available", "This markco runs no workspaces.",
                                      status=404, link=("/admin", "Back to the admin page"))
        target = await storage.get_user(user_id)
        if target is None:
            return pages.message_page("No such user", "There is no user with this id.",
                                      status=404, link=("/admin", "Back to the admin page"))
        if action == "wake" and target.disabled:
            # Stop and sleep take away what a disabled user runs; a wake would give it back
            # (the API answers the same 409 user_disabled).
            return pages.message_page("User disabled", "This user is disabled, so their "
                                      "workspace is not woken; enable them first.", status=409,
                                      link=("/admin", "Back to the admin page"))
        compute.request(target.id, action, reason=f"admin @{principal.username}")
        await state.publish("admin.action", user_id=target.id,
                            data={"action": action, "admin_id": principal.user_id,
                                  "admin": principal.username, "owner": target.username})
        return redirect(state.url("/admin#runtimes"))

    @bp.post("/admin/enter/<user_id>")
    async def admin_enter(user_id: str) -> Response:
        principal = _admin()
        token = session_token()
        if principal is None or token is None:
            return _refused()
        target = await storage.get_user(user_id)
        if target is None:
            return pages.message_page("No such user", "There is no user with this id.",
                                      status=404, link=("/admin", "Back to the users"))
        if target.id != principal.user_id:
            expires = authority.grant_admin_entry(token, target.id)
            await state.publish("admin.entry", user_id=target.id,
                                data={"admin_id": principal.user_id,
                                      "admin": principal.username, "owner_id": target.id,
                                      "owner": target.username, "expires_at": expires})
        return redirect(state.url(f"/u/{target.id}/"))

    return bp
