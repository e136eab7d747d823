"""What a reader of the event log asks for, and where it stands: pure, no I/O.

`EventQuery` is the filter of `GET /api/v1/events` and of its live stream (user, types, time
range). A position in the log travels as an opaque cursor (also the SSE `id:`, so a client's
`Last-Event-ID` is one): base64url of `v1:<seq>:<fingerprint>`, where the fingerprint is a hash
of the query it was made for. A cursor that does not decode, or that belongs to another query
(other filters, another user's forced filter), is refused as `BadQuery` (a 400): paging
cannot be steered into a listing the caller did not ask for, and the server re-applies the
caller's own filter on every page anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ...api.conventions import iso_time
from ...records import Event
from .options import TYPE_NAME

MAX_TYPES = 20


class BadQuery(ValueError):
    """A query parameter or cursor the caller must fix; `code` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class EventQuery:
    """Which events: of one user (None: every user, admins only), of these types (None: all),
    created at or after `since` and before `until` (POSIX seconds)."""

    user_id: str | None = None
    types: tuple[str, ...] | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, event: Event) -> bool:
        """Whether `event` is in this query's result."""
        return ((self.user_id is None or event.user_id == self.user_id)
                and (self.types is None or event.type in self.types)
                and (self.since is None or event.created_at >= self.since)
                and (self.until is None or event.created_at < self.until))

    def fingerprint(self) -> str:
        """A short hash naming this query, bound into its cursors."""
        canonical = json.dumps([self.user_id, sorted(self.types) if self.types else None,
                                self.since, self.until], separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def cursor(self, seq: int) -> str:
        """The opaque position after the event numbered `seq` in this query."""
        raw = f"v1:{seq}:{self.fingerprint()}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def position(self, cursor: str | None) -> int:
        """The seq a cursor of this query stands after (0 for None); `BadQuery` otherwise."""
        if cursor is None or cursor == "":
            return 0
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise BadQuery("bad_cursor", "this cursor is not one markco gave out") from None
        version, _, rest = raw.partition(":")
        seq, _, fingerprint = rest.partition(":")
        if version != "v1" or not seq.isdigit() or len(seq) > 19 or not fingerprint:
            raise BadQuery("bad_cursor", "this cursor is not one markco gave out")
        if fingerprint != self.fingerprint():
            raise BadQuery("bad_cursor", "this cursor belongs to another query (other "
                           "filters or another user); start again without a cursor")
        return int(seq)


def parse_time(name: str, value: str | None) -> float | None:
    """An ISO-8601 time with a zone (`2026-12-04T21:00:00Z`) as POSIX seconds."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadQuery(f"bad_{name}", f"{name} must be an ISO-8601 time such as "
                       f"2026-12-04T21:00:00Z, not {value!r}") from None
    if parsed.tzinfo is None:
        raise BadQuery(f"bad_{name}", f"{name} must say its zone: end it with Z for UTC")
    return parsed.timestamp()


def parse_types(values: Sequence[str]) -> tuple[str, ...] | None:
    """`type=a&type=b` or `type=a,b` as a tuple (None when absent)."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    if not names:
        return None
    if len(names) > MAX_TYPES:
        raise BadQuery("bad_type", f"ask for at most {MAX_TYPES} types at once")
    for name in names:
        if not TYPE_NAME.match(name):
            raise BadQuery("bad_type", f"{name!r} is not an event type name")
    return tuple(dict.fromkeys(names))


def parse_query(args: Mapping[str, str], types: Sequence[str], *,
                user_id: str | None) -> EventQuery:
    """The query of a request: `user_id` is decided by the caller (authorisation), `types`
    are every `type` argument, `since`/`until` come from `args`."""
    since = parse_time("since", args.get("since"))
    until = parse_time("until", args.get("until"))
    if since is not None and until is not None and since >= until:
        raise BadQuery("bad_range", "since must be before until")
    return EventQuery(user_id=user_id, types=parse_types(types), since=since, until=until)


def event_json(event: Event) -> dict[str, object]:
    """An event as the API and webhooks show it: ISO-8601 UTC time, ids as strings."""
    return {"id": event.id, "type": event.type, "user_id": event.user_id,
            "created_at": iso_time(event.created_at), "data": event.data}
