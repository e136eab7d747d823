"""The browser side: the one server-rendered page and its static files (a script, a stylesheet).

No front-end build step and nothing external: the page works offline, under any `BASE_PATH`
(a `<base href>` plus relative URLs) and under a strict Content-Security-Policy (no inline
script or style).
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from importlib import resources
from string import Template
from urllib.parse import quote

from markco_editor.settings import EditorSettings
from markco_editor.workspace import Listing

__all__ = ["CONTENT_SECURITY_POLICY", "PageRenderer", "StaticAsset", "load_static_assets"]

# 'self' covers ws:/wss: to the same host in current browsers (CSP level 3).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)
_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


@dataclass(frozen=True)
class StaticAsset:
    """A static file held in memory with its content type and ETag."""

    body: bytes
    content_type: str
    etag: str


def load_static_assets() -> dict[str, StaticAsset]:
    """Every file of the package's `static/` directory, by name."""
    assets = {}
    for item in resources.files("markco_editor").joinpath("static").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if not item.is_file() or suffix not in _CONTENT_TYPES:
            continue
        body = item.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        assets[item.name] = StaticAsset(body, _CONTENT_TYPES[suffix], etag)
    return assets


class PageRenderer:
    """Renders the editor page for one request."""

    def __init__(self, settings: EditorSettings, assets: dict[str, StaticAsset]) -> None:
        self._settings = settings
        text = resources.files("markco_editor").joinpath("templates/page.html").read_text()
        self._template = Template(text)
        # Changes whenever a static file does, so browsers never run a stale script.
        digest = hashlib.sha256()
        for name in sorted(assets):
            digest.update(assets[name].etag.encode())
        self._asset_version = digest.hexdigest()[:12]

    def render(self, *, visitor: str | None, role: str | None, listing: Listing) -> bytes:
        """The page: identity in the header bar, the file list pre-rendered (the script keeps
        it current)."""
        owner = self._settings.owner
        who = owner.display_name or "you"
        identity = html.escape(who)
        if visitor and visitor != owner.id:
            # Someone other than the owner (a collaborator, an admin): say who is typing.
            identity += " · signed in as " + html.escape(visitor)
            if role:
                identity += f" ({html.escape(role)})"
        items = "".join(
            f'<li><a href="#{html.escape(quote(e.path))}">{html.escape(e.path)}</a></li>'
            for e in listing.files
        )
        if not listing.files:
            hint = "No markdown files yet."
        elif listing.truncated:
            hint = f"Showing the first {len(listing.files)} files."
        else:
            hint = ""
        page = self._template.substitute(
            base_path=html.escape(self._settings.base_path, quote=True),
            title=html.escape(f"{who} · markco"),
            asset_version=self._asset_version,
            identity=identity,
            file_items=items,
            file_hint=html.escape(hint),
        )
        return page.encode("utf-8")
