"""`[publish]`: the options of the built-in publish plugin."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_HOST = re.compile(r"^(?=.{1,253}(:|$))[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
                   r"(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:[0-9]{1,5})?$")


@dataclass(frozen=True)
class PublishOptions:
    """`[publish]`: how projects are published at `/@<username>/<project>`.

    `host`: serve pages only on this host (`pages.example.net`, or an origin such as
    `https://pages.example.net:8443`), so published pages never share an origin — nor cookies —
    with the dashboard and the editors; requests for `/@...` on any other host are redirected
    there, and the host serves nothing but `/@...`. Best on a different registrable domain.
    Empty: pages are served on the main origin. The proxy must pass the `Host` header through.

    `user_pages`: `/@<username>` lists the projects of that user the visitor may read (a user
    with none is "not found", like an unknown one).

    The rest bound the work and memory one project can cost: rendered pages kept in memory
    (`cache_bytes`), project trees kept (`cache_projects`), the largest Markdown file rendered
    (`max_page_bytes`) and asset served (`max_asset_bytes`), and how deep (`max_depth`) and how
    wide (`max_entries` pages and folders) the navigation walk goes.
    """

    host: str = ""
    cache_bytes: int = 32 * 1024 * 1024
    cache_projects: int = 64
    max_page_bytes: int = 2 * 1024 * 1024
    max_asset_bytes: int = 50 * 1024 * 1024
    max_depth: int = 8
    max_entries: int = 2000
    user_pages: bool = True

    def __post_init__(self) -> None:
        if self.host:
            scheme, netloc = self.origin_parts()
            if scheme not in ("http", "https") or not _HOST.match(netloc):
                raise ValueError(f"host: expected a host name such as pages.example.net or an "
                                 f"origin such as https://pages.example.net, got {self.host!r}")
        for name in ("cache_bytes", "cache_projects"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be zero (no cache) or more")
        for name in ("max_page_bytes", "max_asset_bytes", "max_depth", "max_entries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1")

    def origin_parts(self, default_scheme: str = "https") -> tuple[str, str]:
        """(scheme, host[:port]) of `host`, lower-cased; the scheme defaults to
        `default_scheme` when `host` is a bare host name."""
        text = self.host.strip()
        if "://" not in text:
            return default_scheme, text.lower()
        parts = urlsplit(text)
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            return "", ""
        return parts.scheme.lower(), parts.netloc.lower()
