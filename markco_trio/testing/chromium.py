"""Headless Chromium over the DevTools protocol (trio-websocket; no Playwright download), for
tests that must see what a real browser does: Debian's `chromium`, one page per browser.

Launched with no network beyond loopback in mind: no background networking, component updates,
sync or first-run fetches (`CHROMIUM_FLAGS`, which every launch starts with). Without Chromium
the tests skip, or fail under `MARKCO_REQUIRE_SYSTEM` (`markco_trio.testing.system`).
Needs `trio-websocket` (the `test` extra) for `chromium`.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from markco_trio.testing.system import missing_system

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run")


def chromium_binary() -> str:
    """The Chromium executable, or skip (fail under MARKCO_REQUIRE_SYSTEM) without one."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing_system("chromium", "apt-get install -y chromium")
    return found


class CommandFailed(AssertionError):
    """Chromium answered a DevTools command with an error."""


class Browser:
    """One page of a headless Chromium: commands answered in order, events kept (`events`)."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._id = 0
        self.session: str | None = None
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, params: dict[str, Any] | None = None, *,
                   page: bool = True) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if page and self.session is not None:
            message["sessionId"] = self.session
        await self._ws.send_message(json.dumps(message))
        with trio.fail_after(30):
            while True:
                reply = json.loads(await self._ws.get_message())
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise CommandFailed(f"{method}: {reply['error']}")
                    result: dict[str, Any] = reply.get("result", {})
                    return result
                self.events.append(reply)

    async def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        """The value of `expression` in the page, or None while the page is being replaced
        (a navigation destroys the context an evaluation was sent to: callers poll)."""
        try:
            result = await self.call("Runtime.evaluate", {
                "expression": expression, "returnByValue": True,
                "awaitPromise": await_promise})
        except CommandFailed:
            return None
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, *, within: float = 15) -> None:
        """Poll until `expression` is true in the page (across navigations)."""
        with trio.fail_after(within):
            while True:
                if await self.evaluate(expression) is True:
                    return
                await trio.sleep(0.02)


@asynccontextmanager
async def chromium(profile: Path, *, extra_flags: tuple[str, ...] = (), popups: bool = True,
                   log: bool = False) -> AsyncIterator[Browser]:
    """A headless Chromium with one blank page attached, launched with `CHROMIUM_FLAGS` and
    `extra_flags` (e.g. `--host-resolver-rules=MAP *.u.test 127.0.0.1`: names resolved to
    loopback, no DNS). `popups` lets pages open windows (`--disable-popup-blocking`); `log`
    also enables the Log domain (its entries land in `events`)."""
    from trio_websocket import open_websocket_url

    binary = chromium_binary()
    await trio.Path(profile).mkdir(parents=True, exist_ok=True)
    process = await trio.lowlevel.open_process(
        [binary, *CHROMIUM_FLAGS, *(["--disable-popup-blocking"] if popups else []),
         *extra_flags, "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = trio.Path(profile / "DevToolsActivePort")
        with trio.fail_after(30):
            while True:  # Chromium writes its port and path there once it listens
                if await active.exists() and len((await active.read_text()).split()) >= 2:
                    break
                await trio.sleep(0.05)
        port, path = (await active.read_text()).split()[:2]
        async with open_websocket_url(f"ws://127.0.0.1:{port}{path}",
                                      max_message_size=64 << 20) as ws:
            browser = Browser(ws)
            target = await browser.call("Target.createTarget", {"url": "about:blank"},
                                        page=False)
            attached = await browser.call("Target.attachToTarget",
                                          {"targetId": target["targetId"], "flatten": True},
                                          page=False)
            browser.session = attached["sessionId"]
            await browser.call("Runtime.enable")
            if log:
                await browser.call("Log.enable")
            yield browser
            await browser.call("Browser.close", page=False)
    finally:
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()
