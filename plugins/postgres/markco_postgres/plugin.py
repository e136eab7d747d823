"""The hook implementations of markco-postgres: the `postgres` storage provider.

Configure it with:

    [storage]
    provider = "postgres"

    [storage.postgres]
    dsn_env = "MARKCO_DATABASE_URL"     # or dsn_file = "/run/secrets/markco-dsn"
    pool_size = 4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from markco_trio import ProviderSpec, Secret, hookimpl

from .storage import PostgresStorage

# The major version of markco's plugin contract this plugin is written for (checked at load).
MARKCO_CONTRACT = "1"


@dataclass(frozen=True)
class PostgresOptions:
    """`[storage.postgres]`. The DSN holds a password, so it is a secret: it comes from the
    environment (`dsn_env`) or a file (`dsn_file`), never from the config file."""

    dsn: Secret
    pool_size: int = 4
    statement_timeout_ms: int = 30000
    lock_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        if not 1 <= self.pool_size <= 100:
            raise ValueError("pool_size: between 1 and 100")
        if self.statement_timeout_ms < 0 or self.lock_timeout_ms < 0:
            raise ValueError("timeouts: zero (none) or more milliseconds")


def make_postgres_storage(options: PostgresOptions, ctx: Any) -> PostgresStorage:
    """Build the provider; the pool is opened when the daemon enters it."""
    return PostgresStorage(options.dsn.reveal(), pool_size=options.pool_size,
                           statement_timeout_ms=options.statement_timeout_ms,
                           lock_timeout_ms=options.lock_timeout_ms)


@hookimpl
def markco_storage_providers() -> list[ProviderSpec]:
    """Register the `postgres` storage provider."""
    return [ProviderSpec(name="postgres", factory=make_postgres_storage, options=PostgresOptions,
                         description="PostgreSQL through psycopg 3 (sync driver, worker threads)")]
