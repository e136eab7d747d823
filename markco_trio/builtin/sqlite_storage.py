"""The built-in `sqlite` storage provider: the embedded default (one file under the data dir)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..hookspecs import ProviderSpec, hookimpl

if TYPE_CHECKING:
    from ..context import PluginContext
    from ..storage.sqlite import SqliteStorage


@dataclass(frozen=True)
class SqliteOptions:
    """`[storage.sqlite]`: the database file (relative to the data dir) and its connections."""

    path: str = "markco.db"
    readers: int = 4
    busy_timeout_ms: int = 5000

    def __post_init__(self) -> None:
        if not 1 <= self.readers <= 64:
            raise ValueError("readers: between 1 and 64")
        if self.busy_timeout_ms < 0:
            raise ValueError("busy_timeout_ms: zero or more")


def make_sqlite_storage(options: SqliteOptions, ctx: PluginContext) -> SqliteStorage:
    """Build the provider; the file is opened when the daemon enters it."""
    from ..storage.sqlite import SqliteStorage

    return SqliteStorage(ctx.data_dir / options.path, readers=options.readers,
                         busy_timeout_ms=options.busy_timeout_ms)


@hookimpl
def markco_storage_providers() -> list[ProviderSpec]:
    """Register the `sqlite` storage provider."""
    return [ProviderSpec(name="sqlite", factory=make_sqlite_storage, options=SqliteOptions,
                         description="SQLite file under the data dir (embedded default)")]
