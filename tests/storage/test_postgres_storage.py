"""The markco-postgres storage: the Storage contract, plus what is particular to PostgreSQL.

Runs on a throw-away cluster (see markco_trio.testing.postgres), a fresh database per test.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import trio
from markco_postgres import PostgresStorage

from markco_trio.errors import AlreadyRunning, StorageError
from markco_trio.storage.schema import LATEST_VERSION
from markco_trio.testing.postgres import fresh_database
from markco_trio.testing.storage_kit import StorageContract

pytestmark = [pytest.mark.trio, pytest.mark.system]


class TestPostgresStorage(StorageContract):
    """The contract kit, on a fresh PostgreSQL database per test."""

    @pytest.fixture
    async def storage(self, postgres_dsn: str) -> AsyncIterator[PostgresStorage]:
        async with PostgresStorage(postgres_dsn) as storage:
            await storage.upgrade()
            yield storage


async def test_second_instance_on_the_same_database_raises_already_running(
        postgres_dsn: str) -> None:
    first, second = PostgresStorage(postgres_dsn), PostgresStorage(postgres_dsn)
    async with first.instance_lock():
        with pytest.raises(AlreadyRunning, match="another markco daemon uses this database"):
            async with second.instance_lock():
                pass  # pragma: no cover
    async with second.instance_lock():  # released with the first holder's block
        pass


async def test_instance_locks_of_two_databases_are_independent(postgres_server: str,
                                                               postgres_dsn: str) -> None:
    with fresh_database(postgres_server) as other_dsn:
        async with (PostgresStorage(postgres_dsn).instance_lock(),
                    PostgresStorage(other_dsn).instance_lock()):
            pass


async def test_upgrade_of_an_empty_database_applies_every_migration(postgres_dsn: str) -> None:
    async with PostgresStorage(postgres_dsn) as storage:
        assert await storage.schema_version() == 0
        assert await storage.upgrade() == list(range(1, LATEST_VERSION + 1))
        assert await storage.schema_version() == LATEST_VERSION


async def test_concurrent_upgrades_apply_each_migration_once(postgres_dsn: str) -> None:
    applied: list[int] = []

    async def upgrade() -> None:
        async with PostgresStorage(postgres_dsn, pool_size=1) as storage:
            applied.extend(await storage.upgrade())

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(upgrade)
    assert sorted(applied) == list(range(1, LATEST_VERSION + 1))


async def test_timeouts_are_set_on_every_pooled_connection(postgres_dsn: str) -> None:
    async with PostgresStorage(postgres_dsn, pool_size=2, statement_timeout_ms=1234,
                               lock_timeout_ms=567) as storage:
        settings = await storage._read(lambda tx: tx.one(
            "SELECT current_setting('statement_timeout') AS statement,"
            " current_setting('lock_timeout') AS lock"))
    assert settings == {"statement": "1234ms", "lock": "567ms"}


async def test_statement_timeout_ends_a_stuck_query_with_a_storage_error(
        postgres_dsn: str) -> None:
    async with PostgresStorage(postgres_dsn, statement_timeout_ms=100) as storage:
        with pytest.raises(StorageError, match="statement timeout"):
            await storage._read(lambda tx: tx.execute("SELECT pg_sleep(5)"))
        await storage.ping()


async def test_cancelling_a_long_query_cancels_it_on_the_server(postgres_dsn: str) -> None:
    async with PostgresStorage(postgres_dsn, pool_size=1) as storage:
        started = time.monotonic()
        with trio.move_on_after(0.2):
            await storage._read(lambda tx: tx.execute("SELECT pg_sleep(30)"))
        assert time.monotonic() - started < 10
        # The one pooled connection is back, idle: the query is no longer running anywhere.
        running = await storage._read(lambda tx: tx.execute(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'"))
        assert running == []


async def test_unreachable_server_is_a_storage_error_naming_the_database() -> None:
    dsn = "host=127.0.0.1 port=1 dbname=nowhere user=markco password=secret"
    with pytest.raises(StorageError, match="nowhere on 127.0.0.1:1") as raised:
        async with PostgresStorage(dsn):
            pass  # pragma: no cover
    assert "secret" not in str(raised.value)
