"""The auth plugin's supervised services (contributed through `markco_services`).

- `auth-revocations` (critical): polls the storage's revocation epoch and drops the session
  cache when it moves, so revocations made by another process reach this daemon.
- `auth-renewals`: writes the sliding renewals of sessions in batches, and tidies the logins
  in flight; a last batch is written on shutdown.
- `auth-purge`: deletes expired sessions and login links from storage, hourly.
- `auth-login-link` (when enabled): creates the admin user if needed and prints a one-time
  login link once the daemon is ready.
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from ...roles import ServiceSpec
from ...storage.failures import StorageUnavailable
from .login_links import announce, ensure_user, issue_login_link
from .state import AuthState

log = logging.getLogger("markco.auth")

PURGE_SECONDS = 3600.0
READY_WAIT_SECONDS = 10.0
READY_POLL_SECONDS = 0.05


def auth_services(state: AuthState) -> list[ServiceSpec]:
    """The services for this daemon's configuration."""
    specs = [
        ServiceSpec("auth-revocations", partial(watch_revocations, state)),
        ServiceSpec("auth-renewals", partial(write_renewals, state), critical=False),
        ServiceSpec("auth-purge", partial(purge_expired, state), critical=False),
    ]
    if state.login_link_enabled:
        specs.append(ServiceSpec("auth-login-link", partial(print_login_link, state),
                                 critical=False))
    return specs


async def watch_revocations(state: AuthState, *,
                            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                            ) -> None:
    """Poll the revocation epoch every `revocation_poll_seconds`."""
    authority = state.authority
    await authority.check_revocations()
    # Starting (or restarting after a crash, when polls were missed): trust nothing cached.
    authority.clear()
    task_status.started()
    while True:
        await trio.sleep(state.options.revocation_poll_seconds)
        if await authority.check_revocations():
            log.debug("revocation epoch moved: session cache cleared")


async def write_renewals(state: AuthState, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                         ) -> None:
    """Flush sliding renewals every `touch_flush_seconds`, and once more when stopping."""
    authority = state.authority
    task_status.started()
    try:
        while True:
            await trio.sleep(state.options.touch_flush_seconds)
            try:
                await authority.flush_renewals()
            except StorageUnavailable as exc:
                # Kept for the next flush; readiness and the request log already say why.
                log.warning("session renewals not written yet: %s", exc.cause)
            state.pending.purge()
            authority.purge()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await authority.flush_renewals()
            except Exception as exc:
                log.warning("could not write the last session renewals: %s", exc)


async def purge_expired(state: AuthState, *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Delete expired sessions and login links, at start and then hourly."""
    task_status.started()
    while True:
        try:
            removed = await state.storage.purge_expired(now=state.ctx.clock.now())
        except StorageUnavailable as exc:
            log.warning("expired sessions not purged this hour: %s", exc.cause)
            removed = 0
        if removed:
            log.info("purged %d expired sessions and login links", removed)
        await trio.sleep(PURGE_SECONDS)


async def print_login_link(state: AuthState, *,
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                           ) -> None:
    """Print a one-time login link for `[auth] login_link_user` (created as an admin when
    absent), then idle: the daemon restarts services that return."""
    options, clock = state.options, state.ctx.clock
    user, created = await ensure_user(state.storage, clock, options.login_link_user, admin=True)
    if created:
        log.info("created the admin user %r", user.username)
        await state.publish("user.created", user_id=user.id,
                            data={"username": user.username, "via": "console"})
    task_status.started()
    # Print once the daemon answers (the link is clicked at once), but not never: a link is
    # still useful to a daemon that stays not-ready for an unrelated reason.
    readiness = state.ctx.readiness
    for _ in range(int(READY_WAIT_SECONDS / READY_POLL_SECONDS)):
        if readiness is None or readiness.snapshot().ready:
            break
        await trio.sleep(READY_POLL_SECONDS)
    url = await issue_login_link(state.storage, clock, user, public_url=state.public_url,
                                 minutes=options.login_link_minutes)
    await state.publish("auth.login_link.created", user_id=user.id, data={"by": "daemon"})
    announce(url, user.username, options.login_link_minutes)
    await trio.sleep_forever()
