"""tests/ops stand on the auth tests' harness: a whole daemon on a free port, the fake GitHub."""

from __future__ import annotations

from tests.auth.conftest import (  # noqa: F401 - fixtures, found by pytest by name
    auth_builtin,
    fake_github,
    start_markco,
)
