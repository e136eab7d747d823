"""scripts/fetch-editor-ui: the mrmd UI is installed only as the pinned, hash-checked npm
tarballs say, never outside its directory, and a cached install needs no network."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fetch-editor-ui"


@pytest.fixture(scope="module")
def fetcher() -> ModuleType:
    loader = SourceFileLoader("fetch_editor_ui", str(SCRIPT))
    module = ModuleType(loader.name)
    loader.exec_module(module)
    return module


def tarball(*members: tuple[str, bytes | None, bytes]) -> bytes:
    """An npm-style .tgz: (name, file bytes or None, tar type)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "/etc/passwd"
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))
    return out.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_a_tarball_whose_hash_differs_is_refused(fetcher: ModuleType) -> None:
    data = tarball(("package/index.html", b"<html>", tarfile.REGTYPE))
    fetcher.check_integrity(data, integrity(data), "ok")
    with pytest.raises(fetcher.FetchError, match="integrity mismatch"):
        fetcher.check_integrity(data + b"x", integrity(data), "mrmd-electron@0.5.4")


@pytest.mark.parametrize("member", [
    ("package/../../evil.js", b"x", tarfile.REGTYPE),
    ("/package/evil.js", b"x", tarfile.REGTYPE),
    ("package/link", None, tarfile.SYMTYPE),
])
def test_a_tarball_member_that_could_escape_is_refused(
        fetcher: ModuleType, tmp_path: Path, member: tuple[str, bytes | None, bytes]) -> None:
    data = tarball(("package/index.html", b"<html>", tarfile.REGTYPE), member)
    with pytest.raises(fetcher.FetchError, match="refusing|not a plain file"):
        fetcher.unpack(data, tmp_path / "ui", "hostile")
    assert not (tmp_path / "evil.js").exists() and not (tmp_path / "ui" / "link").exists()


def test_a_cached_install_needs_no_network(fetcher: ModuleType, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / fetcher.STAMP).write_text(fetcher.stamp_text())

    def no_network(url: str) -> bytes:
        raise AssertionError(f"downloaded {url}")

    monkeypatch.setattr(fetcher, "download", no_network)
    assert fetcher.fetch(dest) is False


def test_a_failed_fetch_leaves_the_existing_cache_alone(
        fetcher: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "index.html").write_text("old")
    monkeypatch.setattr(fetcher, "download", lambda url: b"not the pinned tarball")
    with pytest.raises(fetcher.FetchError):
        fetcher.fetch(dest)
    assert (dest / "index.html").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]  # no staging directory left
