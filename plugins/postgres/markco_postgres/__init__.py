"""markco-postgres: the PostgreSQL `Storage` provider for markco (psycopg 3, sync driver)."""

from .storage import PostgresStorage

__all__ = ["PostgresStorage"]
