"""Evidence of an OOM kill in the kernel log, for engines that do not report one.

Podman 4 on a cgroup v1 host reports a container killed by its memory limit as a plain exit
137 with `OOMKilled: false` (conmon misses the event). The kernel does not: its log says
`oom-kill:... oom_memcg=/.../libpod-<container id>` (Docker: `.../docker/<id>`). Reading it
needs the daemon on the engine's host and permission to read `/dev/kmsg`; without either the
exit is reported as a crash, which is still true, only less precise.
"""

from __future__ import annotations

import errno
import os

KMSG = "/dev/kmsg"
_MAX_RECORDS = 200_000  # the ring buffer is bounded; this is a guard against a runaway loop


def kernel_log_records(path: str = KMSG) -> list[str]:
    """Every record the kernel log still holds (non-blocking; empty when it cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return []
    records: list[str] = []
    try:
        while len(records) < _MAX_RECORDS:
            try:
                chunk = os.read(fd, 8192)
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # a record was overwritten while we read: go on
                    continue
                break  # EAGAIN: read everything there is
            if not chunk:
                break
            records.append(chunk.decode("utf-8", errors="replace"))
    finally:
        os.close(fd)
    return records


def oom_killed_in(records: list[str], container_id: str) -> bool:
    """Whether the kernel log records an OOM kill inside the memory cgroup of `container_id`."""
    for record in records:
        if "oom-kill:" in record and container_id in record:
            _, _, fields = record.partition("oom-kill:")
            for field in fields.split(","):
                key, _, value = field.partition("=")
                if key.strip() in ("oom_memcg", "task_memcg") and container_id in value:
                    return True
    return False


def kernel_reports_oom(container_id: str, path: str = KMSG) -> bool:
    """Whether this host's kernel log says the container was OOM-killed (False when unknown)."""
    return oom_killed_in(kernel_log_records(path), container_id)
