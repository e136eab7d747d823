"""Conditional GET (RFC 9110 §13): does the client's copy still match?

`If-None-Match` wins when present (weak comparison: `W/"x"` matches `"x"`); `If-Modified-Since`
is consulted only without it, at one-second precision (HTTP dates have no more).
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime


def _entity_tags(header: str) -> list[str]:
    tags = []
    for part in header.split(","):
        tag = part.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag:
            tags.append(tag)
    return tags


def not_modified(*, etag: str, last_modified: float, if_none_match: str | None,
                 if_modified_since: str | None) -> bool:
    """True when a 304 answers the request."""
    if if_none_match is not None:
        ours = etag.removeprefix("W/")
        tags = _entity_tags(if_none_match)
        return "*" in tags or ours in tags
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False
        if since.tzinfo is None:
            return False  # not an HTTP date (those are always GMT)
        return int(last_modified) <= since.timestamp()
    return False
