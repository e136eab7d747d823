"""The page: one server-rendered HTML page, a script and a stylesheet, under any BASE_PATH."""

from __future__ import annotations

import re

import httpx


async def test_page_sets_base_href_to_base_path_and_uses_only_relative_urls(
    editor: httpx.AsyncClient,
) -> None:
    resp = await editor.get("/basic")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    html = resp.text
    assert '<base href="/u/alice/">' in html
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url == "/u/alice/" or not url.startswith(("/", "http:", "https:", "//")), url


async def test_page_shows_the_owner_in_the_header_bar(editor: httpx.AsyncClient) -> None:
    html = (await editor.get("/basic", headers={"X-Markco-User": "alice"})).text
    assert re.search(r'<span class="who" id="who">Alice Liddell</span>', html)


async def test_page_shows_a_visitor_who_is_not_the_owner(editor: httpx.AsyncClient) -> None:
    headers = {"X-Markco-User": "<b>bob</b>", "X-Markco-Role": "collaborator"}
    html = (await editor.get("/basic", headers=headers)).text
    assert "signed in as &lt;b&gt;bob&lt;/b&gt; (collaborator)" in html


async def test_page_has_no_inline_script_or_style_and_a_strict_csp(
    editor: httpx.AsyncClient,
) -> None:
    resp = await editor.get("/basic")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert re.findall(r"<script[^>]*>", resp.text) == [
        '<script src="static/editor.js?v=' + resp.text.split("editor.js?v=")[1][:12] + '" defer>'
    ]
    assert "<style" not in resp.text and " style=" not in resp.text
    assert " on" not in re.sub(r'"[^"]*"', "", resp.text.split("<body>")[1]).lower().replace(
        " one", ""
    )


async def test_page_lists_the_markdown_files(editor: httpx.AsyncClient, user_dir: object) -> None:
    from pathlib import Path

    assert isinstance(user_dir, Path)
    (user_dir / "Welcome.md").write_text("# hi\n")
    assert '<a href="#Welcome.md">Welcome.md</a>' in (await editor.get("/basic")).text


async def test_static_files_are_served_and_revalidated_by_etag(
    editor: httpx.AsyncClient,
) -> None:
    for name, kind in [("editor.js", "text/javascript"), ("editor.css", "text/css")]:
        resp = await editor.get("/static/" + name)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith(kind)
        again = await editor.get("/static/" + name, headers={"If-None-Match": resp.headers["etag"]})
        assert again.status_code == 304
    assert (await editor.get("/static/../app.py")).status_code == 404
    assert (await editor.get("/static/nothing.js")).status_code == 404


async def test_the_script_uses_only_relative_urls(editor: httpx.AsyncClient) -> None:
    script = (await editor.get("/static/editor.js")).text
    for literal in re.findall(r'url\("([^"]*)"\)|api\("([^"]*)"', script):
        for url in literal:
            assert not url.startswith("/"), url
    assert "document.baseURI" in script
