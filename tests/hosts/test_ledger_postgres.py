"""The reservation ledger on PostgreSQL: two daemons (two storages, pooled connections) placing
at once never overbook a host — the ledger's transaction is serialised by an advisory lock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from markco_docker.hosts import MultiHostBackend, NoRoom
from markco_postgres import PostgresStorage

from markco_trio.builtin.compute import placement
from markco_trio.testing.postgres import postgres_database_fixture, postgres_server_fixture

from .test_hosts import MIB, options

pytestmark = [pytest.mark.system]

postgres_server = postgres_server_fixture()
postgres_dsn = postgres_database_fixture()


@dataclass
class Service:
    storage: PostgresStorage

    def now(self) -> float:
        return 1.0


async def test_two_daemons_placing_at_once_never_overbook(postgres_dsn: str,
                                                          tmp_path: Path) -> None:
    multi = MultiHostBackend(options(), deployment_id="d", state_dir=tmp_path)
    placed: list[str] = []
    async with PostgresStorage(postgres_dsn, pool_size=4) as first, \
            PostgresStorage(postgres_dsn, pool_size=4) as second:
        await first.upgrade()
        daemons: list[Any] = [Service(first), Service(second)]

        async def start(n: int) -> None:
            try:
                placed.append(await placement.reserve(daemons[n % 2], multi, f"u{n}",
                                                      400 * MIB))
            except NoRoom:
                pass

        async with trio.open_nursery() as nursery:
            for n in range(12):
                nursery.start_soon(start, n)
        reserved = await placement.reservations(daemons[0])
    assert sorted(placed) == ["a"] * 2 + ["b"] * 5 + ["g"]
    for host, users in reserved.items():
        budget = multi.host_options[host].memory_budget_bytes
        assert budget is not None and sum(users.values()) <= budget
