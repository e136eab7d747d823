"""The mrmd editor UI (npm `mrmd-electron`), served from the cache `scripts/fetch-editor-ui`
fills (pinned version, integrity-checked; nothing of it is in this repository).

The page is the package's own `index.html` with a few exact edits, each of which must match
once (a different version fails loudly rather than half-working):

- its permissive `<meta>` Content-Security-Policy and the Google Fonts links are removed: the
  page is served with `CONTENT_SECURITY_POLICY` below, under which a page load reaches nothing
  outside the origin;
- `<base href="<BASE_PATH>ui/">` so its relative URLs (`./assets/...`, `editor/mrmd.iife.js`,
  `./node_modules/xterm/...`) land on `ui/`, and the browser shim (`static/mrmd-shim.js`) runs
  first, defining `window.electronAPI`; `static/mrmd-shim-after.js` runs after the bundle;
- the bundle's path is the package's `editor/mrmd.iife.js`; `mrmd-voice` (not published with
  the package: voice is a desktop feature) is not loaded.
"""

from __future__ import annotations

import html
import mimetypes
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CONTENT_SECURITY_POLICY", "MrmdUI", "UIFile", "UIUnavailable", "find_ui_dir"]

# 'unsafe-inline': the UI is one large inline script with inline handlers; 'unsafe-eval' and
# blob: for its JavaScript cells. Everything else ('self', data:, blob:) stays in the origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
    "connect-src 'self'; media-src 'self' data: blob:; worker-src 'self' blob:; "
    "frame-src 'self' blob: data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'self'"
)
UI_SUBDIR = Path("share") / "markco-editor-ui" / "mrmd-electron"
_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".json": "application/json", ".map": "application/json",
    ".png": "image/png", ".svg": "image/svg+xml", ".ttf": "font/ttf", ".woff2": "font/woff2",
}
_BUNDLE_TAG = '<script src="../mrmd-editor/dist/mrmd.iife.js"></script>'
_VOICE_TAG = '<script src="../mrmd-voice/dist/mrmd-voice.iife.js"></script>'
_WORKER_REGEX_BUG = r"^\\\\/home\\\\/[^/]+/"
_WORKER_REGEX_FIX = r"^\\/home\\/[^/]+/"
_FONT_LINKS = (
    '<link rel="preconnect" href="https://fonts.googleapis.com">',
    '<link rel="preconnect" href="https://fonts.gstatic.com" crossorigin>',
)


class UIUnavailable(Exception):
    """The UI cache is missing or not the version the shim was written for."""


@dataclass(frozen=True)
class UIFile:
    """One file of the UI: where it is, its content type and ETag (from its size and mtime:
    the cache is immutable once fetched). Read on each request, not held in memory (the
    bundle alone is 7 MB, and every user has an editor)."""

    path: Path
    content_type: str
    etag: str


def find_ui_dir(environ: dict[str, str] | None = None) -> Path | None:
    """Where the UI is: `MARKCO_EDITOR_UI` if set, else `share/markco-editor-ui/mrmd-electron`
    of this Python's venv or of a venv whose site-packages this Python uses (markco's tests
    run workloads with a small venv of their own that imports the host venv's packages); None
    if none holds an `index.html`."""
    env = os.environ if environ is None else environ
    configured = env.get("MARKCO_EDITOR_UI", "").strip()
    if configured:
        candidates = [Path(configured)]
    else:
        prefixes = [Path(sys.prefix)] + [Path(p).parents[2] for p in sys.path
                                          if p.endswith("site-packages") and len(Path(p).parts) > 3]
        candidates = [prefix / UI_SUBDIR for prefix in prefixes]
    for directory in candidates:
        if (directory / "index.html").is_file():
            return directory
    return None


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise UIUnavailable(f"the mrmd UI's index.html is not the one expected ({old[:60]!r} "
                            "found %d times); run scripts/fetch-editor-ui" % text.count(old))
    return text.replace(old, new)


class MrmdUI:
    """The page and files of the UI in `directory`, for an editor at `base_path`."""

    def __init__(self, directory: Path, base_path: str) -> None:
        self.directory = directory.resolve()
        self._base_path = base_path
        self._page: bytes | None = None

    def page(self) -> bytes:
        """The edited `index.html` (built once)."""
        if self._page is None:
            text = (self.directory / "index.html").read_text(encoding="utf-8")
            start = text.find('<meta http-equiv="Content-Security-Policy"')
            end = text.find(">", start)
            if start < 0 or end < 0:
                raise UIUnavailable("the mrmd UI's index.html has no CSP meta tag to replace")
            text = text[:start] + text[end + 1:]
            for link in _FONT_LINKS:
                text = _replace_once(text, link, "")
            google = text.find('<link href="https://fonts.googleapis.com/')
            if google >= 0:
                text = text[:google] + text[text.find(">", google) + 1:]
            base = html.escape(self._base_path, quote=True)
            head = text.find("<head>")
            if not 0 <= head < 200:
                raise UIUnavailable("the mrmd UI's index.html does not start with <head>")
            text = text.replace("<head>", (
                f'<head>\n  <base href="{base}ui/">\n'
                f'  <meta name="markco-base" content="{base}">\n'
                f'  <script src="{base}static/mrmd-shim.js"></script>\n'
                # Upstream 0.5.4 styles its terminal's "Rail" button only inside a mobile
                # media query: on a wide screen it shows unstyled at the bottom. Hidden by
                # default; the UI's own rules still show it when a mobile terminal is open.
                '  <style>.terminal-show-rail-btn { display: none; }</style>'), 1)
            text = _replace_once(text, _BUNDLE_TAG, (
                '<script src="editor/mrmd.iife.js"></script>\n'
                f'  <script src="{base}static/mrmd-shim-after.js"></script>'))
            text = _replace_once(text, _VOICE_TAG, "")
            # An upstream bug (0.5.4): the file picker's worker source is a template literal
            # in which `\\\\/` becomes `\\/`, ending its regex early ("Invalid regular
            # expression flags"; the picker falls back to the main thread). Fixed so the page
            # loads without a console error.
            if text.count(_WORKER_REGEX_BUG) != 3:
                raise UIUnavailable("the mrmd UI's index.html is not the one expected "
                                    "(file picker worker)")
            text = text.replace(_WORKER_REGEX_BUG, _WORKER_REGEX_FIX)
            if "https://fonts." in text[:4096]:
                raise UIUnavailable("the mrmd UI's index.html still loads external fonts")
            self._page = text.encode("utf-8")
        return self._page

    def file(self, rel: str) -> UIFile | None:
        """A file of the UI by its path under `ui/`; None if absent or not a UI file type.
        Confined to the UI directory (no `..`, no hidden files, no link leading out)."""
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return None
        suffix = os.path.splitext(rel)[1].lower()
        content_type = _TYPES.get(suffix) or mimetypes.types_map.get(suffix)
        if content_type is None or rel == "index.html":
            return None
        real = Path(os.path.realpath(self.directory.joinpath(*parts)))
        if not real.is_relative_to(self.directory):
            return None
        try:
            st = real.stat()
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return UIFile(real, content_type, f'"{st.st_size:x}-{st.st_mtime_ns:x}"')
