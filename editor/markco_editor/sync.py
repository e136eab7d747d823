"""The Yjs sync endpoint of the mrmd editor: one shared document per markdown file.

The mrmd UI opens a document with `mrmd.drive(url).open(docName)`, a standard Yjs
`WebsocketProvider` (the y-websocket protocol: sync and awareness messages) holding the text in
the `Y.Text` named `content`. This module is the server side, built on `pycrdt-websocket`
(anyio-based, so it runs on trio), with the file on disk as the document's persistence:

- A room opens with the file's text (`Workspace.read`: confined, markdown only).
- Edits are written back debounced (`SAVE_DELAY` after the last change, at most every
  `SAVE_DELAY_MAX` while typing goes on), atomically (`Workspace.write`: a temporary file renamed
  into place), and once more when the last client leaves.
- A change made outside (the user's own code, another program) is noticed by polling the file's
  version every `POLL_INTERVAL` while the room is open, and applied to the shared text as the
  smallest replacement (common prefix and suffix kept), so open editors see it live.

pycrdt is imported only when the first document opens: an editor that only answers `/health`
(markco wakes it often) starts without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from markco_editor.asgi import WebSocket
from markco_editor.workspace import FileEntry, Workspace, WorkspaceError

if TYPE_CHECKING:
    from pycrdt import Text
    from pycrdt.websocket import YRoom

__all__ = ["DocumentSync"]

log = logging.getLogger(__name__)

SAVE_DELAY = 0.3
SAVE_DELAY_MAX = 2.0
POLL_INTERVAL = 1.0


class _Channel:
    """A pycrdt `Channel` over an accepted WebSocket; `path` names the room (the file)."""

    def __init__(self, ws: WebSocket, path: str) -> None:
        self._ws = ws
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> bytes:
        data = await self._ws.receive_bytes()
        if data is None:
            raise StopAsyncIteration
        return data

    async def send(self, message: bytes) -> None:
        await self._ws.send_bytes(message)

    async def recv(self) -> bytes:
        return await self.__anext__()


class _FileBinding:
    """Keeps one room's `content` and its file in step (see the module doc)."""

    def __init__(self, workspace: Workspace, path: str, text: Text, entry: FileEntry,
                 on_saved: Callable[[FileEntry], None]) -> None:
        self.workspace = workspace
        self.path = path
        self.text = text
        self.version: str | None = entry.version
        self.saved_text = str(text)
        self.on_saved = on_saved
        self.changed = trio.Event()
        self.scope = trio.CancelScope()
        self._lock = trio.Lock()

    def note_change(self, _event: object) -> None:
        self.changed.set()

    async def run(self) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._saver)
                nursery.start_soon(self._poller)

    async def _saver(self) -> None:
        while True:
            await self.changed.wait()
            first = trio.current_time()
            # Debounce: wait for a pause in the typing, but not forever.
            while True:
                self.changed = trio.Event()
                with trio.move_on_after(SAVE_DELAY):
                    await self.changed.wait()
                    if trio.current_time() - first < SAVE_DELAY_MAX:
                        continue
                break
            await self.save()

    async def save(self) -> None:
        """Write the shared text to the file if it differs from what the file holds."""
        async with self._lock:
            content = str(self.text)
            if content == self.saved_text:
                return
            try:
                entry, _ = await trio.to_thread.run_sync(
                    lambda: self.workspace.write(self.path, content))
            except WorkspaceError as exc:
                log.warning("cannot save %s: %s", self.path, exc.message)
                return
            self.saved_text, self.version = content, entry.version
            self.on_saved(entry)

    async def _poller(self) -> None:
        while True:
            await trio.sleep(POLL_INTERVAL)
            async with self._lock:
                try:
                    entry, content = await trio.to_thread.run_sync(self.workspace.read,
                                                                     self.path)
                except WorkspaceError:
                    continue  # deleted or unreadable for now: the document stays as it is
                if entry.version == self.version:
                    continue
                self.version = entry.version
                if content == self.saved_text:
                    continue
                self.saved_text = content
                self._apply_outside_change(content)

    def _apply_outside_change(self, new: str) -> None:
        """Replace the shared text by `new` with the smallest edit (concurrent typing
        elsewhere in the document survives)."""
        old = str(self.text)
        start = 0
        limit = min(len(old), len(new))
        while start < limit and old[start] == new[start]:
            start += 1
        end_old, end_new = len(old), len(new)
        while end_old > start and end_new > start and old[end_old - 1] == new[end_new - 1]:
            end_old -= 1
            end_new -= 1
        doc = self.text.doc
        with doc.transaction():
            if end_old > start:
                del self.text[start:end_old]
            if end_new > start:
                self.text.insert(start, new[start:end_new])


def _close_update_stream(room: object) -> None:
    # pycrdt-websocket 0.16 leaves a room's update stream open when the room stops.
    stream = getattr(room, "_update_send_stream", None)
    if stream is not None:
        stream.close()


class DocumentSync:
    """The rooms of one editor: `serve(ws, path)` joins a WebSocket to the file's room."""

    def __init__(self, workspace: Workspace,
                 on_saved: Callable[[FileEntry], None] = lambda entry: None) -> None:
        self._workspace = workspace
        self._on_saved = on_saved
        self._needed = trio.Event()
        self._ready = trio.Event()
        self._server: Any = None
        self.bindings: dict[str, _FileBinding] = {}

    async def run(self) -> None:
        """The rooms' home: idle (pycrdt not even imported) until the first document opens."""
        await self._needed.wait()
        from pycrdt.websocket import WebsocketServer

        sync = self

        class Server(WebsocketServer):  # type: ignore[misc]
            async def get_room(self, name: str) -> YRoom:
                if name not in self.rooms:
                    self.rooms[name] = await sync._open_room(name, self)
                room: YRoom = self.rooms[name]
                await self.start_room(room)
                return room

            async def delete_room(self, *, name: str | None = None,
                                  room: YRoom | None = None) -> None:
                if name is None and room is not None:
                    name = self.get_room_name(room)
                binding = sync.bindings.pop(name or "", None)
                if binding is not None:
                    await binding.save()  # the last client left: nothing is lost
                    binding.scope.cancel()
                stopped = self.rooms.get(name or "")
                await super().delete_room(name=name)
                _close_update_stream(stopped)

        self._server = Server(rooms_ready=True, auto_clean_rooms=True, log=log)
        try:
            async with self._server:
                self._ready.set()
                await trio.sleep_forever()
        finally:
            # Stopping (SIGTERM: markco stops idle editors) must not lose the last keystrokes
            # still inside the save delay.
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await self.flush()
            for room in self._server.rooms.values():
                _close_update_stream(room)

    async def _open_room(self, path: str, server: Any) -> YRoom:
        from pycrdt import Text
        from pycrdt.websocket import YRoom

        entry, content = await trio.to_thread.run_sync(self._workspace.read, path)
        room = YRoom(ready=True, log=log)
        text = room.ydoc.get("content", type=Text)
        text += content
        binding = _FileBinding(self._workspace, path, text, entry, self._on_saved)
        room.ydoc.observe(binding.note_change)
        self.bindings[path] = binding
        server._task_group.start_soon(binding.run)
        return room

    async def serve(self, ws: WebSocket, path: str) -> None:
        """Serve one accepted WebSocket in the room of `path` (already checked: a markdown
        file inside the workspace) until it closes."""
        self._needed.set()
        await self._ready.wait()
        await self._server.serve(_Channel(ws, path))

    async def flush(self) -> None:
        """Save every open document now (shutdown)."""
        for binding in list(self.bindings.values()):
            await binding.save()
