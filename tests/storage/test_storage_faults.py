"""Storage failures an operator must fix are `StorageUnavailable` with a cause they can act on
(issue 11, defect 3), injected for real: a full tmpfs, an ext4 file system gone read-only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from markco_trio.storage.failures import StorageUnavailable
from markco_trio.storage.sqlite import SqliteStorage
from markco_trio.testing.fault_injection import ext4_image, fail_into_read_only, fill, small_tmpfs

pytestmark = pytest.mark.system


@pytest.fixture
async def on_tmpfs(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    with small_tmpfs(tmp_path / "fs") as fs:
        async with SqliteStorage(fs / "markco.db") as storage:
            await storage.upgrade()
            yield storage


@pytest.fixture
async def on_ext4(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    with ext4_image(tmp_path / "fs") as fs:
        async with SqliteStorage(fs / "markco.db") as storage:
            await storage.upgrade()
            yield storage


async def test_a_write_on_a_full_disk_says_disk_full(on_tmpfs: SqliteStorage) -> None:
    fill(on_tmpfs.path.parent)
    with pytest.raises(StorageUnavailable) as raised:
        for i in range(50):  # the WAL may hold a few pages' room: write until it cannot
            await on_tmpfs.create_user(username=f"u{i}", email=None, name="x" * 4000,
                                       avatar_url=None, now=0.0)
    assert raised.value.cause == "disk full"


async def test_reads_still_work_on_a_full_disk(on_tmpfs: SqliteStorage) -> None:
    user = await on_tmpfs.create_user(username="ada", email=None, name=None, avatar_url=None,
                                      now=0.0)
    fill(on_tmpfs.path.parent)
    assert await on_tmpfs.get_user(user.id) == user


async def test_the_write_probe_fails_on_a_full_disk_and_recovers_when_space_is_freed(
        on_tmpfs: SqliteStorage) -> None:
    filler = fill(on_tmpfs.path.parent)
    with pytest.raises(StorageUnavailable, match="disk full"):
        for _ in range(200):
            await on_tmpfs.probe_write()
    filler.unlink()
    await on_tmpfs.probe_write()


async def test_a_write_on_a_file_system_gone_read_only_says_read_only(
        on_ext4: SqliteStorage) -> None:
    fail_into_read_only(on_ext4.path.parent)
    with pytest.raises(StorageUnavailable) as raised:
        await on_ext4.create_user(username="ada", email=None, name=None, avatar_url=None,
                                  now=0.0)
    assert raised.value.cause.startswith("database is read-only")
    assert "read-only" in str(raised.value)


async def test_opening_a_database_on_a_read_only_file_system_says_read_only(
        tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs", read_only=True) as fs:
        with pytest.raises(StorageUnavailable) as raised:
            async with SqliteStorage(fs / "markco.db"):
                pass  # pragma: no cover
    assert raised.value.cause.startswith("database is read-only")
    assert str(fs / "markco.db") in str(raised.value)
