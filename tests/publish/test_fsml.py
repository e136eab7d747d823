"""The file rules (FSML), tested on hand-built snapshots: no disk involved."""

from __future__ import annotations

import pytest

from markco_trio.builtin.publish.fsml import (
    Folder,
    build_nav,
    is_hidden,
    is_page_file,
    natural_key,
    page_url,
    resolve_asset,
    resolve_page,
    rewrite_link,
    slug_of_file,
    slug_of_folder,
    sort_names,
    strip_numeric_prefix,
    title_from_slug,
    walk_files,
)

BASE = "/@test/proj"


def fixture_tree() -> Folder:
    """The original's fsml fixture, as the scanner would list it."""
    return Folder.of("", files=["mrmd.md", "01-intro.md"], folders=[
        Folder.of("02-getting-started", files=["01-installation.md", "02-configuration.md"]),
        Folder.of("03-tutorials", files=["01-basic.md", "index.md"]),
        Folder.of("_drafts", files=["upcoming.md"]),
        Folder.of("_assets"),
        Folder.of("_lib", files=["x.md"]),
        Folder.of(".hidden", files=["secret.md"]),
    ])


TITLES = {
    ("01-intro.md",): "Introduction",
    ("02-getting-started", "01-installation.md"): "Installation Guide",
    ("02-getting-started", "02-configuration.md"): "Configuration",
    ("03-tutorials", "index.md"): "Tutorials",
    ("03-tutorials", "01-basic.md"): None,
}


# ----------------------------------------------------------------------------- slugs


@pytest.mark.parametrize(("name", "slug"), [
    ("02-getting-started", "getting-started"),
    ("1-intro", "intro"),
    ("100-advanced", "advanced"),
    ("hello", "hello"),
    ("no-prefix", "no-prefix"),
    ("01_x", "01_x"),
    ("1-2-x", "2-x"),
])
def test_one_numeric_prefix_is_stripped(name: str, slug: str) -> None:
    assert strip_numeric_prefix(name) == slug


@pytest.mark.parametrize(("name", "slug"), [
    ("hello.md", "hello"),
    ("01-intro.md", "intro"),
    ("Notes.MD", "Notes"),
    ("hello.txt", "hello.txt"),
    ("hello", "hello"),
])
def test_md_suffix_is_stripped_from_file_slugs(name: str, slug: str) -> None:
    assert slug_of_file(name) == slug


def test_folder_slugs_keep_a_dot_md_name() -> None:
    assert slug_of_folder("03-old.md") == "old.md"


@pytest.mark.parametrize("name", ["_drafts", "_lib", "_assets", ".hidden", ".git"])
def test_underscore_and_dot_names_are_hidden(name: str) -> None:
    assert is_hidden(name)


@pytest.mark.parametrize("name", ["hello", "02-intro.md"])
def test_other_names_are_not_hidden(name: str) -> None:
    assert not is_hidden(name)


@pytest.mark.parametrize(("name", "listed"), [
    ("intro.md", True), ("INTRO.MD", True), ("mrmd.md", False), ("MRMD.md", False),
    ("_draft.md", False), (".x.md", False), ("notes.txt", False), ("01-.md", False),
])
def test_which_files_are_pages(name: str, listed: bool) -> None:
    assert is_page_file(name) is listed


@pytest.mark.parametrize(("slug", "title"), [
    ("getting-started", "Getting Started"),
    ("a-b-c", "A B C"),
    ("node_modules", "Node_modules"),
    ("intro", "Intro"),
])
def test_titles_from_slugs(slug: str, title: str) -> None:
    assert title_from_slug(slug) == title


# --------------------------------------------------------------------------- listing


def test_top_level_listing_has_exactly_the_visible_pages_and_folders() -> None:
    tree = fixture_tree()
    assert [slug_of_file(f) for f in tree.files] == ["intro"]
    assert [slug_of_folder(f.name) for f in tree.folders] == ["getting-started", "tutorials"]


def test_natural_sort_compares_numbers_as_numbers() -> None:
    assert sort_names(["10-x.md", "2-x.md", "1-x.md"]) == ("1-x.md", "2-x.md", "10-x.md")


def test_natural_sort_ignores_case() -> None:
    assert sort_names(["B2.md", "a.md", "C.md"]) == ("a.md", "B2.md", "C.md")


def test_natural_sort_is_total() -> None:
    assert natural_key("a.md") != natural_key("A.md")
    assert sort_names(["a.md", "A.md"]) == sort_names(["A.md", "a.md"])


def test_files_come_before_folders_in_reading_order() -> None:
    tree = Folder.of("", files=["02-b.md", "10-z.md"], folders=[Folder.of("01-a", ["x.md"])])
    assert list(walk_files(tree)) == [("02-b.md",), ("10-z.md",), ("01-a", "x.md")]


# --------------------------------------------------------------------------- resolve


def test_a_slug_resolves_to_its_file() -> None:
    assert resolve_page(fixture_tree(), ["intro"]) == ("01-intro.md",)


def test_nested_slugs_resolve_through_folders() -> None:
    assert resolve_page(fixture_tree(), ["getting-started", "installation"]) == \
        ("02-getting-started", "01-installation.md")


def test_slug_matching_ignores_case() -> None:
    assert resolve_page(fixture_tree(), ["Getting-Started", "INSTALLATION"]) == \
        ("02-getting-started", "01-installation.md")


def test_a_folder_serves_its_index() -> None:
    assert resolve_page(fixture_tree(), ["tutorials"]) == ("03-tutorials", "index.md")


def test_a_folder_without_index_serves_its_first_page() -> None:
    assert resolve_page(fixture_tree(), ["getting-started"]) == \
        ("02-getting-started", "01-installation.md")


def test_a_folder_of_folders_serves_the_first_page_below_it() -> None:
    tree = Folder.of("", folders=[Folder.of("book", folders=[
        Folder.of("02-part", ["a.md"]), Folder.of("01-part", ["b.md"])])])
    assert resolve_page(tree, ["book"]) == ("book", "01-part", "b.md")


def test_the_root_serves_the_first_page_without_an_index() -> None:
    assert resolve_page(fixture_tree(), []) == ("01-intro.md",)


def test_the_root_serves_its_index() -> None:
    tree = Folder.of("", files=["01-a.md", "index.md"])
    assert resolve_page(tree, []) == ("index.md",)


def test_the_root_of_folders_only_serves_the_first_page_inside() -> None:
    tree = Folder.of("", folders=[Folder.of("01-chapter", ["01-start.md"])])
    assert resolve_page(tree, []) == ("01-chapter", "01-start.md")


def test_unknown_slugs_resolve_to_nothing() -> None:
    assert resolve_page(fixture_tree(), ["nonexistent"]) is None


@pytest.mark.parametrize("segments", [
    ["drafts", "upcoming"], ["_drafts", "upcoming"], [".hidden", "secret"], ["_lib", "x"],
    ["mrmd"], ["..", "intro"], ["getting-started", "..", "intro"],
])
def test_hidden_and_dot_segments_never_match(segments: list[str]) -> None:
    assert resolve_page(fixture_tree(), segments) is None


def test_an_intermediate_segment_must_be_a_folder() -> None:
    assert resolve_page(fixture_tree(), ["intro", "installation"]) is None


def test_the_first_of_two_equal_slugs_wins() -> None:
    tree = Folder.of("", files=["02-intro.md", "01-intro.md"])
    assert resolve_page(tree, ["intro"]) == ("01-intro.md",)


def test_a_file_wins_over_a_folder_with_the_same_slug() -> None:
    tree = Folder.of("", files=["guide.md"], folders=[Folder.of("guide", ["index.md", "a.md"])])
    assert resolve_page(tree, ["guide"]) == ("guide.md",)
    assert resolve_page(tree, ["guide", "a"]) == ("guide", "a.md")


def test_assets_in_an_assets_folder_are_addressed_by_path() -> None:
    assert resolve_asset(fixture_tree(), ["_assets", "img", "logo.png"]) == \
        ("_assets", "img", "logo.png")


def test_assets_next_to_pages_are_addressed_by_folder_slugs() -> None:
    assert resolve_asset(fixture_tree(), ["getting-started", "diagram.png"]) == \
        ("02-getting-started", "diagram.png")


def test_an_assets_folder_below_a_page_folder_is_served_too() -> None:
    assert resolve_asset(fixture_tree(), ["tutorials", "_assets", "x.png"]) == \
        ("03-tutorials", "_assets", "x.png")


@pytest.mark.parametrize("segments", [
    ["_assets", ".env"], ["_assets", "..", "mrmd.md"], ["_drafts", "x.png"], ["intro.md"],
    ["mrmd.md"], ["getting-started", "01-installation.md"], ["_secret.png"], [".git", "config"],
    ["_assets"], [],
])
def test_assets_never_include_hidden_files_or_raw_pages(segments: list[str]) -> None:
    assert resolve_asset(fixture_tree(), segments) is None


# ------------------------------------------------------------------------------- nav


def test_nav_lists_pages_then_folders_with_titles_from_headings() -> None:
    nav = build_nav(fixture_tree(), TITLES, BASE)
    assert len(nav.items) == 3
    first = nav.items[0]
    assert (first.title, first.url, first.children, first.is_folder) == \
        ("Introduction", f"{BASE}/intro", (), False)
    started = nav.items[1]
    assert started.is_folder and started.url is None and started.title == "Getting Started"
    assert len(started.children) == 2
    assert started.children[0].title == "Installation Guide"
    assert started.children[0].url == f"{BASE}/getting-started/installation"


def test_a_folder_with_an_index_is_a_link_titled_from_the_index() -> None:
    tutorials = build_nav(fixture_tree(), TITLES, BASE).items[2]
    assert (tutorials.title, tutorials.url) == ("Tutorials", f"{BASE}/tutorials")
    assert [c.title for c in tutorials.children] == ["Basic"]  # no title: made from the slug


def test_nav_leaves_out_hidden_entries_and_folders_without_pages() -> None:
    tree = Folder.of("", files=["a.md"],
                     folders=[Folder.of("images"), Folder.of("_drafts", ["x.md"])])
    nav = build_nav(tree, {}, BASE)
    assert [i.title for i in nav.items] == ["A"]


def test_nav_leaves_out_pages_shadowed_by_an_equal_slug() -> None:
    nav = build_nav(Folder.of("", files=["01-intro.md", "02-intro.md"]), {}, BASE)
    assert [i.path for i in nav.items] == [("01-intro.md",)]


def test_a_shadowed_folder_index_is_still_reachable() -> None:
    tree = Folder.of("", files=["guide.md"], folders=[Folder.of("guide", ["index.md"])])
    assert page_url(tree, BASE, ("guide", "index.md")) == f"{BASE}/guide/index"


def test_reading_order_is_depth_first_and_gives_previous_and_next() -> None:
    nav = build_nav(fixture_tree(), TITLES, BASE)
    assert [link.url for link in nav.order] == [
        f"{BASE}/intro", f"{BASE}/getting-started/installation",
        f"{BASE}/getting-started/configuration", f"{BASE}/tutorials",
        f"{BASE}/tutorials/basic"]
    before, after = nav.neighbours(("02-getting-started", "02-configuration.md"))
    assert before is not None and before.title == "Installation Guide"
    assert after is not None and after.title == "Tutorials"
    assert nav.neighbours(("01-intro.md",))[0] is None
    assert nav.neighbours(("03-tutorials", "01-basic.md"))[1] is None


def test_a_root_index_is_the_home_page_and_first_in_order() -> None:
    nav = build_nav(Folder.of("", files=["index.md", "01-a.md"]), {("index.md",): "Home"}, BASE)
    assert nav.home == ("index.md",) and nav.home_is_index
    assert [(link.title, link.url) for link in nav.order] == [("Home", BASE), ("A", f"{BASE}/a")]
    assert [i.title for i in nav.items] == ["A"]


# --------------------------------------------------------------------------- links


@pytest.mark.parametrize(("href", "page", "expected"), [
    ("02-configuration.md", ("02-getting-started", "01-installation.md"),
     f"{BASE}/getting-started/configuration"),
    ("02-configuration.md#options", ("02-getting-started", "01-installation.md"),
     f"{BASE}/getting-started/configuration#options"),
    ("diagram.png", ("02-getting-started", "01-installation.md"),
     f"{BASE}/getting-started/diagram.png"),
    ("../_assets/logo.png", ("02-getting-started", "x.md"), f"{BASE}/_assets/logo.png"),
    ("01-basic.md", ("03-tutorials", "index.md"), f"{BASE}/tutorials/basic"),
    ("03-tutorials/index.md", ("01-intro.md",), f"{BASE}/tutorials"),
    ("03-tutorials/", ("01-intro.md",), f"{BASE}/tutorials"),
    ("my%20file.png", ("a.md",), f"{BASE}/my%20file.png"),
    ("./", ("a.md",), BASE),
])
def test_relative_links_are_resolved_on_disk_and_written_as_urls(
        href: str, page: tuple[str, ...], expected: str) -> None:
    assert rewrite_link(href, page, BASE) == expected


@pytest.mark.parametrize("href", [
    "https://example.org/x.md", "mailto:a@b.c", "/elsewhere", "#section", "?q=1",
    "../../outside.md", "..", "",
])
def test_absolute_external_and_escaping_links_are_kept(href: str) -> None:
    assert rewrite_link(href, ("01-intro.md",), BASE) is None
