"""Hostile code in a user's cell against the monitor's hint analysis: the code of every
execution through the runtime front (up to 64 KiB) is parsed by the daemon (a worker thread of
the monitor's poll). Whatever a user executes, the analysis must answer (no hint, at worst):
an exception escaping `Analyser.analyse` fails the monitor's poll for every user, and a user
repeating the cell makes the supervisor give the monitor up (no idle sleep, no memory
pressure handling for anyone)."""

from __future__ import annotations

import pytest

from markco_trio.builtin.monitor.hints import Analyser, Hints

DEEP = {
    "not chain": "x = " + "not " * 16_000 + "a",
    "unary minus": "x = " + "-" * 60_000 + "1",
    "nested lambdas": "f = " + "lambda: " * 5_000 + "0",
}


@pytest.mark.parametrize("code", DEEP.values(), ids=DEEP.keys())
def test_deeply_nested_code_gives_no_hint_and_no_error(code: str) -> None:
    assert Analyser().analyse(code) == Hints()


def test_ordinary_code_still_gives_its_hint() -> None:
    assert Analyser().analyse("import torch\nx = torch.zeros(3).cuda()\n").gpu
