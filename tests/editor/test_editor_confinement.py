"""Every file path is confined to the user's directory: each way out is refused with a JSON 4xx
and nothing is read or written outside."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from editor_testing import RawRequest

# URL paths after /api/files/ that try to leave the directory, as a client would send them
# (percent-encoded: httpx would normalise a literal `..` away before sending).
ESCAPES = [
    "%2e%2e/outside/secret.md",  # ..
    "Projects/%2E%2E/%2E%2E/outside/secret.md",  # .. further down
    "%2Ftmp%2Fsecret.md",  # absolute, encoded slash
    "/tmp/secret.md",  # absolute through an empty segment
    "..%5Coutside%5Csecret.md",  # backslashes
    "secret%00.md",  # NUL
    ".%2Fsecret.md",  # a '.' segment
]


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the user's, holding a file no request may touch."""
    path = tmp_path / "users" / "outside"
    path.mkdir(parents=True)
    (path / "secret.md").write_text("secret\n")
    return path


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.iterdir())}


def written_anywhere(root: Path, marker: str) -> bool:
    return any(marker in p.read_text() for p in root.rglob("*.md") if p.is_file())


@pytest.mark.parametrize("escape", ESCAPES)
async def test_traversal_is_refused_for_reads(
    editor: httpx.AsyncClient, outside: Path, escape: str
) -> None:
    resp = await editor.get("/api/files/" + escape)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "bad_path"
    assert "secret\n" not in resp.text


@pytest.mark.parametrize("escape", ESCAPES)
async def test_traversal_is_refused_for_writes_and_nothing_is_written_outside(
    editor: httpx.AsyncClient, outside: Path, tmp_path: Path, escape: str
) -> None:
    before = snapshot(outside)
    resp = await editor.put("/api/files/" + escape, json={"content": "pwned"})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "bad_path"
    resp = await editor.post("/api/files", json={"path": escape.replace("%2F", "/")
                                                 .replace("%2e", ".").replace("%2E", ".")
                                                 .replace("%5C", "\\").replace("%00", "\0"),
                                                 "content": "pwned"})
    assert resp.status_code == 400
    assert snapshot(outside) == before
    assert not written_anywhere(tmp_path, "pwned")


async def test_a_literal_dotdot_in_the_request_line_is_refused(
    editor: httpx.AsyncClient, outside: Path, raw_request: RawRequest
) -> None:
    port = editor.base_url.port
    assert port is not None
    status, body = await raw_request(
        port,
        "GET /api/files/../outside/secret.md HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Connection: close\r\n\r\n",
    )
    assert status == 400
    assert b"secret\n" not in body


async def test_a_symlink_to_a_file_outside_is_refused(
    editor: httpx.AsyncClient, user_dir: Path, outside: Path
) -> None:
    (user_dir / "escape.md").symlink_to(outside / "secret.md")
    before = snapshot(outside)
    resp = await editor.get("/api/files/escape.md")
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "outside_workspace"
    resp = await editor.put("/api/files/escape.md", json={"content": "pwned"})
    assert resp.status_code == 403
    assert snapshot(outside) == before


async def test_a_symlinked_folder_leading_outside_is_refused(
    editor: httpx.AsyncClient, user_dir: Path, outside: Path
) -> None:
    (user_dir / "shared").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    assert (await editor.get("/api/files/shared/secret.md")).status_code == 403
    resp = await editor.put("/api/files/shared/new.md", json={"content": "pwned"})
    assert resp.status_code == 403
    resp = await editor.post("/api/files", json={"path": "shared/new2.md", "content": "pwned"})
    assert resp.status_code == 403
    assert snapshot(outside) == before


async def test_a_symlink_inside_the_directory_is_followed(
    editor: httpx.AsyncClient, user_dir: Path
) -> None:
    (user_dir / "real.md").write_text("real\n")
    (user_dir / "alias.md").symlink_to(user_dir / "real.md")
    assert (await editor.get("/api/files/alias.md")).json()["content"] == "real\n"
    await editor.put("/api/files/alias.md", json={"content": "through the link\n"})
    assert (user_dir / "alias.md").is_symlink()  # the link survives a save
    assert (user_dir / "real.md").read_text() == "through the link\n"


async def test_hidden_paths_are_refused(editor: httpx.AsyncClient, user_dir: Path) -> None:
    (user_dir / ".config").mkdir()
    resp = await editor.put("/api/files/.config/x.md", json={"content": "x"})
    assert resp.status_code == 400
    assert not (user_dir / ".config" / "x.md").exists()
