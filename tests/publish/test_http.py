"""The `/@...` routes over HTTP: the URL rules, who sees what, assets, caching validators,
methods. Driven through the real API app (`build_app`) with the plugin registered by hook."""

from __future__ import annotations

import re
from typing import Any

import pytest

from markco_trio.builtin.publish.headers import PAGE_CSP

from .conftest import PNG, Browser, BrowserFactory, Site, body, write

NOTES = "/@alice/notes"


async def body_of(browser: Browser, path: str, **kwargs: Any) -> tuple[int, str]:
    response = await browser.get(path, **kwargs)
    return response.status_code, (await body(response)).decode("utf-8", "replace")


def article(page: str) -> str:
    """The rendered Markdown of a page (without navigation)."""
    start, end = page.index('<article class="doc">'), page.index("</article>")
    return page[start:end]


def current_link(page: str) -> str:
    found: list[str] = re.findall(r'<a [^>]*aria-current="page"[^>]*>([^<]*)</a>', page)
    assert len(found) == 1, found
    return found[0]


# ------------------------------------------------------------------------- URL rules


async def test_the_project_root_serves_its_first_page(browser: Browser) -> None:
    status, page = await body_of(browser, NOTES)
    assert status == 200
    assert "PUBLIC-INTRO" in article(page)


async def test_a_page_is_reached_by_its_slugs(browser: Browser) -> None:
    status, page = await body_of(browser, f"{NOTES}/getting-started/installation")
    assert status == 200 and "PUBLIC-INSTALL" in article(page)


async def test_slugs_match_whatever_their_case(browser: Browser) -> None:
    status, page = await body_of(browser, f"{NOTES}/Getting-Started/INSTALLATION")
    assert status == 200 and "PUBLIC-INSTALL" in article(page)


async def test_the_username_matches_whatever_its_case(browser: Browser) -> None:
    status, page = await body_of(browser, "/@ALICE/notes/intro")
    assert status == 200 and "PUBLIC-INTRO" in article(page)


async def test_a_trailing_slash_changes_nothing(browser: Browser) -> None:
    status, page = await body_of(browser, f"{NOTES}/getting-started/installation/")
    assert status == 200 and "PUBLIC-INSTALL" in article(page)


async def test_a_folder_serves_its_index(browser: Browser) -> None:
    status, page = await body_of(browser, f"{NOTES}/tutorials")
    assert status == 200 and "PUBLIC-TUTORIALS" in article(page)


async def test_a_folder_without_index_serves_its_first_page(browser: Browser) -> None:
    status, page = await body_of(browser, f"{NOTES}/getting-started")
    assert status == 200 and "PUBLIC-INSTALL" in article(page)


@pytest.mark.parametrize("path", [
    f"{NOTES}/01-intro", f"{NOTES}/intro.md", f"{NOTES}/01-intro.md",
    f"{NOTES}/02-getting-started/installation",
])
async def test_prefixes_and_md_suffixes_are_not_part_of_urls(browser: Browser, path: str) -> None:
    assert (await browser.get(path)).status_code == 404


@pytest.mark.parametrize("path", [
    f"{NOTES}/drafts/upcoming", f"{NOTES}/_drafts/upcoming", f"{NOTES}/_drafts",
    f"{NOTES}/.hidden/secret", f"{NOTES}/hidden/secret", f"{NOTES}/lib/helper",
    f"{NOTES}/mrmd", f"{NOTES}/nonexistent", f"{NOTES}/intro/more",
])
async def test_hidden_and_unknown_pages_are_not_found(browser: Browser, path: str) -> None:
    status, page = await body_of(browser, path)
    assert status == 404 and "SECRET-" not in page


async def test_the_navigation_marks_the_active_page(browser: Browser) -> None:
    _, page = await body_of(browser, f"{NOTES}/getting-started/configuration")
    assert current_link(page) == "Configuration"


async def test_the_navigation_is_titled_from_headings_not_code_comments(browser: Browser) -> None:
    _, page = await body_of(browser, NOTES)
    nav = page[page.index('id="nav"'):]
    titles = re.findall(r"<a [^>]*>([^<]*)</a>|<span class=\"label\">([^<]*)</span>", nav)
    assert [a or b for a, b in titles] == [
        "Introduction", "Later", "Getting Started", "Installation Guide", "Configuration",
        "Tutorials", "Basic Tutorial", "Reference", "API"]
    assert "not the title" not in nav


async def test_previous_and_next_follow_the_reading_order(browser: Browser) -> None:
    _, page = await body_of(browser, f"{NOTES}/later")
    assert f'rel="prev" href="{NOTES}/intro"' in page
    assert f'rel="next" href="{NOTES}/getting-started/installation"' in page


async def test_the_page_title_names_page_and_project(browser: Browser) -> None:
    _, page = await body_of(browser, f"{NOTES}/tutorials/basic")
    assert "<title>Basic Tutorial \u2014 Alice&#x27;s Notes</title>" in page


async def test_relative_links_point_at_served_urls(browser: Browser) -> None:
    _, page = await body_of(browser, f"{NOTES}/getting-started/installation")
    assert f'src="{NOTES}/getting-started/diagram.png"' in page
    assert f'href="{NOTES}/getting-started/configuration#options"' in page
    image = await browser.get(f"{NOTES}/getting-started/diagram.png")
    assert image.status_code == 200 and (await body(image)).startswith(PNG)


async def test_a_page_carries_no_script(browser: Browser) -> None:
    _, page = await body_of(browser, NOTES)
    assert "<script" not in page.lower()


# ---------------------------------------------------------------------------- assets


async def test_assets_are_served_with_their_type(browser: Browser) -> None:
    response = await browser.get(f"{NOTES}/_assets/logo.png")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert (await body(response)) == PNG + b"PUBLIC-LOGO"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_nested_assets_are_served(browser: Browser) -> None:
    response = await browser.get(f"{NOTES}/_assets/sub/notes.txt")
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_html_assets_are_sandboxed_downloads(browser: Browser) -> None:
    response = await browser.get(f"{NOTES}/_assets/report.html")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert "sandbox" in response.headers["Content-Security-Policy"]


async def test_svg_assets_are_shown_sandboxed(browser: Browser) -> None:
    response = await browser.get(f"{NOTES}/_assets/chart.svg")
    assert response.headers["Content-Type"] == "image/svg+xml"
    assert response.headers["Content-Security-Policy"].endswith("sandbox")
    assert response.headers["Content-Disposition"].startswith("inline")


async def test_scripts_are_served_inert(browser: Browser) -> None:
    response = await browser.get(f"{NOTES}/_assets/app.js")
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_pdfs_are_shown_but_not_sandboxed(browser: Browser) -> None:
    response = await browser.get(f"{NOTES}/_assets/doc.pdf")
    assert response.headers["Content-Type"] == "application/pdf"
    assert "sandbox" not in response.headers["Content-Security-Policy"]


async def test_unknown_types_are_downloads(browser: Browser) -> None:
    response = await browser.get(f"{NOTES}/_assets/blob.weird")
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize("path", [
    f"{NOTES}/_assets/.env", f"{NOTES}/_assets/pipe.txt", f"{NOTES}/_assets/missing.png",
    f"{NOTES}/_assets", f"{NOTES}/_assets/sub", f"{NOTES}/_drafts/upcoming.md",
    f"{NOTES}/mrmd.md",
])
async def test_hidden_missing_and_special_files_are_not_assets(browser: Browser,
                                                               path: str) -> None:
    status, body = await body_of(browser, path)
    assert status == 404 and "SECRET-" not in body


async def test_large_assets_are_not_served(make_browser: BrowserFactory, site: Site) -> None:
    write(site.project("alice", "notes") / "_assets" / "big.bin", b"x" * 2048)
    browser = await make_browser(max_asset_bytes=1024)
    assert (await browser.get(f"{NOTES}/_assets/big.bin")).status_code == 404


# ------------------------------------------------------------------------ who sees what


async def test_a_private_project_is_not_found_for_anonymous_visitors(browser: Browser) -> None:
    assert (await browser.get("/@alice/diary")).status_code == 404


async def test_a_private_project_is_not_found_for_strangers(browser: Browser) -> None:
    assert (await browser.get("/@alice/diary", as_="carol")).status_code == 404


@pytest.mark.parametrize("who", ["alice", "bob", "root"])
async def test_owner_viewer_and_admin_read_a_private_project(browser: Browser, who: str) -> None:
    status, page = await body_of(browser, "/@alice/diary/day", as_=who)
    assert status == 200 and "SECRET-DIARY" in page


async def test_a_private_page_is_not_for_shared_caches_nor_search_engines(
        browser: Browser) -> None:
    response = await browser.get("/@alice/diary", as_="bob")
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert '<meta name="robots" content="noindex, nofollow">' in \
        (await body(response)).decode()


async def test_a_viewer_reads_the_private_projects_assets(browser: Browser) -> None:
    response = await browser.get("/@alice/diary/_assets/photo.png", as_="bob")
    assert response.status_code == 200
    assert response.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert (await browser.get("/@alice/diary/_assets/photo.png")).status_code == 404


async def test_a_grant_on_one_project_does_not_open_another(browser: Browser) -> None:
    assert (await browser.get("/@alice/typo", as_="bob")).status_code == 404


async def test_a_settings_file_without_front_matter_keeps_a_project_private(
        browser: Browser) -> None:
    assert (await browser.get("/@alice/typo")).status_code == 404
    assert (await browser.get("/@alice/typo", as_="alice")).status_code == 200


async def test_a_project_without_settings_is_not_published_even_to_its_owner(
        browser: Browser) -> None:
    assert (await browser.get("/@alice/scratch", as_="alice")).status_code == 404


async def test_a_disabled_users_projects_are_not_found(browser: Browser) -> None:
    assert (await browser.get("/@dora/old")).status_code == 404


async def test_a_public_page_may_be_cached_by_shared_caches(browser: Browser) -> None:
    response = await browser.get(NOTES)
    assert response.headers["Cache-Control"] == "public, no-cache"
    assert response.headers["Vary"] == "Cookie, Authorization"


async def test_a_users_page_lists_what_the_visitor_may_read(browser: Browser) -> None:
    _, anonymous = await body_of(browser, "/@alice")
    assert f'href="{NOTES}"' in anonymous and "diary" not in anonymous
    _, viewer = await body_of(browser, "/@alice", as_="bob")
    assert f'href="{NOTES}"' in viewer and 'href="/@alice/diary"' in viewer
    assert "typo" not in viewer


async def test_a_user_with_nothing_readable_is_not_found(browser: Browser) -> None:
    nothing = await browser.get("/@carol")
    nobody = await browser.get("/@nobody")
    assert nothing.status_code == nobody.status_code == 404
    assert await body(nothing) == await body(nobody)


async def test_users_pages_can_be_turned_off(make_browser: BrowserFactory) -> None:
    browser = await make_browser(user_pages=False)
    assert (await browser.get("/@alice")).status_code == 404


# ------------------------------------------------------------------------- validators


async def test_pages_carry_an_etag_and_last_modified(browser: Browser) -> None:
    response = await browser.get(NOTES)
    assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["ETag"])
    assert response.headers["Last-Modified"].endswith(" GMT")


async def test_a_matching_etag_gets_304_without_a_body(browser: Browser) -> None:
    etag = (await browser.get(NOTES)).headers["ETag"]
    response = await browser.get(NOTES, headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert await body(response) == b""
    assert response.headers["ETag"] == etag


async def test_a_weak_or_listed_etag_matches_too(browser: Browser) -> None:
    etag = (await browser.get(NOTES)).headers["ETag"]
    response = await browser.get(NOTES, headers={"If-None-Match": f'"nope", W/{etag}'})
    assert response.status_code == 304


async def test_a_stale_etag_gets_the_page(browser: Browser) -> None:
    response = await browser.get(NOTES, headers={"If-None-Match": '"stale"'})
    assert response.status_code == 200


async def test_if_modified_since_gets_304_when_nothing_is_newer(browser: Browser) -> None:
    last_modified = (await browser.get(NOTES)).headers["Last-Modified"]
    response = await browser.get(NOTES, headers={"If-Modified-Since": last_modified})
    assert response.status_code == 304
    older = await browser.get(NOTES, headers={"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"})
    assert older.status_code == 200


async def test_if_none_match_wins_over_if_modified_since(browser: Browser) -> None:
    last_modified = (await browser.get(NOTES)).headers["Last-Modified"]
    response = await browser.get(NOTES, headers={"If-None-Match": '"stale"',
                                                 "If-Modified-Since": last_modified})
    assert response.status_code == 200


async def test_assets_answer_304_too(browser: Browser) -> None:
    etag = (await browser.get(f"{NOTES}/_assets/logo.png")).headers["ETag"]
    response = await browser.get(f"{NOTES}/_assets/logo.png", headers={"If-None-Match": etag})
    assert response.status_code == 304


async def test_no_304_for_a_visitor_who_may_not_read(browser: Browser) -> None:
    etag = (await browser.get("/@alice/diary", as_="bob")).headers["ETag"]
    response = await browser.get("/@alice/diary", headers={"If-None-Match": etag})
    assert response.status_code == 404


async def test_editing_a_page_changes_its_etag_and_content(browser: Browser, site: Site) -> None:
    first = await browser.get(f"{NOTES}/later")
    write(site.project("alice", "notes") / "10-later.md", "# Later, edited\n\nPUBLIC-EDITED\n")
    second = await browser.get(f"{NOTES}/later")
    assert second.headers["ETag"] != first.headers["ETag"]
    assert "PUBLIC-EDITED" in (await body(second)).decode()


async def test_editing_another_pages_title_changes_the_navigation(browser: Browser,
                                                                  site: Site) -> None:
    first = await browser.get(f"{NOTES}/intro")
    write(site.project("alice", "notes") / "10-later.md", "# Much later\n")
    second = await browser.get(f"{NOTES}/intro")
    assert second.headers["ETag"] != first.headers["ETag"]
    assert ">Much later</a>" in (await body(second)).decode()


async def test_turning_a_project_private_takes_effect_at_once(browser: Browser, site: Site) -> None:
    assert (await browser.get(NOTES)).status_code == 200
    write(site.project("alice", "notes") / "mrmd.md", "---\nvisibility: private\n---\n")
    assert (await browser.get(NOTES)).status_code == 404


# ---------------------------------------------------------------------------- methods


async def test_head_is_answered_like_get_without_a_body(browser: Browser) -> None:
    get = await browser.get(NOTES)
    head = await browser.request(NOTES, method="HEAD")
    assert head.status_code == 200
    assert await body(head) == b""
    for name in ("ETag", "Last-Modified", "Content-Type", "Content-Security-Policy"):
        assert head.headers[name] == get.headers[name]


async def test_head_of_an_asset_is_answered_without_reading_it(browser: Browser) -> None:
    head = await browser.request(f"{NOTES}/_assets/logo.png", method="HEAD")
    assert head.status_code == 200 and head.headers["Content-Type"] == "image/png"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_other_methods_are_not_allowed(browser: Browser, method: str) -> None:
    response = await browser.request(NOTES, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    private = await browser.request("/@alice/diary", method=method)
    assert await body(private) == await body(response)


# -------------------------------------------------------------------------- headers


async def test_pages_carry_a_strict_content_security_policy(browser: Browser) -> None:
    csp = (await browser.get(NOTES)).headers["Content-Security-Policy"]
    assert csp == PAGE_CSP
    for directive in ("default-src 'none'", "img-src 'self' data:", "frame-ancestors 'none'",
                      "base-uri 'none'", "form-action 'none'"):
        assert directive in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp


async def test_pages_carry_nosniff_and_no_referrer(browser: Browser) -> None:
    response = await browser.get(NOTES)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in response.headers
