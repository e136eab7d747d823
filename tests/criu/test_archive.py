"""The criu checkpointer's archive file on its own (no CRIU, no root): extraction checks the
body against the trailer and the whole file against the sha256 recorded when it was made, in
the one pass that reads it, and refuses what does not match — including an archive forged to
vouch for itself (its body changed and its trailer's checksum rewritten to match)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from markco_criu import archive

from markco_trio.errors import RestoreIncompatible

FORMAT = "markco-process-checkpoint/1"


def make_archive(tmp_path: Path) -> tuple[Path, dict[str, bytes], str]:
    """An archive of three image files; (its path, the files, its sha256 as reported)."""
    images = tmp_path / "images"
    images.mkdir()
    files = {"core-1.img": os.urandom(3000), "pages-1.img": os.urandom(5 * 4096 + 17),
             "inventory.img": b"inv"}
    for name, data in files.items():
        (images / name).write_bytes(data)
    path = tmp_path / "sleep.img"
    size, digest = archive.write_archive(images, {"format": FORMAT, "workload": {"user": "u"}},
                                         path)
    assert size == path.stat().st_size
    return path, files, digest


def extract(path: Path, dest: Path, sha256: str | None) -> None:
    dest.mkdir()
    manifest = archive.read_manifest(path, (FORMAT,))
    archive.extract_archive(path, manifest, dest, sha256=sha256)


def rewrite(path: Path, body: bytes, manifest: dict[str, Any]) -> None:
    """Replace the archive by `body` and a trailer whose checksum matches it (a forgery)."""
    manifest = {**manifest, "body_sha256": hashlib.sha256(body).hexdigest(),
                "body_bytes": len(body)}
    path.write_bytes(body + archive.trailer(manifest))


def test_the_reported_sha256_is_the_files_and_extraction_checks_it(tmp_path: Path) -> None:
    path, files, digest = make_archive(tmp_path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    extract(path, tmp_path / "out", digest)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == files


def test_the_single_pass_gives_the_body_and_the_whole_files_digests(tmp_path: Path) -> None:
    path, _, digest = make_archive(tmp_path)
    manifest = archive.read_manifest(path, (FORMAT,))
    body, whole = archive._digests(path, int(manifest["body_bytes"]))
    assert (body, whole) == (manifest["body_sha256"], digest)


def test_an_archive_that_is_not_the_recorded_one_is_refused(tmp_path: Path) -> None:
    path, _, _ = make_archive(tmp_path)
    with pytest.raises(RestoreIncompatible, match="damaged: its sha256"):
        extract(path, tmp_path / "out", hashlib.sha256(b"another archive").hexdigest())


def flip_a_body_byte(path: Path) -> None:
    """Damage the archive's body (a byte of its first image file's content)."""
    data = bytearray(path.read_bytes())
    data[2000] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_body_is_refused_by_the_recorded_sha256(tmp_path: Path) -> None:
    path, _, digest = make_archive(tmp_path)
    flip_a_body_byte(path)
    with pytest.raises(RestoreIncompatible, match="damaged: its sha256"):
        extract(path, tmp_path / "out", digest)


def test_a_forged_archive_vouching_for_itself_is_refused(tmp_path: Path) -> None:
    """Its body changed and its trailer's checksum rewritten to match: the trailer is content
    like any other; only the digest recorded outside the archive catches it."""
    path, _, digest = make_archive(tmp_path)
    manifest = archive.read_manifest(path, (FORMAT,))
    body = bytearray(path.read_bytes()[:int(manifest["body_bytes"])])
    body[2000] ^= 0xFF
    rewrite(path, bytes(body), manifest)
    archive.read_manifest(path, (FORMAT,))  # a well-formed archive, self-consistent
    with pytest.raises(RestoreIncompatible, match="damaged: its sha256"):
        extract(path, tmp_path / "out", digest)


def test_a_changed_trailer_is_refused_by_the_recorded_sha256(tmp_path: Path) -> None:
    """The manifest says whose runtime it is and what it depends on: changing it (the body
    untouched) is refused too."""
    path, _, digest = make_archive(tmp_path)
    manifest = archive.read_manifest(path, (FORMAT,))
    body = path.read_bytes()[:int(manifest["body_bytes"])]
    rewrite(path, body, {**manifest, "workload": {"user": "someone else"}})
    assert archive.read_manifest(path, (FORMAT,))["workload"] == {"user": "someone else"}
    with pytest.raises(RestoreIncompatible, match="damaged: its sha256"):
        extract(path, tmp_path / "out", digest)


def test_without_a_recorded_sha256_the_trailer_still_checks_the_body(tmp_path: Path) -> None:
    path, _, _ = make_archive(tmp_path)
    flip_a_body_byte(path)
    with pytest.raises(RestoreIncompatible, match="does not match the sha256 recorded in it"):
        extract(path, tmp_path / "out", None)
