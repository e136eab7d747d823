"""Notices changes to the user's markdown files and publishes them to the hub.

Saves made through the editor are announced at once (`note_saved`); anything else — the runtime
writing a file, another program — is found by polling the files' versions every second, and
only while someone listens, so an idle editor does no work.

Messages: `{"type": "files", "changes": [{"path", "change": "created"|"modified"|"deleted",
"version", "by"}]}` — `version` is null for a deletion, `by` the user who saved through the
editor (null when the change was found by polling).
"""

from __future__ import annotations

import trio

from markco_editor.hub import Hub
from markco_editor.workspace import FileEntry, Workspace

__all__ = ["FileWatcher"]


class FileWatcher:
    """Polls a workspace's markdown files for changes while the hub has subscribers."""

    def __init__(self, workspace: Workspace, hub: Hub, *, interval: float = 1.0) -> None:
        self._workspace = workspace
        self._hub = hub
        self._interval = interval
        # path -> version; None while nobody listens (a new listener fetches the listing).
        self._known: dict[str, str] | None = None
        self._saves = 0
        self._watching = trio.Event()

    def note_saved(self, entry: FileEntry, *, created: bool, by: str | None) -> None:
        """Announce a save made through the editor, without waiting for the next poll."""
        self._saves += 1
        if self._known is not None:
            self._known[entry.path] = entry.version
        change = "created" if created else "modified"
        self._hub.publish(
            {"type": "files", "changes": [_change(entry.path, change, entry.version, by)]}
        )

    async def wait_watching(self) -> None:
        """Return once the files have been looked at: any change after this is notified."""
        await self._watching.wait()

    async def run(self) -> None:
        """Poll forever: every `interval` seconds while subscribed, idle otherwise."""
        while True:
            if self._hub.subscriber_count == 0:
                self._known = None
                if self._watching.is_set():
                    self._watching = trio.Event()
                await self._hub.wait_subscribed()
            saves = self._saves
            listing = await trio.to_thread.run_sync(self._workspace.list_markdown)
            if saves != self._saves:
                continue  # a save raced the scan, which may predate it: look again
            current = {e.path: e.version for e in listing.files}
            if self._known is not None:
                changes = _diff(self._known, current)
                if changes:
                    self._hub.publish({"type": "files", "changes": changes})
            self._known = current
            self._watching.set()
            await trio.sleep(self._interval)


def _diff(before: dict[str, str], after: dict[str, str]) -> list[dict[str, object]]:
    changes = []
    for path, version in after.items():
        old = before.get(path)
        if old is None:
            changes.append(_change(path, "created", version, None))
        elif old != version:
            changes.append(_change(path, "modified", version, None))
    changes.extend(_change(p, "deleted", None, None) for p in before if p not in after)
    changes.sort(key=lambda c: str(c["path"]))
    return changes


def _change(path: str, change: str, version: str | None, by: str | None) -> dict[str, object]:
    return {"path": path, "change": change, "version": version, "by": by}
