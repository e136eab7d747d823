"""The live event stream (`GET /api/v1/events/stream`) as server-sent events.

The event log is the source, the bus is the doorbell. The stream subscribes to the bus with a
small bounded channel of its own; whenever it rings (or a heartbeat passes), the stream reads
the log after the last event it sent, with the reader's filter, and sends what it finds in seq
order. So:
- a slow client never slows the producer: its channel fills and the bus drops (and counts)
  the overflow, and the next read of the log refills whatever was dropped — no gap;
- events published concurrently are sent in log order, even when the bus delivered them in
  another order;
- a bus event that does not match the reader's filter costs it no read of the log;
- `Last-Event-ID` (each `id:` is a cursor of the query) resumes exactly after the last event
  the client saw; without it the stream starts at the newest event.
- the reader's right is decided again while the stream is open (`allowed`): a revoked token
  or session, a user disabled or no longer an administrator ends the stream within about a
  second (plus the revocation poll), before any further event is sent.
Each message is `id: <cursor>`, `event: <type>`, `data: <event JSON>`; a comment line every
`heartbeat` seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncGenerator, Awaitable, Callable

import trio

from ...events import EventBus
from ...roles import Storage
from .query import EventQuery, event_json

PAGE = 200
RECHECK_SECONDS = 1.0  # how often an idle stream asks whether its reader may still read
_names = itertools.count(1)


def sse_message(event_id: str, event_type: str, data: str) -> bytes:
    """One SSE message. Type names cannot hold a newline (see `TYPE_NAME`), nor JSON data."""
    return f"id: {event_id}\nevent: {event_type}\ndata: {data}\n\n".encode()


async def event_stream(bus: EventBus, storage: Storage, query: EventQuery, *,
                       after_seq: int | None, heartbeat: float, buffer: int,
                       allowed: Callable[[], Awaitable[bool]] | None = None,
                       recheck: float = RECHECK_SECONDS) -> AsyncGenerator[bytes, None]:
    """SSE bytes of `query`'s events after `after_seq` (None: from now), until cancelled, or
    until `allowed()` (asked before every read of the log and at least every `recheck`
    seconds) says the reader may no longer read them: then the stream ends."""
    name = f"events-stream-{next(_names)}"
    types = frozenset(query.types) if query.types is not None else None
    doorbell = bus.subscribe(name, types=types, buffer=buffer)
    # "From now": the log's tail, read after subscribing, so nothing published from here on
    # is missed (and nothing older is sent).
    last = (max(bus.last_seq, await storage.last_event_seq()) if after_seq is None
            else after_seq)
    with doorbell:
        yield b": markco events\nretry: 2000\n\n"
        while True:
            # A revoked token or session, or a user no longer allowed this query, reads
            # nothing more: the stream ends (its client's reconnection is then refused).
            if allowed is not None and not await allowed():
                return
            # Refill from the log: everything after `last`, a page at a time.
            while True:
                events = await storage.list_events(
                    after_seq=last, limit=PAGE, user_id=query.user_id,
                    types=list(query.types) if query.types is not None else None,
                    since=query.since, until=query.until)
                for event in events:
                    last = event.seq
                    yield sse_message(query.cursor(event.seq), event.type,
                                      json.dumps(event_json(event), separators=(",", ":")))
                if len(events) < PAGE:
                    break
            # Wait for an event this reader wants (others ring for other readers), or the
            # heartbeat; the heartbeat's read also refills anything the bus dropped, and
            # events other processes (the CLI) wrote to the log.
            deadline = trio.current_time() + heartbeat
            wanted = False
            while not wanted:
                wake = (deadline if allowed is None
                        else min(deadline, trio.current_time() + recheck))
                with trio.move_on_at(wake):
                    wanted = query.matches(await doorbell.receive())
                    # Everything already waiting is covered by the one read that follows.
                    while True:
                        try:
                            wanted = query.matches(doorbell.receive_nowait()) or wanted
                        except trio.WouldBlock:
                            break
                    continue
                if allowed is not None and not await allowed():
                    return
                if trio.current_time() >= deadline:
                    yield b": heartbeat\n\n"
                    break
