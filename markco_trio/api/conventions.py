"""API conventions, fixed once for every route (DESIGN §7).

- Errors: `{"error": {"code": "<snake_case>", "message": "<what was wrong and what to do>"}}`
  with a fitting HTTP status; never a traceback.
- Paging: `?cursor=<opaque>&limit=<1..200>`; responses `{"items": [...], "next_cursor": ...}`.
- Times: ISO-8601 UTC with a `Z` (`2026-11-27T21:52:00Z`); ids are opaque strings.
- Scopes: each route names the action it needs (`markco_trio.authz.Action`); API tokens carry
  scopes (`user`, `admin`, `events:read`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from quart import Response, jsonify

from ..records import Page

MAX_PAGE = 200
DEFAULT_PAGE = 50


class ApiError(Exception):
    """Raise in a route to answer with the conventional JSON error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> Response:
    """The one error shape."""
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def iso_time(ts: float | None) -> str | None:
    """POSIX seconds → ISO-8601 UTC (`Z`), second precision unless sub-second matters."""
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, tz=UTC)
    text = dt.isoformat(timespec="milliseconds" if ts % 1 else "seconds")
    return text.replace("+00:00", "Z")


_TIME_FIELDS = ("_at",)


def to_json(record: Any, *, omit: tuple[str, ...] = ()) -> Any:
    """A record (dataclass) as JSON-able data: `*_at` times as ISO strings, enums as values,
    fields named in `omit` (secrets such as token hashes) left out."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(record):
            if f.name in omit:
                continue
            value = getattr(record, f.name)
            if f.name.endswith(_TIME_FIELDS) and isinstance(value, (int, float)):
                out[f.name] = iso_time(value)
            else:
                out[f.name] = to_json(value, omit=omit)
        return out
    if isinstance(record, enum.Enum):
        return record.value
    if isinstance(record, Mapping):
        return {str(k): to_json(v, omit=omit) for k, v in record.items()}
    if isinstance(record, (list, tuple, set, frozenset)):
        return [to_json(v, omit=omit) for v in record]
    return record


def page_params(args: Mapping[str, str]) -> tuple[str | None, int]:
    """`cursor` and `limit` from the query string, validated."""
    raw = args.get("limit", str(DEFAULT_PAGE))
    # isdigit() alone accepts '²' and other digits int() refuses, and int() refuses more than
    # 4300 digits: either was an unhandled error (a 500).
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, "bad_limit", f"limit must be an integer from 1 to {MAX_PAGE}")
    return args.get("cursor") or None, int(raw)


def page_json(page: Page[Any], serialise: Callable[[Any], Any] = to_json) -> dict[str, Any]:
    """A `Page` in the conventional shape."""
    return {"items": [serialise(i) for i in page.items], "next_cursor": page.next_cursor}
