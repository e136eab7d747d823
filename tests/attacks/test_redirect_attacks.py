"""Open-redirect and header-injection attacks on the redirects that take part of the request:
the case-insensitive `/@user/<project>` redirect (publish) with crafted paths and queries, over
real HTTP to a real daemon; `/login?next=` is covered value by value in
tests/ops/test_login_next.py."""

from __future__ import annotations

import pytest

from tests.auth.conftest import Markco, StartMarkco
from tests.events.test_events_api import QUIET

from .raw import get, raw_request

CRAFTED = [
    b"/@ALICE/NOTES//evil.test",
    b"/@ALICE/NOTES/%2F%2Fevil.test",
    b"/@ALICE/NOTES/%5C%5Cevil.test",
    b"/@ALICE/NOTES/\\\\evil.test",
    b"/@ALICE/NOTES/../../..//evil.test",
    b"/@ALICE/NOTES/%0d%0aSet-Cookie:%20x=1",
    b"/@ALICE/NOTES?%0d%0aSet-Cookie:%20x=1",
    b"/@ALICE/NOTES?\xff\xfe",
    b"/@ALICE/NOTES/\xc3\xa9",
    b"/@ALICE/NOTES?next=//evil.test",
]


@pytest.fixture
async def markco(start_markco: StartMarkco) -> Markco:
    markco = await start_markco(auth=QUIET)
    alice = await markco.user("alice")
    project = markco.daemon.config.data_dir / "users" / alice.id / "Projects" / "notes"
    project.mkdir(parents=True)
    (project / "mrmd.md").write_text("---\nvisibility: public\n---\n")
    (project / "index.md").write_text("# Notes\n")
    return markco


async def test_a_crafted_project_path_redirects_only_within_the_project(
        markco: Markco) -> None:
    host = markco.url.removeprefix("http://")
    assert (await raw_request(markco.url, get(b"/@alice/notes", host)))[0] == 200
    for target in CRAFTED:
        status, headers = await raw_request(markco.url, get(target, host))
        assert status in (302, 400, 404), (target, status)
        assert "set-cookie" not in headers, target
        if status == 302:
            location = headers["location"]
            assert location.startswith("/@alice/notes"), (target, location)
            assert all(0x20 < ord(c) < 0x7F for c in location), (target, location)
