"""PostgreSQL failures an operator must fix are `StorageUnavailable` with a cause (issue 11,
defect 3): here a database made read-only, as a hot standby or `default_transaction_read_only`
makes it."""

from __future__ import annotations

import psycopg
import pytest
from markco_postgres import PostgresStorage
from psycopg.conninfo import conninfo_to_dict

from markco_trio.storage.failures import StorageUnavailable

pytestmark = [pytest.mark.trio, pytest.mark.system]


async def test_a_write_to_a_read_only_database_says_read_only(postgres_dsn: str) -> None:
    async with PostgresStorage(postgres_dsn) as storage:
        await storage.upgrade()
    name = conninfo_to_dict(postgres_dsn)["dbname"]
    with psycopg.connect(postgres_dsn, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    async with PostgresStorage(postgres_dsn) as storage:  # new sessions: read-only
        with pytest.raises(StorageUnavailable) as raised:
            await storage.create_user(username="ada", email=None, name=None, avatar_url=None,
                                      now=0.0)
        assert raised.value.cause == "database is read-only"
        with pytest.raises(StorageUnavailable, match="read-only"):
            await storage.probe_write()
        assert await storage.get_user_by_username("ada") is None  # reads still work
