"""Fixtures of the storage tests: a throw-away PostgreSQL cluster per session, a fresh
database per test (the tests that need one are skipped when PostgreSQL is not installed)."""

from markco_trio.testing.postgres import (
    postgres_database_fixture,
    postgres_server_fixture,
)

postgres_server = postgres_server_fixture()
postgres_dsn = postgres_database_fixture()
