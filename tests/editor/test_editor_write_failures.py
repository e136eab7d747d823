"""Saving when the system says no: a full disk, a read-only file system, a folder that refuses
writes, an I/O error. Each answers the editor's JSON error with a message the page shows, and
the file keeps its previous content (the write is atomic).

The user's directory is a tiny tmpfs the test mounts (root only) and unmounts at teardown, so
"disk full" is the kernel's own ENOSPC, not a mock."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from markco_editor import workspace

from markco_trio.testing.system import missing_system

TMPFS_BYTES = 64 * 1024
ORIGINAL = "# notes\n\nthe previous version\n"


@pytest.fixture
def user_dir(tmp_path: Path) -> Iterator[Path]:
    """The user's files on a 64 KiB tmpfs of their own, holding `notes.md`."""
    if os.geteuid() != 0:
        missing_system("root", "mounting a small tmpfs as a full disk needs root")
    path = tmp_path / "users" / "alice"
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0755",
                    "markco-test-userdir", str(path)], check=True)
    try:
        (path / "notes.md").write_text(ORIGINAL)
        yield path
    finally:
        if (path / "locked").exists():  # made immutable by a test
            subprocess.run(["chattr", "-i", str(path / "locked")], check=False)
        if subprocess.run(["umount", str(path)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(path)], check=True)


def fill(directory: Path) -> None:
    """Write a filler file until the file system is full (the kernel says ENOSPC)."""
    fd = os.open(directory / "filler.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as full:
            while True:
                os.write(fd, b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


def error_of(resp: httpx.Response) -> dict[str, str]:
    assert resp.headers["content-type"].startswith("application/json"), resp.text
    error: dict[str, str] = resp.json()["error"]
    assert error["message"]
    return error


async def test_saving_on_a_full_disk_is_a_507_saying_so_and_keeps_the_old_content(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    fill(user_dir)
    resp = await editor.put("/api/files/notes.md", json={"content": "x" * 100_000})
    assert resp.status_code == 507
    error = error_of(resp)
    assert error["code"] == "disk_full"
    assert "no space left" in error["message"] and "previous version is unchanged" in \
        error["message"]
    assert (user_dir / "notes.md").read_text() == ORIGINAL
    assert not [p for p in os.listdir(user_dir) if p.startswith(".markco-")]  # no temp left


async def test_creating_a_file_on_a_full_disk_is_a_507_and_creates_nothing(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    fill(user_dir)
    resp = await editor.post("/api/files", json={"path": "new.md", "content": "y" * 100_000})
    assert resp.status_code == 507
    assert "nothing was written" in error_of(resp)["message"]
    assert not (user_dir / "new.md").exists()


async def test_saving_on_a_read_only_file_system_is_a_503_read_only(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    await trio.run_process(["mount", "-o", "remount,ro", str(user_dir)])
    try:
        resp = await editor.put("/api/files/notes.md", json={"content": "changed"})
    finally:
        await trio.run_process(["mount", "-o", "remount,rw", str(user_dir)])
    assert resp.status_code == 503
    assert error_of(resp)["code"] == "read_only"
    assert (user_dir / "notes.md").read_text() == ORIGINAL


async def test_saving_into_a_folder_that_refuses_writes_is_a_403_permission_denied(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    locked = user_dir / "locked"
    locked.mkdir()
    (locked / "page.md").write_text(ORIGINAL)
    # Immutable: refused even to root (permission bits are not, for root).
    await trio.run_process(["chattr", "+i", str(locked)])
    resp = await editor.put("/api/files/locked/page.md", json={"content": "changed"})
    assert resp.status_code == 403
    error = error_of(resp)
    assert error["code"] == "permission_denied" and "permission" in error["message"].lower()
    assert (locked / "page.md").read_text() == ORIGINAL


async def test_an_io_error_while_saving_is_a_500_io_error_with_its_cause(
    editor: httpx.AsyncClient, user_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(workspace.os, "fsync", failing_fsync)
    resp = await editor.put("/api/files/notes.md", json={"content": "changed"})
    assert resp.status_code == 500
    error = error_of(resp)
    assert error["code"] == "io_error" and "Input/output error" in error["message"]
    monkeypatch.undo()
    assert (user_dir / "notes.md").read_text() == ORIGINAL


async def test_an_unexpected_failure_is_a_json_500_not_an_empty_body(
    editor: httpx.AsyncClient, user_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, path: str) -> object:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(workspace.Workspace, "read", broken)
    resp = await editor.get("/api/files/notes.md")
    assert resp.status_code == 500
    error = error_of(resp)
    assert error["code"] == "internal_error" and "something nobody expected" in \
        error["message"]


async def test_a_bad_path_is_a_json_400_naming_the_problem(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    resp = await editor.put("/api/files/notes.txt", json={"content": "x"})
    assert resp.status_code == 400
    assert error_of(resp)["code"] == "not_markdown"


async def test_the_page_shows_the_full_disk_message_when_a_save_fails(
    serve_in_process: Callable[..., Awaitable[str]], user_dir: Path, tmp_path: Path
) -> None:
    from markco_trio.testing.chromium import chromium

    base_url = await serve_in_process(BASE_PATH="/")  # no proxy in front to strip /u/alice/
    async with chromium(tmp_path / "chromium") as browser:
        await browser.call("Page.navigate", {"url": f"{base_url}/basic#notes.md"})
        await browser.wait_for("document.getElementById('source').value.includes("
                               "'the previous version')")
        fill(user_dir)
        await browser.evaluate("document.getElementById('source').value = 'x'.repeat(200000);"
                               "document.getElementById('save').click()")
        await browser.wait_for("!document.getElementById('banner').hidden && "
                               "document.getElementById('banner-text').textContent"
                               ".includes('no space left')")
        shown = await browser.evaluate("document.getElementById('banner-text').textContent")
    assert shown.startswith("Save failed: ") and "previous version is unchanged" in shown
    assert (user_dir / "notes.md").read_text() == ORIGINAL
