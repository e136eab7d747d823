"""The filesystem layer: no symlink is ever followed below `users/`, only regular files are
read, and the navigation walk is bounded and revalidated by folder mtimes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from markco_trio.builtin.publish import disk
from markco_trio.builtin.publish.disk import ScanLimits
from markco_trio.builtin.publish.fsml import walk_files

from .conftest import Site, write


@contextmanager
def opened(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_regular_file_is_read_with_its_stamp(tmp_path: Path) -> None:
    write(tmp_path / "a" / "b.md", "hello")
    with opened(tmp_path) as fd:
        found = disk.read_file(fd, ("a", "b.md"), 100)
    assert found is not None
    data, stamp = found
    assert data == b"hello" and stamp.size == 5


def test_a_symlinked_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "outside.txt", "secret")
    (tmp_path / "p").mkdir()
    os.symlink(tmp_path / "outside.txt", tmp_path / "p" / "leak.md")
    with opened(tmp_path / "p") as fd:
        assert disk.read_file(fd, ("leak.md",), 100) is None
        assert disk.stat_file(fd, ("leak.md",)) is None


def test_a_symlinked_folder_is_refused_on_the_way(tmp_path: Path) -> None:
    write(tmp_path / "outside" / "x.md", "secret")
    (tmp_path / "p").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "p" / "dir")
    with opened(tmp_path / "p") as fd:
        assert disk.read_file(fd, ("dir", "x.md"), 100) is None


def test_a_symlink_to_a_file_inside_the_project_is_refused_too(tmp_path: Path) -> None:
    write(tmp_path / "p" / "_drafts" / "d.md", "draft")
    os.symlink("_drafts/d.md", tmp_path / "p" / "alias.md")
    with opened(tmp_path / "p") as fd:
        assert disk.read_file(fd, ("alias.md",), 100) is None


@pytest.mark.parametrize("path", [("..", "x"), ("/etc", "passwd"), ("a/../b",), ("",), (".",)])
def test_names_that_are_not_plain_are_refused(tmp_path: Path, path: tuple[str, ...]) -> None:
    write(tmp_path / "x", "secret")
    (tmp_path / "p").mkdir()
    with opened(tmp_path / "p") as fd:
        assert disk.read_file(fd, path, 100) is None


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.md")
    with opened(tmp_path) as fd:
        assert disk.read_file(fd, ("pipe.md",), 100) is None
        assert disk.stat_file(fd, ("pipe.md",)) is None


def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "big.md", "x" * 101)
    with opened(tmp_path) as fd:
        assert disk.read_file(fd, ("big.md",), 100) is None
        assert disk.read_file(fd, ("big.md",), 101) is not None


def test_a_project_reached_through_a_symlink_is_refused(site: Site) -> None:
    with pytest.raises(OSError), disk.open_project(site.data_dir, site.ids["bob"], "mirror"):
        pass


def test_a_symlinked_projects_folder_is_refused(site: Site) -> None:
    with pytest.raises(OSError), disk.open_project(site.data_dir, site.ids["carol"], "diary"):
        pass


@pytest.mark.parametrize("user_id", ["..", ".", "a/b", ""])
def test_user_ids_that_are_not_plain_names_are_refused(site: Site, user_id: str) -> None:
    with pytest.raises(OSError), disk.open_project(site.data_dir, user_id, "notes"):
        pass


def test_the_scan_lists_visible_pages_and_skips_hidden_and_linked_entries(site: Site) -> None:
    with disk.open_project(site.data_dir, site.ids["alice"], "notes") as fd:
        scan = disk.scan_tree(fd, ScanLimits())
    assert list(walk_files(scan.tree)) == [
        ("01-intro.md",), ("10-later.md",),
        ("02-getting-started", "01-installation.md"),
        ("02-getting-started", "02-configuration.md"),
        ("03-tutorials", "01-basic.md"), ("03-tutorials", "index.md"),
        ("04-reference", "01-api.md"),
    ]
    names = {f.name for f in scan.tree.folders}
    assert "05-linked" not in names and "06-outside" not in names and "_drafts" not in names
    assert not scan.truncated


def test_names_that_are_not_utf8_are_skipped(tmp_path: Path) -> None:
    write(tmp_path / "good.md", "x")
    fd = os.open(os.fsencode(tmp_path) + b"/bad\xff.md", os.O_CREAT | os.O_WRONLY)
    os.close(fd)
    with opened(tmp_path) as fd:
        scan = disk.scan_tree(fd, ScanLimits())
    assert scan.tree.files == ("good.md",)


def test_the_scan_is_bounded_in_depth(tmp_path: Path) -> None:
    write(tmp_path / "a" / "b" / "c" / "deep.md", "x")
    with opened(tmp_path) as fd:
        scan = disk.scan_tree(fd, ScanLimits(max_depth=2))
    assert list(walk_files(scan.tree)) == []
    assert scan.truncated


def test_the_scan_is_bounded_in_entries(tmp_path: Path) -> None:
    for i in range(10):
        write(tmp_path / f"{i:02d}-p.md", "x")
    with opened(tmp_path) as fd:
        scan = disk.scan_tree(fd, ScanLimits(max_entries=4))
    assert len(scan.tree.files) == 4 and scan.truncated


def test_the_scan_reads_a_bounded_number_of_directory_entries(tmp_path: Path) -> None:
    for i in range(50):
        write(tmp_path / f"f{i}.txt", "x")
    with opened(tmp_path) as fd:
        assert disk.scan_tree(fd, ScanLimits(max_dirents=10)).truncated


def test_refresh_reuses_the_tree_while_no_folder_changed(tmp_path: Path) -> None:
    write(tmp_path / "a.md", "one")
    with opened(tmp_path) as fd:
        first, _ = disk.refresh(fd, None, ScanLimits())
        again, _ = disk.refresh(fd, first, ScanLimits())
    assert again is first


def test_refresh_rescans_when_a_folder_changed(tmp_path: Path) -> None:
    write(tmp_path / "sub" / "a.md", "one")
    with opened(tmp_path) as fd:
        first, _ = disk.refresh(fd, None, ScanLimits())
        write(tmp_path / "sub" / "b.md", "two")
        bump_mtime(tmp_path / "sub")  # make the change visible even on coarse-mtime disks
        again, _ = disk.refresh(fd, first, ScanLimits())
    assert again is not first
    assert ("sub", "b.md") in set(walk_files(again.tree))


def test_refresh_sees_a_page_edited_in_place(tmp_path: Path) -> None:
    page = write(tmp_path / "a.md", "one")
    with opened(tmp_path) as fd:
        first, before = disk.refresh(fd, None, ScanLimits())
        page.write_text("changed!")
        bump_mtime(page)
        again, after = disk.refresh(fd, first, ScanLimits())
    assert again is first  # the folder did not change...
    assert after[("a.md",)] != before[("a.md",)]  # ...but the page's stamp did


def test_project_listing_has_real_visible_folders_only(site: Site) -> None:
    names = disk.list_projects(site.data_dir, site.ids["alice"], ScanLimits())
    assert names == ["diary", "notes", "scratch", "typo"]
    assert disk.list_projects(site.data_dir, site.ids["carol"], ScanLimits()) == []
    assert disk.list_projects(site.data_dir, site.ids["bob"], ScanLimits()) == ["garden"]
