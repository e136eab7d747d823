"""Real storage faults for tests: a small tmpfs that fills up, an ext4 file system (on a loop
device) that goes read-only the way a failing disk does (`errors=remount-ro`). Needs root (and
mount); tests skip otherwise. Everything mounted is unmounted, and every image removed, on the
way out.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .system import missing_system


def _need_root_and(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("fault injection mounts file systems: run as root")
    for tool in tools:
        if shutil.which(tool) is None:
            missing_system(tool, f"install {tool} (util-linux / e2fsprogs)")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@contextmanager
def small_tmpfs(path: Path, size: str = "8m", *, read_only: bool = False,
                make: tuple[str, ...] = ()) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (created), unmounted afterwards; the directories
    `make` are created in it, then it is remounted read-only if `read_only`."""
    _need_root_and("mount", "umount")
    path.mkdir(parents=True, exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        for name in make:
            (path / name).mkdir(parents=True)
        if read_only:
            _run("mount", "-o", "remount,ro", str(path))
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Write a file in `directory` until its file system is full; return the file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 20, 4 << 10, 1):  # big writes first, then the last few bytes
            chunk = b"\0" * size
            try:
                while True:
                    out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


@contextmanager
def ext4_image(path: Path, size_mb: int = 32) -> Iterator[Path]:
    """A fresh ext4 file system (on a loop device, `errors=remount-ro`) mounted at `path`."""
    _need_root_and("mount", "umount", "mkfs.ext4")
    image = path.with_name(path.name + ".img")
    path.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as out:
        out.truncate(size_mb << 20)
    try:
        _run("mkfs.ext4", "-q", "-F", str(image))
        _run("mount", "-o", "loop,errors=remount-ro", str(image), str(path))
        try:
            yield path
        finally:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
    finally:
        image.unlink(missing_ok=True)


def fail_into_read_only(path: Path) -> None:
    """Make the ext4 file system mounted at `path` hit an error, so the kernel remounts it
    read-only under the open files (as it does when a disk fails)."""
    source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(path)], check=True,
                            capture_output=True, text=True, timeout=30).stdout.strip()
    device = os.path.basename(os.path.realpath(source))
    Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("markco fault injection\n")
