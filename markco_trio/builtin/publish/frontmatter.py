"""Front matter: the `---` block of `key: value` lines at the top of a Markdown file.

A project opts in to being public in the front matter of its `mrmd.md`:

    ---
    title: My notes
    visibility: public
    ---

Parsed strictly, without a YAML library: the block must open on the very first line and close
with `---` (or `...`); top-level lines are `key: value`, comments or blank; indented lines and
`- item` lines belong to the key above (nested YAML is tolerated and ignored). Anything else, a
duplicate key, or a block that never closes means "no valid front matter" — and so, for
`mrmd.md`, a PRIVATE project: a typo must never publish notes. (The original searched the whole
file for `visibility:` and defaulted to public.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_KEY_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)[ \t]*:(?:[ \t]+(.*)|[ \t]*)$")
_LANG = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
_OPENERS = ("---",)
_CLOSERS = ("---", "...")
MAX_LINES = 200  # a settings block longer than this is not front matter


def split_front_matter(text: str) -> tuple[dict[str, str] | None, str]:
    """(fields, body): the parsed front matter and the text after it. Fields is None when the
    text has no valid front matter; the body is then the whole text."""
    text = text.removeprefix("\ufeff")
    lines = text.split("\n")
    if not lines or lines[0].rstrip() not in _OPENERS:
        return None, text
    fields: dict[str, str] = {}
    last_key: str | None = None
    for number, raw in enumerate(lines[1:MAX_LINES + 1], start=1):
        line = raw.rstrip("\r")
        if line.rstrip() in _CLOSERS:
            return fields, "\n".join(lines[number + 1:])
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[:1] in (" ", "\t") or stripped == "-" or line.startswith("- "):
            if last_key is None:
                return None, text
            continue  # nested YAML under the key above: tolerated, not interpreted
        match = _KEY_LINE.match(line)
        if match is None:
            return None, text
        key = match.group(1)
        if key in fields:
            return None, text
        fields[key] = _scalar(match.group(2) or "")
        last_key = key
    return None, text


def _scalar(raw: str) -> str:
    """A YAML-ish scalar: quotes removed, a trailing ` # comment` dropped when unquoted."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in ("'", '"'):
        return value[1:-1]
    comment = value.find(" #")
    if comment >= 0:
        value = value[:comment].rstrip()
    return value


@dataclass(frozen=True)
class ProjectSettings:
    """What a project's `mrmd.md` says about publishing it."""

    public: bool = False
    title: str | None = None
    description: str | None = None
    lang: str = "en"

    @classmethod
    def from_fields(cls, fields: Mapping[str, str] | None) -> ProjectSettings:
        """Settings from front matter fields; no front matter means private."""
        if fields is None:
            return cls()
        lang = fields.get("lang", "en")
        return cls(
            public=fields.get("visibility", "").strip().casefold() == "public",
            title=(fields.get("title") or fields.get("name") or "").strip() or None,
            description=(fields.get("description") or "").strip() or None,
            lang=lang if _LANG.match(lang) else "en",
        )


def read_settings(text: str) -> ProjectSettings:
    """The publishing settings in the text of an `mrmd.md`."""
    fields, _ = split_front_matter(text)
    return ProjectSettings.from_fields(fields)
