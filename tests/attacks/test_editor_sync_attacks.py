"""Attacks on the mrmd editor's Yjs sync endpoint (`/sync/<doc>`) by a client of the editor
(anyone let into it may connect; a hostile notebook output in a collaborator's browser too):
malformed y-websocket messages must cost the attacker their own
connection only — the editor keeps serving every other document, and keeps saving edits.

The editor runs in-process, as in tests/editor (the same contract environment)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from markco_editor import EditorSettings, serve_editor
from trio_websocket import ConnectionClosed, open_websocket_url

HELLO = b"\x00\x00\x01\x00"  # sync step 1 with an empty state vector: "send me everything"
MALFORMED = [
    b"",                                   # nothing at all
    b"\xff",                               # an unknown message type
    b"\x00",                               # a sync message without its kind
    b"\x00\x02",                           # an update without its length
    b"\x00\x02\xff\xff\xff\xff\x0f",       # a length of 4 GiB, no bytes
    b"\x00\x02\x05abc",                    # a length longer than the message
    b"\x00\x02\x04\x00\x00\x00\x00",       # an update that is not an update
    b"\x00\x02\x03\xff\xff\xff",
    b"\x01\xff\xff\xff\xff\x0f",           # awareness with an absurd length
    b"\x01\x05\x01\x01\x01\x03{x}",        # awareness with invalid JSON
    b"\x00\x09\x00",                       # an unknown sync kind
]


@pytest.fixture
async def editor(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[str]:
    user_dir = tmp_path / "users" / "alice"
    project = user_dir / "Projects" / "Scratch"
    project.mkdir(parents=True)
    (project / "mrmd.md").write_text("---\ntitle: Scratch\n---\n# Scratch\n")
    (project / "01-welcome.md").write_text("# Welcome\n\nHello.\n")
    (project / "02-other.md").write_text("# Other\n\nOther text.\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CLOUD_MODE": "1",
           "HOST": "127.0.0.1", "PORT": "0", "BASE_PATH": "/u/alice/",
           "MARKCO_USER_DIR": str(user_dir), "CLOUD_USER_ID": "alice",
           "CLOUD_USER_NAME": "Alice", "CLOUD_USER_USERNAME": "alice",
           "CLOUD_USER_EMAIL": "alice@example.org", "CLOUD_USER_AVATAR": "",
           "CLOUD_USER_PLAN": "free"}
    port = await nursery.start(serve_editor, EditorSettings.from_environ(env))
    yield f"ws://127.0.0.1:{port}"


async def read_document(ws: Any) -> bytes:
    await ws.send_message(HELLO)
    with trio.fail_after(5):
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes) and message[:2] == b"\x00\x01":
                return message


async def still_serves(base: str) -> None:
    """Both documents still open and answer with their text."""
    for doc, text in (("01-welcome", b"Hello."), ("02-other", b"Other text.")):
        async with open_websocket_url(f"{base}/sync/Projects/Scratch/{doc}") as ws:
            assert text in await read_document(ws)
    async with httpx.AsyncClient(base_url="http" + base.removeprefix("ws"), timeout=5) as http:
        assert (await http.get("/health")).status_code == 200


async def test_malformed_sync_messages_break_only_the_senders_connection(editor: str) -> None:
    async with open_websocket_url(f"{editor}/sync/Projects/Scratch/02-other") as bystander:
        assert b"Other text." in await read_document(bystander)
        for bad in MALFORMED:
            with trio.move_on_after(2):
                async with open_websocket_url(
                        f"{editor}/sync/Projects/Scratch/01-welcome") as ws:
                    await read_document(ws)
                    try:
                        await ws.send_message(bad)
                        await ws.send_message(HELLO)
                        await ws.get_message()
                    except ConnectionClosed:
                        pass
        # The bystander's connection, in another room, still works.
        assert b"Other text." in await read_document(bystander)
    await still_serves(editor)
