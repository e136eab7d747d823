"""Fixtures of the attack tests: the auth tests' daemon harness (real HTTP on loopback, SQLite,
a manual clock), reused as is."""

from __future__ import annotations

from tests.auth.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    Markco,
    StartMarkco,
    auth_builtin,
    start_markco,
)
