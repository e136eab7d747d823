"""Waiting for a condition the code under test exposes only as a value (a counter, a state)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio


async def eventually(condition: Callable[[], bool], *, within: float = 10.0,
                     what: str = "the condition") -> None:
    """Poll `condition` until it holds; fail after `within` seconds. Polling, not an event:
    these are observations from outside (statistics, states), the way an operator sees them."""
    with trio.move_on_after(within):
        while not condition():  # noqa: ASYNC110 - observing from outside, see above
            await trio.sleep(0.02)
        return
    raise AssertionError(f"{what} did not happen within {within:g} s")


async def eventually_async(condition: Callable[[], Awaitable[bool]], *, within: float = 10.0,
                           what: str = "the condition") -> None:
    """`eventually` for a condition that must await (a database read, an HTTP call)."""
    with trio.move_on_after(within):
        while not await condition():  # noqa: ASYNC110 - observing from outside
            await trio.sleep(0.05)
        return
    raise AssertionError(f"{what} did not happen within {within:g} s")
