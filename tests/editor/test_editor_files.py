"""The editor's file API: list, open, save, create — markdown files of the user's directory."""

from __future__ import annotations

import os
from pathlib import Path

import httpx


def write(root: Path, rel: str, text: str = "# x\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


async def test_health_answers_200_json(editor: httpx.AsyncClient) -> None:
    resp = await editor.get("/health")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["status"] == "ok"


async def test_listing_shows_markdown_files_recursively_and_skips_hidden_and_tooling(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    for rel in ["welcome.md", "Projects/demo/notes.md", "Projects/demo/README.markdown",
                ".hidden/secret.md", "_drafts/draft.md", ".venv/lib/doc.md",
                "node_modules/pkg/readme.md", ".dotfile.md", "data.csv", "script.py"]:
        write(user_dir, rel)
    resp = await editor.get("/api/files")
    assert resp.status_code == 200
    paths = [f["path"] for f in resp.json()["files"]]
    assert paths == ["Projects/demo/README.markdown", "Projects/demo/notes.md", "welcome.md"]
    assert resp.json()["truncated"] is False


async def test_listing_skips_symlinks_that_lead_outside(
    editor: httpx.AsyncClient, user_dir: Path, tmp_path: Path
) -> None:
    outside = write(tmp_path / "outside", "secret.md")
    (user_dir / "escape.md").symlink_to(outside)
    (user_dir / "linked-dir").symlink_to(outside.parent, target_is_directory=True)
    write(user_dir, "real.md")
    (user_dir / "alias.md").symlink_to(user_dir / "real.md")
    paths = [f["path"] for f in (await editor.get("/api/files")).json()["files"]]
    assert paths == ["alias.md", "real.md"]


async def test_open_returns_content_and_version(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    write(user_dir, "Projects/a b/notes.md", "# Notes\n\nhéllo\n")
    resp = await editor.get("/api/files/Projects/a%20b/notes.md")
    assert resp.status_code == 200
    body = resp.json()
    assert body["path"] == "Projects/a b/notes.md"
    assert body["content"] == "# Notes\n\nhéllo\n"
    assert body["size"] == len("# Notes\n\nhéllo\n".encode())
    assert body["version"] and resp.headers["etag"] == f'"{body["version"]}"'


async def test_open_missing_file_is_404_json(editor: httpx.AsyncClient) -> None:
    resp = await editor.get("/api/files/nope.md")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


async def test_save_writes_content_to_disk_atomically(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    target = write(user_dir, "doc.md", "old\n")
    inode_before = target.stat().st_ino
    version = (await editor.get("/api/files/doc.md")).json()["version"]
    resp = await editor.put("/api/files/doc.md", json={"content": "new\n", "baseVersion": version})
    assert resp.status_code == 200
    assert target.read_text() == "new\n"
    # Renamed into place (a new inode), and no temporary file left behind.
    assert target.stat().st_ino != inode_before
    assert sorted(os.listdir(user_dir)) == ["doc.md"]
    assert resp.json()["version"] != version


async def test_save_keeps_the_files_permissions(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    target = write(user_dir, "doc.md")
    target.chmod(0o600)
    await editor.put("/api/files/doc.md", json={"content": "x"})
    assert target.stat().st_mode & 0o777 == 0o600


async def test_save_with_a_stale_version_is_refused_with_409(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    target = write(user_dir, "doc.md", "mine\n")
    version = (await editor.get("/api/files/doc.md")).json()["version"]
    target.write_text("someone else's\n")  # changed on disk after it was opened
    resp = await editor.put("/api/files/doc.md", json={"content": "x", "baseVersion": version})
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "conflict"
    assert target.read_text() == "someone else's\n"


async def test_save_without_a_version_overwrites(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    target = write(user_dir, "doc.md", "old\n")
    resp = await editor.put("/api/files/doc.md", json={"content": "last write wins\n"})
    assert resp.status_code == 200
    assert target.read_text() == "last write wins\n"


async def test_save_to_a_new_path_creates_it_and_its_folders(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    resp = await editor.put("/api/files/Projects/new/page.md", json={"content": "# New\n"})
    assert resp.status_code == 201
    assert (user_dir / "Projects/new/page.md").read_text() == "# New\n"


async def test_create_makes_a_new_file(editor: httpx.AsyncClient, user_dir: Path) -> None:
    resp = await editor.post("/api/files", json={"path": "Projects/idea.md", "content": "# I\n"})
    assert resp.status_code == 201
    assert resp.json()["path"] == "Projects/idea.md"
    assert (user_dir / "Projects/idea.md").read_text() == "# I\n"


async def test_create_refuses_an_existing_file_with_409(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    target = write(user_dir, "taken.md", "keep me\n")
    resp = await editor.post("/api/files", json={"path": "taken.md", "content": "no"})
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "exists"
    assert target.read_text() == "keep me\n"


async def test_non_markdown_files_are_refused(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    write(user_dir, "script.py", "print(1)\n")
    for resp in [
        await editor.get("/api/files/script.py"),
        await editor.put("/api/files/script.py", json={"content": "x"}),
    ]:
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "not_markdown"
    assert (user_dir / "script.py").read_text() == "print(1)\n"


async def test_malformed_save_body_is_a_400_json_error(editor: httpx.AsyncClient) -> None:
    resp = await editor.put("/api/files/doc.md", content=b"not json")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "bad_json"
    resp = await editor.put("/api/files/doc.md", json={"content": 42})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "bad_request"


async def test_wrong_method_is_405_with_allow(editor: httpx.AsyncClient) -> None:
    resp = await editor.delete("/api/files/doc.md")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, PUT"
