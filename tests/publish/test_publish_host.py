"""`publish.host`: pages on an origin of their own, never sharing cookies with editors."""

from __future__ import annotations

import pytest

from markco_trio.errors import ConfigError

from .conftest import MAIN_HOST, BrowserFactory

PAGES = "pages.test"


async def test_pages_are_served_on_the_publish_host(make_browser: BrowserFactory) -> None:
    browser = await make_browser(client_host=PAGES, host=PAGES)
    assert (await browser.get("/@alice/notes")).status_code == 200


async def test_pages_on_the_main_host_redirect_to_the_publish_host(
        make_browser: BrowserFactory) -> None:
    browser = await make_browser(host=PAGES)
    response = await browser.get("/@alice/notes/getting-started?x=1")
    assert response.status_code == 307
    assert response.headers["Location"] == f"http://{PAGES}/@alice/notes/getting-started?x=1"


async def test_the_redirect_keeps_the_raw_path(make_browser: BrowserFactory) -> None:
    browser = await make_browser(host=PAGES)
    response = await browser.get("/@alice/My%20Notes/caf%C3%A9")
    assert response.headers["Location"] == f"http://{PAGES}/@alice/My%20Notes/caf%C3%A9"


async def test_an_origin_sets_the_scheme_of_the_redirect(make_browser: BrowserFactory) -> None:
    browser = await make_browser(host="https://pages.test:8443")
    response = await browser.get("/@alice/notes")
    assert response.headers["Location"] == "https://pages.test:8443/@alice/notes"


async def test_the_publish_host_serves_nothing_else(make_browser: BrowserFactory) -> None:
    browser = await make_browser(client_host=PAGES, host=PAGES)
    response = await browser.get("/api/v1")
    assert response.status_code == 404
    assert "Set-Cookie" not in response.headers


async def test_the_main_host_still_serves_the_rest(make_browser: BrowserFactory) -> None:
    browser = await make_browser(host=PAGES)
    assert (await browser.get("/api/v1")).status_code == 200


async def test_the_redirect_reveals_nothing_about_the_project(
        make_browser: BrowserFactory) -> None:
    browser = await make_browser(host=PAGES)
    private = await browser.get("/@alice/diary")
    missing = await browser.get("/@alice/nothing-here")
    assert private.status_code == missing.status_code == 307


async def test_the_publish_host_cannot_be_the_main_host(make_browser: BrowserFactory) -> None:
    with pytest.raises(ConfigError, match=r"\[publish\]: host: .* main host"):
        await make_browser(host=MAIN_HOST)


@pytest.mark.parametrize("host", ["pages.test/path", "ftp://pages.test", "pages test", "a_b.c"])
async def test_a_malformed_publish_host_is_a_config_error(make_browser: BrowserFactory,
                                                          host: str) -> None:
    with pytest.raises(ConfigError, match=r"\[publish\]: host"):
        await make_browser(host=host)
