"""The in-memory caches: a page is rendered once per version, a project's tree is rescanned
only when a folder changed, titles are re-read only for pages that changed; all bounded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from markco_trio.builtin.publish.cache import LruCache
from markco_trio.builtin.publish.options import PublishOptions
from markco_trio.builtin.publish.publisher import Publisher
from markco_trio.builtin.publish.request_path import parse_publish_path
from markco_trio.storage.sqlite import SqliteStorage

from .conftest import Site, make_context, write


def make_publisher(site: Site, storage: SqliteStorage, **options: Any) -> Publisher:
    """The Quart-free core, as the blueprint builds it."""
    ctx = make_context(site, storage)
    return Publisher(data_dir=site.data_dir, find_user=storage.get_user_by_username,
                     authorize=ctx.authorize, options=PublishOptions(**options))


async def fetch(publisher: Publisher, raw_path: str) -> bytes | None:
    target = parse_publish_path(raw_path)
    assert target is not None
    located = await publisher.locate(target, None)
    return None if located is None else await located.produce()


def touch(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


async def test_a_page_is_rendered_once_while_nothing_changes(site: Site,
                                                             storage: SqliteStorage) -> None:
    publisher = make_publisher(site, storage)
    first = await fetch(publisher, "/@alice/notes/intro")
    again = await fetch(publisher, "/@alice/notes/intro")
    assert first is not None and first == again
    assert publisher.stats.renders == 1


async def test_the_tree_is_scanned_once_while_no_folder_changes(site: Site,
                                                                storage: SqliteStorage) -> None:
    publisher = make_publisher(site, storage)
    for path in ("/@alice/notes/intro", "/@alice/notes/later", "/@alice/notes/tutorials"):
        await fetch(publisher, path)
    assert publisher.stats.scans == 1
    assert publisher.stats.title_reads == 7  # each page once, for the navigation


async def test_a_new_page_is_seen_after_its_folder_changed(site: Site,
                                                           storage: SqliteStorage) -> None:
    publisher = make_publisher(site, storage)
    await fetch(publisher, "/@alice/notes/intro")
    notes = site.project("alice", "notes")
    write(notes / "03-tutorials" / "02-advanced.md", "# Advanced\n\nPUBLIC-ADVANCED\n")
    touch(notes / "03-tutorials")
    page = await fetch(publisher, "/@alice/notes/tutorials/advanced")
    assert page is not None and b"PUBLIC-ADVANCED" in page
    assert publisher.stats.scans == 2
    assert publisher.stats.title_reads == 8  # only the new page was read for its title


async def test_an_edited_page_is_rendered_again(site: Site, storage: SqliteStorage) -> None:
    publisher = make_publisher(site, storage)
    await fetch(publisher, "/@alice/notes/later")
    page_file = write(site.project("alice", "notes") / "10-later.md", "# Later\n\nPUBLIC-V2\n")
    touch(page_file)
    page = await fetch(publisher, "/@alice/notes/later")
    assert page is not None and b"PUBLIC-V2" in page
    assert publisher.stats.renders == 2
    assert publisher.stats.scans == 1  # the folder did not change


async def test_the_page_cache_is_bounded_in_bytes(site: Site, storage: SqliteStorage) -> None:
    publisher = make_publisher(site, storage, cache_bytes=1)  # smaller than any page
    await fetch(publisher, "/@alice/notes/intro")
    await fetch(publisher, "/@alice/notes/intro")
    assert publisher.stats.renders == 2


def test_the_lru_cache_evicts_the_least_recently_used() -> None:
    cache: LruCache[str, bytes] = LruCache(2)
    cache.put("a", b"1")
    cache.put("b", b"2")
    assert cache.get("a") == b"1"
    cache.put("c", b"3")
    assert cache.get("b") is None and cache.get("a") == b"1" and cache.get("c") == b"3"
    assert cache.statistics().evictions == 1


def test_the_lru_cache_evicts_by_weight() -> None:
    cache: LruCache[str, bytes] = LruCache(100, max_weight=5, weigh=len)
    cache.put("a", b"123")
    cache.put("b", b"45")
    cache.put("c", b"6")
    assert cache.get("a") is None and len(cache) == 2
    assert cache.statistics().weight == 3
    cache.put("huge", b"123456")
    assert cache.get("huge") is None


def test_a_zero_sized_cache_keeps_nothing() -> None:
    cache: LruCache[str, int] = LruCache(0)
    cache.put("a", 1)
    assert cache.get("a") is None
