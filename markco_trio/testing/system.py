"""Skipping tests that need a system component — except in CI, where skipping is failing.

On a developer's machine without PostgreSQL, podman, CRIU, Caddy or Chromium, the tests that need
them skip with a message saying how to install it. `.ci/run` installs them all and sets
`MARKCO_REQUIRE_SYSTEM=1`, under which the same situation fails the test instead.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ENV = "MARKCO_REQUIRE_SYSTEM"


def system_required() -> bool:
    """True when missing system components must fail tests (CI)."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def missing_system(component: str, how_to_install: str) -> NoReturn:
    """Skip (developer machine) or fail (CI) a test that needs `component`."""
    message = f"{component} is not available: {how_to_install}"
    if system_required():
        pytest.fail(f"{message} ({REQUIRE_ENV} is set, so this is a failure)")
    pytest.skip(message)
