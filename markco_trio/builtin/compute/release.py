"""Releasing an idle user's actor: its task, its runtime front's sockets, its watch loop.

Every user ever started used to keep an actor task and a listening runtime front (a unix socket,
and a TCP forwarder on the process backend) until the daemon stopped: a daemon that had served
20 users held 21 listeners. Once a user's workloads are all stopped (or failed) and nothing is
under way, `UserActor.run` returns after `grace` seconds of that, closing the front; the actor
OBJECT stays in the service (a few records in memory: the state, the reason of a failure, the
last activity the dashboard shows), and its task and a new front (a fresh TCP port if the old
one was taken meanwhile) come back the moment something is asked of it (`UserActor.spawn` →
`ComputeService.revive`).

Never released: a user with a live workload — running, starting, and SLEEPING (its front must
keep listening: an execute request arriving there wakes the runtime, DESIGN §3.4) — nor one
with an operation in flight, queued, or a crash being recovered, nor one whose front holds a
request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ...records import LIVE_STATES

if TYPE_CHECKING:
    from .actor import UserActor

__all__ = ["has_queued_work", "idle", "wait_idle"]


def idle(actor: UserActor) -> bool:
    """Whether nothing of the user needs the actor's task or front now."""
    if actor.busy() or actor.lock.locked() or actor.desired or actor.forks:
        return False
    if any(actor.ready.values()):
        return False
    if any(record is not None and record.state in LIVE_STATES
           for record in actor.records.values()):
        return False
    stats = actor.front_statistics()
    return stats is None or (stats.held == 0 and stats.executions_in_flight == 0)


def has_queued_work(actor: UserActor) -> bool:
    """Jobs were handed to the actor while its task was not running (they run when it does)."""
    return bool(actor._queued)  # the actor's own queue, read by its supervisor


async def wait_idle(actor: UserActor, grace: float) -> None:
    """Return once the actor has been `idle` for `grace` seconds in a row. Re-checked at every
    change of the user's state, and at least every `grace / 2` seconds."""
    idle_since: float | None = None
    while True:
        now = trio.current_time()
        if not idle(actor):
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= grace:
            return
        with trio.move_on_after(grace / 2):
            await actor.wait_changed()
