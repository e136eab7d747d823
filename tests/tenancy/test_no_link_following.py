"""The root daemon never follows a link a user planted in their directory: the workspace
scaffold, the hand-over of a directory to the user's account (process and docker backends) and
everything else that goes through `markco_trio.userdirs` create, write and chown nothing
outside the user directory. (Targets are directories the test owns, standing in for /root or
/etc: a failing test must not damage the machine.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from markco_trio import userdirs
from markco_trio.builtin.compute.workspace import scaffold

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the daemon is not root here")

OWNER = (200777, 200777)


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.mkdir(mode=0o711)
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A root-owned directory with a file: where planted links point."""
    path = tmp_path / "root-only"
    path.mkdir(mode=0o700)
    (path / "secret").write_text("root's\n")
    return path


def snapshot(path: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry under `path`: owner, mode and contents (files)."""
    seen = {}
    for root, dirs, files in os.walk(path):
        for name in [".", *dirs, *files]:
            entry = Path(root) / name
            st = entry.lstat()
            data = entry.read_bytes() if entry.is_file() and not entry.is_symlink() else b""
            seen[str(entry)] = (st.st_uid, st.st_gid, st.st_mode, data)
    return seen


@pytest.fixture
def untouched(outside: Path) -> Iterator[None]:
    before = snapshot(outside)
    yield
    assert snapshot(outside) == before, "something outside the user directory changed"


@pytest.mark.usefixtures("untouched")
def test_scaffold_does_not_follow_a_projects_link(users: Path, outside: Path) -> None:
    user_dir = users / "u1"
    user_dir.mkdir()
    (user_dir / "Projects").symlink_to(outside)
    scaffold(user_dir, display_name="Eve", owner=OWNER)
    assert not (outside / "Scratch").exists()
    assert (user_dir / "Projects").is_symlink()


@pytest.mark.usefixtures("untouched")
def test_scaffold_does_not_follow_a_scratch_link(users: Path, outside: Path) -> None:
    user_dir = users / "u1"
    (user_dir / "Projects").mkdir(parents=True)
    (user_dir / "Projects" / "Scratch").symlink_to(outside)  # "Scratch -> /etc"
    scaffold(user_dir, display_name="Eve", owner=OWNER)
    assert sorted(os.listdir(outside)) == ["secret"]


@pytest.mark.usefixtures("untouched")
def test_scaffold_does_not_write_through_a_linked_notebook(users: Path, outside: Path) -> None:
    scratch = users / "u1" / "Projects" / "Scratch"
    scratch.mkdir(parents=True)
    (scratch / "mrmd.md").symlink_to(outside / "secret")
    (scratch / "01-welcome.md").symlink_to(outside / "created-through-a-link")
    created = scaffold(users / "u1", display_name="Eve", owner=OWNER)
    assert not (outside / "created-through-a-link").exists()
    assert (outside / "secret").read_text() == "root's\n"
    assert all(not p.is_symlink() for p in created)


def test_scaffold_gives_what_it_creates_to_the_user(users: Path) -> None:
    created = scaffold(users / "u1", display_name="Eve", owner=OWNER)
    assert len(created) == 5
    assert {(p.stat().st_uid, p.stat().st_gid) for p in created} == {OWNER}
    assert (users / "u1").stat().st_mode & 0o777 == 0o700
    assert users.stat().st_mode & 0o777 == 0o711


@pytest.mark.usefixtures("untouched")
def test_handing_a_directory_over_does_not_chown_through_links(users: Path,
                                                              outside: Path) -> None:
    user_dir = users / "u1"
    (user_dir / "Projects").mkdir(parents=True)
    (user_dir / "Projects" / "to-root").symlink_to(outside)
    (user_dir / "to-secret").symlink_to(outside / "secret")
    (user_dir / "notes.md").write_text("mine")
    with userdirs.open_user_dir(user_dir, owner=OWNER):
        pass
    assert (user_dir / "notes.md").stat().st_uid == OWNER[0]
    assert os.lstat(user_dir / "to-secret").st_uid == OWNER[0]  # the link itself is theirs


@pytest.mark.usefixtures("untouched")
def test_a_hard_link_to_a_file_outside_is_not_given_away(users: Path, outside: Path) -> None:
    user_dir = users / "u1"
    user_dir.mkdir()
    os.link(outside / "secret", user_dir / "shadow")
    with userdirs.open_user_dir(user_dir, owner=OWNER):
        pass
    assert (outside / "secret").stat().st_uid == 0


def test_a_users_directory_that_is_a_link_is_refused(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "users").symlink_to(outside)
    with pytest.raises(OSError):
        scaffold(tmp_path / "users" / "u1", display_name="Eve", owner=OWNER)
    assert not (outside / "u1").exists()


@pytest.mark.usefixtures("untouched")
def test_a_user_directory_that_is_a_link_is_refused(users: Path, outside: Path) -> None:
    (users / "u1").symlink_to(outside)
    with pytest.raises(userdirs.UnsafePath):
        scaffold(users / "u1", display_name="Eve", owner=OWNER)
