"""How an asset of a project is served: its Content-Type and how far the browser may trust it.

A fixed table, not the `mimetypes` module: that one reads the host's `/etc/mime.types`, so the
same file would be served differently on two machines. Unknown types are downloads
(`application/octet-stream`, attachment).

What a published file must never do is run script in the origin that serves it (the main
origin, where editors live, unless `publish.host` is set). So:
- documents that can script — HTML, XHTML, XML — are attachments AND carry a sandboxing CSP;
- SVG displays inline (people embed diagrams), under a sandboxing CSP, which applies when it is
  opened as a document; as an `<img>` a browser never runs its scripts anyway;
- JavaScript and CSS are served as `text/plain`: with `nosniff` no browser will run or apply
  them, so a project cannot plant a script that a `script-src 'self'` policy elsewhere on the
  origin would accept;
- every other asset carries the sandboxing CSP too (defence in depth), except PDF: browsers
  refuse to show a PDF in a sandboxed document, and their PDF viewers do not run in the origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class MediaPolicy:
    """The Content-Type of an asset, whether it is shown or downloaded, and whether it is
    sandboxed (`Content-Security-Policy: sandbox`) when opened as a document."""

    content_type: str
    disposition: Literal["inline", "attachment"] = "inline"
    sandbox: bool = True


_TEXT = "; charset=utf-8"
_INERT = MediaPolicy("text/plain" + _TEXT)

_TABLE: dict[str, MediaPolicy] = {
    # images
    "png": MediaPolicy("image/png"),
    "jpg": MediaPolicy("image/jpeg"),
    "jpeg": MediaPolicy("image/jpeg"),
    "gif": MediaPolicy("image/gif"),
    "webp": MediaPolicy("image/webp"),
    "avif": MediaPolicy("image/avif"),
    "bmp": MediaPolicy("image/bmp"),
    "ico": MediaPolicy("image/vnd.microsoft.icon"),
    "svg": MediaPolicy("image/svg+xml"),
    # audio and video
    "mp3": MediaPolicy("audio/mpeg"),
    "m4a": MediaPolicy("audio/mp4"),
    "oga": MediaPolicy("audio/ogg"),
    "ogg": MediaPolicy("audio/ogg"),
    "opus": MediaPolicy("audio/ogg"),
    "wav": MediaPolicy("audio/wav"),
    "flac": MediaPolicy("audio/flac"),
    "mp4": MediaPolicy("video/mp4"),
    "m4v": MediaPolicy("video/mp4"),
    "webm": MediaPolicy("video/webm"),
    "ogv": MediaPolicy("video/ogg"),
    "mov": MediaPolicy("video/quicktime"),
    # documents and data
    "pdf": MediaPolicy("application/pdf", sandbox=False),
    "txt": MediaPolicy("text/plain" + _TEXT),
    "md": MediaPolicy("text/markdown" + _TEXT),
    "csv": MediaPolicy("text/csv" + _TEXT),
    "tsv": MediaPolicy("text/tab-separated-values" + _TEXT),
    "json": MediaPolicy("application/json"),
    "geojson": MediaPolicy("application/geo+json"),
    "ipynb": MediaPolicy("application/json"),
    "yaml": _INERT,
    "yml": _INERT,
    "toml": _INERT,
    "py": _INERT,
    "r": _INERT,
    "jl": _INERT,
    "sql": _INERT,
    "sh": _INERT,
    "ini": _INERT,
    "log": _INERT,
    "bib": _INERT,
    "tex": _INERT,
    # script and style: served inert, see the module docstring
    "js": _INERT,
    "mjs": _INERT,
    "cjs": _INERT,
    "css": _INERT,
    # documents that can script: downloads, sandboxed
    "html": MediaPolicy("text/html" + _TEXT, disposition="attachment"),
    "htm": MediaPolicy("text/html" + _TEXT, disposition="attachment"),
    "xhtml": MediaPolicy("application/xhtml+xml", disposition="attachment"),
    "xht": MediaPolicy("application/xhtml+xml", disposition="attachment"),
    "xml": MediaPolicy("application/xml", disposition="attachment"),
    "xsl": MediaPolicy("application/xml", disposition="attachment"),
    "xslt": MediaPolicy("application/xml", disposition="attachment"),
    # archives and fonts
    "zip": MediaPolicy("application/zip", disposition="attachment"),
    "gz": MediaPolicy("application/gzip", disposition="attachment"),
    "tar": MediaPolicy("application/x-tar", disposition="attachment"),
    "woff": MediaPolicy("font/woff"),
    "woff2": MediaPolicy("font/woff2"),
    "ttf": MediaPolicy("font/ttf"),
    "otf": MediaPolicy("font/otf"),
}

DOWNLOAD = MediaPolicy("application/octet-stream", disposition="attachment")


def media_policy(name: str) -> MediaPolicy:
    """How to serve the file called `name` (by its extension, case-insensitively)."""
    _, dot, ext = name.rpartition(".")
    if not dot:
        return DOWNLOAD
    return _TABLE.get(ext.lower(), DOWNLOAD)
