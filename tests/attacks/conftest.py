"""Fixtures of the attack tests, reused as they are: the auth tests' daemon harness (real HTTP
on loopback, SQLite, a manual clock) and the data-plane tests' (the front door with stand-in
compute and editors)."""

from __future__ import annotations

from tests.auth.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    Markco,
    StartMarkco,
    auth_builtin,
    start_markco,
)
from tests.dataplane.conftest import plane, start_plane  # noqa: F401 - fixtures, by name
