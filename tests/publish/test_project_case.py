"""Project names in `/@user/<project>` are matched ignoring case: a URL naming the project in
another case is redirected to the folder's own name (usernames already are case-insensitive).
A private project stays exactly as absent as before to whoever may not read it."""

from __future__ import annotations

from .conftest import Browser, Site, body, write


async def test_a_project_named_in_another_case_redirects_to_its_folder(
        browser: Browser) -> None:
    response = await browser.get("/@Alice/NOTES")
    assert response.status_code == 302
    assert response.headers["Location"] == "/@alice/notes"
    assert response.headers["Cache-Control"] == "no-store"


async def test_the_redirect_keeps_the_page_path_and_the_query(browser: Browser) -> None:
    response = await browser.get("/@alice/Notes/getting-started/installation?x=1&y=%2F")
    assert response.headers["Location"] == "/@alice/notes/getting-started/installation?x=1&y=%2F"


async def test_the_redirect_leads_to_the_page(browser: Browser) -> None:
    location = (await browser.get("/@alice/NoTeS")).headers["Location"]
    followed = await browser.get(location)
    assert followed.status_code == 200 and b"<article" in await body(followed)


async def test_a_folder_name_with_capitals_is_found_from_lower_case(
        browser: Browser, site: Site) -> None:
    write(site.project("bob", "Field Notes") / "mrmd.md", "---\nvisibility: public\n---\n")
    write(site.project("bob", "Field Notes") / "index.md", "# Field\n\nPUBLIC-FIELD\n")
    response = await browser.get("/@bob/field%20notes")
    assert response.headers["Location"] == "/@bob/Field%20Notes"


async def test_a_private_project_in_another_case_is_not_found_for_a_stranger(
        browser: Browser) -> None:
    assert (await browser.get("/@alice/DIARY", as_="carol")).status_code == 404
    assert (await browser.get("/@alice/DIARY")).status_code == 404


async def test_a_private_project_in_another_case_redirects_its_viewer(
        browser: Browser) -> None:
    response = await browser.get("/@alice/Diary", as_="bob")
    assert response.status_code == 302 and response.headers["Location"] == "/@alice/diary"


async def test_two_folders_differing_only_in_case_are_each_served_and_never_guessed(
        browser: Browser, site: Site) -> None:
    for name in ("Garden", "GARDEN"):
        write(site.project("bob", name) / "mrmd.md", "---\nvisibility: public\n---\n")
        write(site.project("bob", name) / "index.md", f"# {name}\n\nPUBLIC-{name}\n")
    assert (await browser.get("/@bob/GARDEN")).status_code == 200
    assert (await browser.get("/@bob/Garden")).status_code == 200
    assert (await browser.get("/@bob/gArDeN")).status_code == 404  # three candidates


async def test_an_unreadable_case_twin_does_not_change_the_answer(
        browser: Browser, site: Site) -> None:
    write(site.project("alice", "NOTES") / "mrmd.md", "---\nvisibility: private\n---\n")
    write(site.project("alice", "NOTES") / "page.md", "# Hidden\n\nSECRET-TWIN\n")
    response = await browser.get("/@alice/Notes", as_="carol")
    assert response.status_code == 302 and response.headers["Location"] == "/@alice/notes"


async def test_an_unknown_project_is_still_not_found(browser: Browser) -> None:
    assert (await browser.get("/@alice/nothing-here")).status_code == 404
