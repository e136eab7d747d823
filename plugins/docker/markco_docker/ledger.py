"""What the backend must remember about its containers that the engines do not keep.

- Which run of a container it was asked to stop: an engine reports a stopped container and a
  crashed one alike (a runtime stopped with SIGKILL exits 137, like one killed by the kernel),
  and markco must not count a stop as a crash, even after a daemon restart.
- Limits changed on a running container where the engine does not persist them (Podman 4's
  live update changes the cgroup, not the container's configuration, so a restart would fall
  back to the old limits): they are applied again at the next start.

One small JSON file per container id under the backend's state directory, written atomically.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

_ID = re.compile(r"^[0-9a-f]{12,128}$")


@dataclass(frozen=True)
class Remembered:
    """What is remembered about one container."""

    stopped_run: str | None = None  # the engine's StartedAt of the run we stopped
    memory_bytes: int | None = None
    cpus: float | None = None


class Ledger:
    """The records, in `directory` (created on first write, mode 0700). Blocking file I/O:
    call it from a worker thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, container_id: str) -> Path:
        if not _ID.match(container_id):
            raise ValueError(f"not a container id: {container_id!r}")
        return self.directory / f"{container_id}.json"

    def get(self, container_id: str) -> Remembered:
        """The record of `container_id` (an empty one when there is none or it is unreadable)."""
        path = self._path(container_id)
        try:
            data = json.loads(path.read_text())
            return Remembered(stopped_run=data.get("stopped_run"),
                              memory_bytes=data.get("memory_bytes"), cpus=data.get("cpus"))
        except (OSError, ValueError, AttributeError):
            return Remembered()

    def put(self, container_id: str, record: Remembered) -> None:
        """Replace the record of `container_id` atomically."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(container_id)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"stopped_run": record.stopped_run,
                                         "memory_bytes": record.memory_bytes,
                                         "cpus": record.cpus}))
        os.replace(temporary, path)

    def forget(self, container_id: str) -> None:
        """Drop the record of a removed container."""
        self._path(container_id).unlink(missing_ok=True)
