"""Nothing leaks: no path leaves a project, no markup scripts a page, and a project the
visitor may not read is indistinguishable from one that does not exist.

The property test throws random paths (built from hostile fragments and random text) at the
router, as an anonymous visitor and as a stranger, and checks that only files inside public
projects ever come back: every secret on the disk (private projects, hidden folders, files
outside projects and outside the data dir, symlink targets) holds `SECRET-`, and every file a
public project publishes holds `PUBLIC-`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from markco_trio.storage.sqlite import SqliteStorage

from .conftest import (
    PUBLIC,
    SECRET,
    Browser,
    Site,
    body,
    make_app,
    make_context,
    principals,
    write,
)

NOTES = "/@alice/notes"


async def snapshot(browser: Browser, path: str, **kwargs: Any) -> tuple[int, dict[str, str],
                                                                         bytes]:
    response = await browser.get(path, **kwargs)
    return response.status_code, dict(response.headers), await body(response)


# ------------------------------------------------------------------------ traversal


TRAVERSALS = [
    # plain
    f"{NOTES}/../diary/day", f"{NOTES}/../../../secret", "/@alice/../bob/garden",
    f"{NOTES}/getting-started/../../diary",
    # encoded dots and slashes, upper and lower case
    f"{NOTES}/%2e%2e/diary/day", f"{NOTES}/%2E%2E/%2E%2E/secret",
    f"{NOTES}/..%2Fdiary%2Fday", f"{NOTES}/..%2fdiary%2fday", "/@alice/notes%2F..%2Fdiary",
    "/@alice/..%2F..%2F..%2Fsecret", "/@alice%2F..%2Fbob/garden",
    f"{NOTES}/_assets/..%2F..%2Fdiary",
    # double-encoded
    f"{NOTES}/%252e%252e/diary", f"{NOTES}/..%252Fdiary%252Fday", f"{NOTES}/%252E%252E%252Fsecret",
    # backslashes
    f"{NOTES}/..\\diary\\day", f"{NOTES}/..%5Cdiary%5Cday", f"{NOTES}/_assets/..%5c..%5csecret.md",
    # absolute paths, NUL, the original's prefix bug
    f"{NOTES}//etc/passwd", f"{NOTES}/%2Fetc%2Fpasswd", f"{NOTES}/_assets/%2Fetc%2Fpasswd",
    f"{NOTES}/intro%00.png", f"{NOTES}/_assets/logo.png%00", f"{NOTES}/_assets/../_assetsX/x",
    # symlinks pointing out of the project, or into another one
    f"{NOTES}/leak", f"{NOTES}/_assets/leak.png", f"{NOTES}/linked/day", f"{NOTES}/05-linked/day",
    f"{NOTES}/outside/secret", f"{NOTES}/outside/proj/page", f"{NOTES}/06-outside/secret.txt",
    f"{NOTES}/getting-started/leak.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_no_path_leaves_the_project(browser: Browser, path: str) -> None:
    status, _, data = await snapshot(browser, path)
    assert status == 404
    assert SECRET.encode() not in data


@pytest.mark.parametrize("path", ["/@carol/diary/day", "/@carol/diary/_assets/photo.png"])
async def test_a_symlinked_projects_folder_leaks_nothing_to_its_owner(browser: Browser,
                                                                      path: str) -> None:
    status, _, data = await snapshot(browser, path, as_="carol")
    assert status == 404 and SECRET.encode() not in data


async def test_a_symlinked_project_leaks_nothing_to_its_owner(browser: Browser) -> None:
    status, _, data = await snapshot(browser, "/@bob/mirror/day", as_="bob")
    assert status == 404 and SECRET.encode() not in data


async def test_a_symlinked_settings_file_publishes_nothing(browser: Browser, site: Site) -> None:
    project = site.project("alice", "linked-settings")
    write(project / "page.md", "# Page\n\nSECRET-LINKED-SETTINGS\n")
    (project / "mrmd.md").symlink_to(site.outside / "mrmd.md")  # a public settings file
    assert (await browser.get("/@alice/linked-settings")).status_code == 404


# ------------------------------------------------------------------------------ markup


HOSTILE = """---
title: T</title><script>alert(1)</script>
---
# Heading <script>alert("h1")</script>

Text </script><script>alert(2)</script> and <img src=x onerror=alert(3)>.

<iframe src="https://evil.example"></iframe>

```html
</script><script>alert(4)</script>
```

[click](javascript:alert(5)) ![x](data:text/html,<script>alert(6)</script>)
"""


async def test_script_in_markdown_never_reaches_the_page_unescaped(browser: Browser,
                                                                   site: Site) -> None:
    write(site.project("alice", "notes") / "20-hostile.md", HOSTILE)
    status, _, data = await snapshot(browser, f"{NOTES}/hostile")
    page = data.decode()
    assert status == 200
    lowered = page.lower()
    for tag in ("<script", "</script", "<iframe", "<img src=x", 'href="javascript:',
                'src="data:text/html', 'onerror="'):
        assert tag not in lowered, tag
    assert "&lt;script&gt;" in page


async def test_hostile_titles_are_escaped_everywhere(browser: Browser, site: Site) -> None:
    write(site.project("alice", "notes") / "mrmd.md",
          "---\nvisibility: public\ntitle: </title><script>alert(1)</script>\n---\n")
    write(site.project("alice", "notes") / "20-x.md", "# <b>bold</b> \"quoted\" & more\n")
    _, _, data = await snapshot(browser, f"{NOTES}/x")
    page = data.decode()
    assert "<script" not in page and "<b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &amp; more" in page


# -------------------------------------------------------------------- not found is not found


NOT_FOUND = [
    "/@alice/diary",  # private
    "/@alice/diary/day",  # a page of a private project
    "/@alice/diary/_assets/photo.png",  # an asset of a private project
    "/@alice/typo",  # settings without front matter
    "/@alice/scratch",  # no settings at all
    "/@alice/missing",  # no such project
    "/@alice/missing/page",
    "/@nobody/notes",  # no such user
    "/@dora/old",  # a disabled user
    "/@alice/_private",  # a hidden project name
    f"{NOTES}/missing",  # no such page
    f"{NOTES}/..%2Fdiary",  # not a path at all
    "/@",
]


async def test_every_not_found_is_the_same_bytes_and_headers(browser: Browser) -> None:
    answers = {path: await snapshot(browser, path) for path in NOT_FOUND}
    reference = answers["/@alice/missing"]
    assert reference[0] == 404
    for path, answer in answers.items():
        assert answer == reference, path


async def test_a_private_project_looks_missing_to_a_stranger_too(browser: Browser) -> None:
    assert await snapshot(browser, "/@alice/diary/day", as_="carol") == \
        await snapshot(browser, "/@alice/missing/day", as_="carol")


# ---------------------------------------------------------------------- property-based


FRAGMENTS = [
    "@alice", "@ALICE", "@bob", "@carol", "@dora", "@nobody", "@..", "@%2e%2e", "@",
    "notes", "Notes", "diary", "typo", "scratch", "garden", "mirror", "_private", "missing",
    "..", ".", "%2e%2e", "%2E%2E", "%252e%252e", "%2F", "%2f", "%252F", "%5C", "\\", "%00",
    "..%2F..", "..%2fdiary", "%2Fetc%2Fpasswd", "etc", "passwd", "",
    "_drafts", "drafts", "upcoming", ".hidden", "hidden", "secret", "secret.md", "secret.txt",
    "_lib", "lib", "helper", "_assets", "assets", "logo.png", "photo.png", ".env", "leak",
    "leak.md", "leak.png", "leak.txt", "05-linked", "linked", "06-outside", "outside", "proj",
    "page", "day", "mrmd", "mrmd.md", "intro", "INTRO", "01-intro", "later", "getting-started",
    "installation", "configuration", "tutorials", "basic", "index", "reference", "api",
    "diagram.png", "report.html", "chart.svg", "pipe.txt", "sub", "notes.txt", "users",
    "Projects", "node_modules",
]

segment = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(min_size=1, max_size=12).map(lambda s: quote(s, safe="")),
    st.text(alphabet="./%2eEfFc5\\_-", min_size=1, max_size=8),
)
paths = st.lists(segment, min_size=1, max_size=7).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.tuples(paths, st.sampled_from([None, "carol"])), min_size=1,
                         max_size=8))
async def test_random_paths_only_ever_return_public_files(
        site: Site, requests: list[tuple[str, str | None]]) -> None:
    # Hypothesis runs each example in a trio run of its own, so the storage is opened here
    # rather than by a fixture (which would belong to the first example's run).
    async with SqliteStorage(site.db) as storage:
        browser = Browser(make_app(make_context(site, storage), principals(site)))
        for path, who in requests:
            if not path.isascii():
                continue  # a raw path is ASCII on the wire; non-ASCII arrives percent-encoded
            try:
                urlsplit(path)
            except ValueError:
                continue  # quart's test client cannot send it ('//x[' parses as a host)
            status, headers, data = await snapshot(browser, path, as_=who)
            assert SECRET.encode() not in data, path
            assert status in (200, 302, 404), (path, status)
            if status == 302:
                # Only a project named in another case is redirected, to the same user's
                # pages on this site.
                location = headers.get("location", "")
                user = path.split("/")[1].lower()
                assert location.lower().startswith(f"/{user}/") or \
                    f"/{user}/" in location.lower().split("//", 1)[-1], (path, location)
            # A 200 under /@ is a published file; other paths may reach the app's own routes
            # (e.g. `/api%2Fv1` is the API's about page), which must never leak a secret either.
            if status == 200 and path.startswith("/@"):
                assert PUBLIC.encode() in data, path


async def test_the_property_test_can_see_secrets_when_allowed(browser: Browser) -> None:
    """The markers are real: the owner does get `SECRET-` content, so the property above
    would notice a leak."""
    _, _, data = await snapshot(browser, "/@alice/diary/day", as_="alice")
    assert SECRET.encode() in data
