"""Published pages over real HTTP (hypercorn on 127.0.0.1), and in a real browser.

The Chromium test takes a phone-sized screenshot (390x844) of a page and checks that the PNG is
produced, has the right size, is not blank, and that Chromium reported no Content-Security-
Policy violation (the inline stylesheet is allowed by its hash; nothing else is needed). It
skips when `chromium` is missing, unless `MARKCO_REQUIRE_SYSTEM=1` (then it fails). Set
`MARKCO_ARTIFACTS=<dir>` to keep the screenshots for a human to look at.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from markco_trio.storage.sqlite import SqliteStorage
from markco_trio.testing.chromium import CHROMIUM_FLAGS, chromium_binary

from .conftest import Site, make_app, make_context, principals, write

SCREENSHOT_FLAGS = [*CHROMIUM_FLAGS, "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]


@pytest.fixture
async def server(site: Site, storage: SqliteStorage,
                 nursery: trio.Nursery) -> AsyncIterator[str]:
    """The API app served by hypercorn on a free port of 127.0.0.1; yields its base URL."""
    app = make_app(make_context(site, storage), principals(site))
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    stop = trio.Event()
    binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
    yield binds[0]
    stop.set()


async def test_head_over_http_has_gets_length_and_no_body(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as client:
        get = await client.get("/@alice/notes/tutorials")
        head = await client.head("/@alice/notes/tutorials")
    assert get.status_code == head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(get.content) > 0
    assert head.headers["etag"] == get.headers["etag"]


async def test_head_of_an_asset_over_http_has_its_length(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as client:
        get = await client.get("/@alice/notes/_assets/logo.png")
        head = await client.head("/@alice/notes/_assets/logo.png")
    assert int(head.headers["content-length"]) == len(get.content) > 0


async def test_304_over_http(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as client:
        etag = (await client.get("/@alice/notes")).headers["etag"]
        again = await client.get("/@alice/notes", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize("raw", [
    "/@alice/notes/..%2Fdiary%2Fday", "/@alice/notes%2F..%2Fdiary", "/@alice/notes/%2e%2e/diary",
    "/@alice/notes/..%5Cdiary", "/@alice/notes/%252e%252e%252Fdiary",
])
async def test_encoded_traversal_over_http_is_not_found(server: str, raw: str) -> None:
    async with httpx.AsyncClient(base_url=server) as client:
        response = await client.get(raw)
    assert response.status_code == 404
    assert b"SECRET-" not in response.content


async def test_an_encoded_slash_over_http_is_not_a_separator(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as client:
        plain = await client.get("/@alice/notes/getting-started/installation")
        encoded = await client.get("/@alice/notes/getting-started%2Finstallation")
    assert plain.status_code == 200
    assert encoded.status_code == 404


async def test_encoded_names_are_decoded_once(server: str, site: Site) -> None:
    write(site.project("alice", "notes") / "30-caf\u00e9 notes.md", "# Caf\u00e9\n\nPUBLIC-CAFE\n")
    async with httpx.AsyncClient(base_url=server) as client:
        response = await client.get("/@alice/notes/caf%C3%A9%20notes")
    assert response.status_code == 200 and b"PUBLIC-CAFE" in response.content


# ------------------------------------------------------------------------------ chromium


def png_facts(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the decompressed image data)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    idat = b""
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind = data[offset + 4:offset + 8]
        if kind == b"IDAT":
            idat += data[offset + 8:offset + 8 + length]
        offset += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


async def screenshot(binary: str, url: str, out: Path, size: tuple[int, int],
                     profile: Path) -> str:
    """Screenshot `url` at `size`; returns Chromium's log (console messages included)."""
    with trio.fail_after(90):
        result = await trio.run_process(
            [binary, *SCREENSHOT_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}",
             f"--window-size={size[0]},{size[1]}", url],
            capture_stdout=True, capture_stderr=True, check=False)
    log = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 0, log[-2000:]
    return log


SHOWCASE = """# A tour of the page

Published notes should read well on a phone: *emphasis*, **strong**, `inline code`, and a
[link to the configuration](02-configuration.md).

## Lists and quotes

- one item
- another, with a longer sentence that has to wrap on a narrow screen
  1. nested and numbered

> A quotation, set apart from the text.

## Code

```python
def greet(name: str) -> str:
    # a comment, not a heading
    return f"Hello, {name}!"
```

## A table

| Plan | Memory | CPUs |
|:-----|-------:|-----:|
| free | 256 MiB | 0.5 |
| pro | 512 MiB | 1 |
"""


@pytest.mark.system
@pytest.mark.parametrize(("name", "size"), [("phone", (390, 844)), ("desktop", (1280, 860))])
async def test_a_page_renders_in_headless_chromium(server: str, site: Site, tmp_path: Path,
                                                   name: str, size: tuple[int, int]) -> None:
    binary = chromium_binary()
    write(site.project("alice", "notes") / "02-getting-started" / "03-showcase.md", SHOWCASE)
    out = tmp_path / f"publish-{name}.png"
    log = await screenshot(binary, f"{server}/@alice/notes/getting-started/showcase", out,
                           size, tmp_path / "profile")
    data = out.read_bytes()
    width, height, distinct = png_facts(data)
    assert (width, height) == size
    assert len(data) > 10_000 and distinct > 30, "the screenshot looks blank"
    assert "Content Security Policy" not in log, "the page broke its own CSP"
    artifacts = os.environ.get("MARKCO_ARTIFACTS")
    if artifacts:
        keep = trio.Path(artifacts)
        await keep.mkdir(parents=True, exist_ok=True)
        await keep.joinpath(out.name).write_bytes(data)
