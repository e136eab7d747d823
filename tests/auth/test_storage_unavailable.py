"""A storage that cannot write — a full disk, a database gone read-only — is a 503 naming the
cause, one log line per failed request, and a `/readyz` that says so (issue 11, defect 3).
Faults are real: a small tmpfs filled up, an ext4 file system remounted read-only by the kernel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from markco_trio import daemon as daemon_module
from markco_trio.builtin.auth.login_links import issue_login_link
from markco_trio.testing.fault_injection import ext4_image, fail_into_read_only, fill, small_tmpfs

from .conftest import StartMarkco, eventually

pytestmark = pytest.mark.system


@pytest.fixture
def full_disk_data(tmp_path: Path) -> Iterator[Path]:
    """The daemon's data dir (`data` next to its config) on an 8 MB tmpfs."""
    with small_tmpfs(tmp_path / "data") as data:
        yield data


@pytest.fixture
def fast_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_module, "STORAGE_PING_SECONDS", 0.05)


async def test_creating_a_token_on_a_full_disk_is_a_503_naming_the_cause(
        start_markco: StartMarkco, full_disk_data: Path) -> None:
    markco = await start_markco()
    alice = await markco.login_as("alice")
    fill(full_disk_data)
    answer = await alice.post("/api/v1/tokens", headers=markco.origin(),
                              json={"name": "ci", "scopes": ["user"]})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "30"
    error = answer.json()["error"]
    assert error["code"] == "storage_unavailable" and "disk full" in error["message"]


async def test_a_storage_failure_is_one_log_line_without_a_traceback(
        start_markco: StartMarkco, full_disk_data: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    markco = await start_markco()
    alice = await markco.login_as("alice")
    fill(full_disk_data)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        await alice.post("/api/v1/tokens", headers=markco.origin(),
                         json={"name": "ci", "scopes": ["user"]})
    about_it = [r for r in caplog.records if r.name.startswith("markco")
                and "POST /api/v1/tokens" in r.getMessage()]
    assert len(about_it) == 1 and "disk full" in about_it[0].getMessage()
    assert [r for r in caplog.records if r.exc_info] == []


async def test_readyz_reports_a_storage_that_cannot_write_and_its_recovery(
        start_markco: StartMarkco, full_disk_data: Path, fast_probe: None) -> None:
    markco = await start_markco()
    client = markco.client()
    filler = fill(full_disk_data)

    async def readyz() -> tuple[int, list[str]]:
        answer = await client.get("/readyz")
        return answer.status_code, answer.json()["waiting_for"]

    async def not_ready() -> bool:
        return await readyz() == (503, ["storage: disk full"])

    async def ready() -> bool:
        return (await readyz())[0] == 200

    await eventually(not_ready, within=10)
    filler.unlink()
    await eventually(ready, within=10)


async def test_a_login_on_a_database_gone_read_only_is_a_503_page(
        start_markco: StartMarkco, tmp_path: Path) -> None:
    with ext4_image(tmp_path / "data") as data:
        markco = await start_markco()
        user = await markco.user("ada")
        link = await issue_login_link(markco.storage, markco.clock, user,
                                      public_url=markco.url, minutes=10)
        fail_into_read_only(data)
        page = await markco.client().get(link)
        assert page.status_code == 503 and "text/html" in page.headers["content-type"]
        assert "database is read-only" in page.text
