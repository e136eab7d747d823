"""Admin entries into a user's editor, as that user sees them (DESIGN §5.3: explicit and
audited, and visible to the person whose editor it was).

Each entry is an `admin.entry` event recorded under the owner's user id; this reads them back,
newest first, for the owner's dashboard and `GET /api/v1/admin-entries`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...roles import Storage

EVENT = "admin.entry"
SHOWN = 50
_PAGE = 500


@dataclass(frozen=True)
class AdminEntry:
    """One admin's entry into the owner's editor."""

    admin_id: str
    admin: str
    entered_at: float
    expires_at: float | None


async def admin_entries_of(storage: Storage, owner_id: str, *,
                           limit: int = SHOWN) -> list[AdminEntry]:
    """The latest `limit` admin entries into `owner_id`'s editor, newest first."""
    kept: list[AdminEntry] = []
    after = 0
    while True:  # the log pages oldest first; entries are rare, so reading them all is cheap
        events = await storage.list_events(after_seq=after, limit=_PAGE, type=EVENT,
                                           user_id=owner_id)
        for event in events:
            data = event.data
            expires = data.get("expires_at")
            kept.append(AdminEntry(
                admin_id=str(data.get("admin_id", "")), admin=str(data.get("admin", "")),
                entered_at=event.created_at,
                expires_at=float(expires) if isinstance(expires, (int, float)) else None))
        kept = kept[-limit:]
        if len(events) < _PAGE:
            return kept[::-1]
        after = events[-1].seq
