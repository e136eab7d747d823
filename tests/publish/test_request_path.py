"""Parsing raw request paths: split first, decode once, refuse anything that is not a name."""

from __future__ import annotations

import pytest

from markco_trio.builtin.publish.request_path import PublishPath, parse_publish_path


def test_a_page_path_is_split_into_user_project_and_segments() -> None:
    assert parse_publish_path("/@alice/notes/getting-started/installation") == PublishPath(
        "alice", "notes", ("getting-started", "installation"))


def test_usernames_are_case_insensitive() -> None:
    assert parse_publish_path("/@Alice/notes") == PublishPath("alice", "notes", ())


def test_empty_segments_and_trailing_slashes_are_dropped() -> None:
    assert parse_publish_path("/@alice/notes//a/") == PublishPath("alice", "notes", ("a",))


def test_segments_are_decoded_once() -> None:
    assert parse_publish_path("/@alice/My%20Notes/caf%C3%A9/%252e%252e") == PublishPath(
        "alice", "My Notes", ("café", "%2e%2e"))


def test_a_user_page() -> None:
    assert parse_publish_path("/@alice") == PublishPath("alice", None)
    assert parse_publish_path("/@alice/") == PublishPath("alice", None)


@pytest.mark.parametrize("raw", [
    "/@alice/notes/..", "/@alice/notes/.", "/@alice/notes/a/../b", "/@alice/%2e%2e/x",
    "/@alice/notes/%2E%2E/x", "/@alice/notes/a%2Fb", "/@alice/notes/a%2fb", "/@alice/notes%2F..",
    "/@al%2Fice/notes", "/@alice/notes/a%5Cb", "/@alice/notes/a\\b", "/@alice/notes/%00",
    "/@alice/notes/a%0Ab", "/@alice/notes/%FF", "/@alice/.git", "/@alice/_private",
    "/@alice//notes", "/@", "/@/x", "/@../x", "/@-x/y", "/alice/notes", "@alice/notes",
    "/@" + "a" * 33 + "/x", "/@alice/" + "n" * 256, "/@alice/x/" + "/a" * 40,
])
def test_anything_that_is_not_plain_names_is_refused(raw: str) -> None:
    assert parse_publish_path(raw) is None
