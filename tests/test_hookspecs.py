"""The plugin contract documents and tests every hook (datasette's trick).

A hook without a docstring, or whose name appears in no test other than this one, fails here:
adding a hook means documenting it and testing it.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from markco_trio import hookspecs

TESTS = Path(__file__).resolve().parent
HOOKS = sorted(name for name, fn in vars(hookspecs).items()
               if name.startswith("markco_") and callable(fn))


def test_the_contract_has_hooks() -> None:
    assert len(HOOKS) >= 10


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc) > 80, f"{hook} needs a docstring: arguments, return, when it is called"
    assert "Called" in doc, f"{hook}'s docstring must say when it is called"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    this = Path(__file__).resolve()
    for path in TESTS.rglob("test_*.py"):
        if path.resolve() != this and hook in path.read_text(encoding="utf-8"):
            return
    pytest.fail(f"no test mentions {hook}: write one that exercises it")
