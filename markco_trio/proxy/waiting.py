"""The "starting your editor" page, its script, and the progress stream it follows (DESIGN §3.2).

A navigation to an editor that is not ready (starting, asleep, moving, stopped) gets a small
HTML page instead of an error. It has no inline script: `/_markco/wait.js`, served by the front
door, opens an EventSource on `/_markco/progress/<owner>` and reloads the page when the stream
says `ready` (the reload is a navigation again, which now reaches the editor). A failed start
shows its reason and a "Try again" button. Without JavaScript, the page refreshes itself every
few seconds. The inline stylesheet is allowed by its hash in the page's Content-Security-Policy.

The progress stream is the front door's own, not the API's `/api/v1/users/<id>/progress`,
because whoever may enter the editor may wait for it — a collaborator included — while the
API's stream is for the owner and admins. It never starts anything: only the navigation did.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol

import trio

from markco_trio.proxy.answers import Answer

__all__ = [
    "PROGRESS_PREFIX",
    "WAIT_SCRIPT",
    "WAIT_SCRIPT_PATH",
    "ProgressSource",
    "message_page",
    "stream_progress",
    "wait_page",
]

WAIT_SCRIPT_PATH: Final = b"/_markco/wait.js"
PROGRESS_PREFIX: Final = b"/_markco/progress/"
RETRY_AFTER: Final = b"2"
PHASE_FAILED: Final = "failed"  # compute's phase of a start that gave up

_STYLE: Final = (
    "body{font:16px/1.5 system-ui,sans-serif;margin:0;display:grid;place-items:center;"
    "min-height:100vh;background:#f6f7f9;color:#1d2330}"
    "main{max-width:32rem;padding:2rem;text-align:center}"
    "h1{font-size:1.25rem;margin:0 0 .75rem}"
    "#status{color:#4a5263;min-height:1.5em}"
    "button{font:inherit;padding:.4rem 1rem;margin-top:1rem}"
    "@media (prefers-color-scheme:dark){body{background:#14171d;color:#e7e9ee}"
    "#status{color:#aab1bf}}"
)
_STYLE_HASH: Final = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
_CSP: Final = (
    f"default-src 'none'; script-src 'self'; connect-src 'self'; "
    f"style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; form-action 'none'; "
    f"frame-ancestors 'none'"
).encode()
_PAGE_HEADERS: Final = (
    (b"content-security-policy", _CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)

WAIT_SCRIPT: Final = Answer(
    200,
    b"""\
"use strict";
(function () {
  var script = document.currentScript;
  var url = script && script.getAttribute("data-progress");
  var status = document.getElementById("status");
  var retry = document.getElementById("retry");
  function later() { setTimeout(function () { location.reload(); }, 3000); }
  if (!url || !window.EventSource) { later(); return; }
  var source = new EventSource(url);
  source.addEventListener("progress", function (e) {
    var data = JSON.parse(e.data);
    if (data.message) { status.textContent = data.message; }
  });
  source.addEventListener("ready", function () {
    source.close();
    status.textContent = "Ready. Opening\\u2026";
    location.reload();
  });
  source.addEventListener("failed", function (e) {
    source.close();
    var data = JSON.parse(e.data);
    status.textContent = "Your editor could not start: " + (data.message || "unknown error");
    retry.hidden = false;
  });
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED) { later(); }
  };
  retry.addEventListener("click", function () { location.reload(); });
})();
""",
    b"text/javascript; charset=utf-8",
    ((b"x-content-type-options", b"nosniff"),),
)


def wait_page(owner: str, message: str) -> Answer:
    """The page a navigation gets while `owner`'s editor is not ready: 503 + Retry-After."""
    progress = html.escape((PROGRESS_PREFIX + owner.encode("ascii")).decode("ascii"))
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        "<title>Starting your editor\u2026</title>"
        '<noscript><meta http-equiv="refresh" content="5"></noscript>'
        f"<style>{_STYLE}</style></head><body><main>"
        "<h1>Starting your editor</h1>"
        f'<p id="status" role="status" aria-live="polite">{html.escape(message)}</p>'
        '<button id="retry" type="button" hidden>Try again</button>'
        "<noscript><p>This page reloads by itself every few seconds.</p></noscript>"
        f'<script src="{WAIT_SCRIPT_PATH.decode()}" data-progress="{progress}"></script>'
        "</main></body></html>"
    )
    return Answer(
        503,
        body.encode("utf-8"),
        b"text/html; charset=utf-8",
        ((b"retry-after", RETRY_AFTER), *_PAGE_HEADERS),
    )


def message_page(status: int, title: str, message: str) -> Answer:
    """A small HTML page for a navigation that cannot be served (no script at all)."""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body><main>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
        '<p><a href="/dashboard">Your dashboard</a></p></main></body></html>'
    )
    return Answer(status, body.encode("utf-8"), b"text/html; charset=utf-8", _PAGE_HEADERS)


class ProgressEvent(Protocol):
    """What the page needs of one of compute's progress events."""

    phase: str
    message: str
    failed: bool
    done: bool


class ProgressSource(Protocol):
    """The part of compute the progress stream reads (`ctx.compute`)."""

    def editor_address_nowait(self, user_id: str) -> tuple[str, int] | None: ...

    def state_nowait(self, user_id: str) -> Any: ...

    def subscribe_progress(
        self, user_id: str
    ) -> AbstractContextManager[trio.MemoryReceiveChannel[Any]]: ...


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream_progress(
    compute: ProgressSource,
    owner: str,
    send: Callable[[bytes], Awaitable[None]],
    *,
    poll: float = 0.5,
    heartbeat: float = 15.0,
    max_seconds: float = 600.0,
    reachable: Callable[[tuple[str, int]], Awaitable[bool]] | None = None,
) -> None:
    """Send `owner`'s progress as server-sent events until the editor is ready (`ready`), the
    start failed (`failed`), or `max_seconds` passed (the page's EventSource then reconnects).

    Readiness is also checked every `poll` seconds: a progress event may be missed (the
    subscription is bounded) or the editor may have become ready before the stream opened.
    `reachable(address)`, when given, must agree too: an editor that crashed is still "ready"
    for compute until compute notices, and announcing it would reload the page into the same
    failure.
    """
    with compute.subscribe_progress(owner) as events:
        state = compute.state_nowait(owner)
        phase, message = str(state.phase), str(state.message or "")
        await send(sse("progress", {"phase": phase, "message": message}))
        if phase == PHASE_FAILED and state.operation is None:
            await send(sse("failed", {"message": message}))
            return
        start = trio.current_time()
        quiet_since = start
        while True:
            address = compute.editor_address_nowait(owner)
            if address is not None and (reachable is None or await reachable(address)):
                await send(sse("ready", {}))
                return
            now = trio.current_time()
            if now - start >= max_seconds:
                return
            event: ProgressEvent | None = None
            with trio.move_on_after(poll):
                event = await events.receive()
            if event is None:
                if trio.current_time() - quiet_since >= heartbeat:
                    quiet_since = trio.current_time()
                    await send(b": keep-alive\n\n")
                continue
            quiet_since = trio.current_time()
            await send(sse("progress", {"phase": event.phase, "message": event.message}))
            if event.failed and event.done:
                await send(sse("failed", {"message": event.message}))
                return

