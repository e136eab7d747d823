"""The built-in SQLite storage: the Storage contract, plus what is particular to SQLite."""

from __future__ import annotations

import sqlite3
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from markco_trio.errors import AlreadyRunning, StorageError
from markco_trio.storage.schema import LATEST_VERSION
from markco_trio.storage.sqlite import SqliteStorage
from markco_trio.testing.storage_kit import StorageContract, make_user

pytestmark = pytest.mark.trio


class TestSqliteStorage(StorageContract):
    """The contract kit, on a new SQLite file per test."""

    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SqliteStorage]:
        async with SqliteStorage(tmp_path / "markco.db") as storage:
            await storage.upgrade()
            yield storage


async def test_wal_mode_is_on(tmp_path: Path) -> None:
    async with SqliteStorage(tmp_path / "markco.db"):
        pass
    with sqlite3.connect(tmp_path / "markco.db") as conn:  # WAL mode is stored in the file
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_database_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    async with SqliteStorage(tmp_path / "markco.db") as storage:
        await storage.upgrade()
        assert stat.S_IMODE((tmp_path / "markco.db").stat().st_mode) == 0o600


async def test_second_instance_on_the_same_file_raises_already_running(tmp_path: Path) -> None:
    first, second = SqliteStorage(tmp_path / "markco.db"), SqliteStorage(tmp_path / "markco.db")
    async with first.instance_lock():
        with pytest.raises(AlreadyRunning) as raised:
            async with second.instance_lock():
                pass  # pragma: no cover
    assert str(tmp_path / "markco.db.lock") in str(raised.value)
    assert "another markco daemon uses this data dir" in str(raised.value)
    async with second.instance_lock():  # released with the first holder's block
        pass


async def test_missing_data_dir_is_a_storage_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=str(tmp_path / "missing")):
        async with SqliteStorage(tmp_path / "missing" / "markco.db"):
            pass  # pragma: no cover


async def test_upgrade_of_a_new_file_applies_every_migration(tmp_path: Path) -> None:
    async with SqliteStorage(tmp_path / "markco.db") as storage:
        assert await storage.schema_version() == 0
        assert await storage.upgrade() == list(range(1, LATEST_VERSION + 1))
        assert await storage.schema_version() == LATEST_VERSION


async def test_concurrent_upgrades_apply_each_migration_once(tmp_path: Path) -> None:
    applied: list[int] = []

    async def upgrade() -> None:
        async with SqliteStorage(tmp_path / "markco.db") as storage:
            applied.extend(await storage.upgrade())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(upgrade)
    assert sorted(applied) == list(range(1, LATEST_VERSION + 1))


async def test_records_survive_reopening(tmp_path: Path) -> None:
    async with SqliteStorage(tmp_path / "markco.db") as storage:
        await storage.upgrade()
        user = await make_user(storage)
    async with SqliteStorage(tmp_path / "markco.db") as storage:
        assert await storage.get_user(user.id) == user


async def test_cancelling_a_long_query_interrupts_it(tmp_path: Path) -> None:
    # Counts to a billion: a minute or more, unless it is interrupted (and not a hang if not).
    long = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1e9)"
            " SELECT count(*) FROM n")
    async with SqliteStorage(tmp_path / "markco.db", readers=1) as storage:
        await storage.upgrade()
        started = time.monotonic()
        with trio.move_on_after(0.2):
            await storage._read(lambda tx: tx.execute(long))
        assert time.monotonic() - started < 10
        await storage.ping()  # the only reader connection is free and usable again
