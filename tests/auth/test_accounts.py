"""From a verified identity to a user: upsert, linking by verified email, usernames, admins."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from markco_trio.builtin.auth.accounts import (
    AccountDisabled,
    Accounts,
    SignupClosed,
    is_configured_admin,
)
from markco_trio.builtin.auth.options import AuthOptions
from markco_trio.builtin.auth.usernames import candidates, is_valid, normalise
from markco_trio.clock import ManualClock
from markco_trio.roles import VerifiedIdentity
from markco_trio.storage.sqlite import SqliteStorage

OCTO = VerifiedIdentity(provider="github", provider_user_id="583231", login="OctoCat",
                        email="Octo@Example.com", name="The Octocat", avatar_url=None)


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    async with SqliteStorage(tmp_path / "markco.db") as storage:
        await storage.upgrade()
        yield storage


def accounts(storage: SqliteStorage, **options: object) -> Accounts:
    return Accounts(storage, ManualClock(), AuthOptions(**options))  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("Maxime.Rivest", "maxime.rivest"), ("42bob", "u_42bob"), ("__", "user"), ("a b", "a_b"),
    ("  Ünïcode--Name ", "n_code--name"), ("x" * 40, "x" * 32), ("", "user"), (None, "user"),
])
def test_usernames_follow_the_original_rules(text: str | None, expected: str) -> None:
    assert normalise(text) == expected
    assert is_valid(normalise(text))


@given(st.text(max_size=80))
def test_any_text_normalises_to_a_valid_username(text: str) -> None:
    name = normalise(text)
    assert is_valid(name) and len(name) <= 32
    assert normalise(name) == name


@given(st.text(max_size=80))
def test_username_candidates_are_distinct_and_valid(text: str) -> None:
    names = list(itertools.islice(candidates(text), 60))
    assert len(set(names)) == len(names)
    assert all(is_valid(n) for n in names)


def test_username_candidates_add_suffixes_within_32_characters() -> None:
    names = candidates("y" * 40)
    first, second, third = next(names), next(names), next(names)
    assert first == "y" * 32
    assert second == "y" * 30 + "_2" and third == "y" * 30 + "_3"
    assert all(len(n) <= 32 for n in (first, second, third))


async def test_a_new_identity_becomes_a_new_user(storage: SqliteStorage) -> None:
    user, created = await accounts(storage).login(OCTO, allow_signup=True)
    assert created
    assert (user.username, user.email, user.name) == ("octocat", "Octo@Example.com",
                                                      "The Octocat")
    identity = await storage.find_identity("github", "583231")
    assert identity is not None and identity.user_id == user.id and identity.email_verified


async def test_the_first_user_is_not_an_admin(storage: SqliteStorage) -> None:
    user, _ = await accounts(storage).login(OCTO, allow_signup=True)
    assert not user.is_admin


async def test_a_second_login_finds_the_same_user_and_refreshes_the_name(
        storage: SqliteStorage) -> None:
    first, _ = await accounts(storage).login(OCTO, allow_signup=True)
    again, created = await accounts(storage).login(replace(OCTO, name="Octo Renamed"),
                                                   allow_signup=False)
    assert not created
    assert again.id == first.id and again.name == "Octo Renamed"


async def test_a_verified_email_links_to_the_existing_user_whatever_its_case(
        storage: SqliteStorage) -> None:
    existing = await storage.create_user(username="maxime", email="octo@example.COM",
                                         name=None, avatar_url=None, now=1.0)
    user, created = await accounts(storage).login(OCTO, allow_signup=False)
    assert not created and user.id == existing.id
    assert (await storage.find_identity("github", "583231")) is not None


async def test_an_identity_without_verified_email_is_never_linked_by_email(
        storage: SqliteStorage) -> None:
    existing = await storage.create_user(username="victim", email="octo@example.com",
                                         name=None, avatar_url=None, now=1.0)
    user, created = await accounts(storage).login(replace(OCTO, email=None), allow_signup=True)
    assert created and user.id != existing.id and user.email is None


async def test_a_taken_username_gets_the_next_suffix(storage: SqliteStorage) -> None:
    await storage.create_user(username="octocat", email=None, name=None, avatar_url=None,
                              now=1.0)
    await storage.create_user(username="octocat_2", email=None, name=None, avatar_url=None,
                              now=1.0)
    user, _ = await accounts(storage).login(OCTO, allow_signup=True)
    assert user.username == "octocat_3"


async def test_concurrent_first_logins_of_one_identity_make_one_user(
        storage: SqliteStorage) -> None:
    shared = accounts(storage)
    users = []

    async def log_in() -> None:
        users.append(await shared.login(replace(OCTO, email=None), allow_signup=True))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(log_in)
    assert len({u.id for u, _ in users}) == 1
    assert sum(created for _, created in users) == 1
    assert len((await storage.list_users()).items) == 1


async def test_concurrent_sign_ups_of_one_name_get_distinct_usernames(
        storage: SqliteStorage) -> None:
    made = []

    async def sign_up(n: int) -> None:
        identity = replace(OCTO, provider_user_id=str(n), email=f"p{n}@example.com")
        made.append((await accounts(storage).login(identity, allow_signup=True))[0])

    async with trio.open_nursery() as nursery:
        for n in range(4):
            nursery.start_soon(sign_up, n)
    assert sorted(u.username for u in made) == ["octocat", "octocat_2", "octocat_3",
                                                "octocat_4"]


async def test_closed_sign_up_refuses_new_people_but_not_existing_users(
        storage: SqliteStorage) -> None:
    with pytest.raises(SignupClosed):
        await accounts(storage).login(OCTO, allow_signup=False)
    await accounts(storage).login(OCTO, allow_signup=True)
    user, created = await accounts(storage).login(OCTO, allow_signup=False)
    assert not created and user.username == "octocat"


async def test_configured_admins_are_promoted_when_they_log_in(storage: SqliteStorage) -> None:
    user, _ = await accounts(storage, admins=["github:octocat"]).login(OCTO, allow_signup=True)
    assert user.is_admin


def test_admin_entries_match_by_login_or_by_id() -> None:
    assert is_configured_admin(AuthOptions(admins=["github:id:583231"]), OCTO)
    assert is_configured_admin(AuthOptions(admins=["github:OCTOCAT"]), OCTO)
    assert not is_configured_admin(AuthOptions(admins=["gitlab:octocat"]), OCTO)
    assert not is_configured_admin(AuthOptions(admins=["github:id:1"]), OCTO)


async def test_a_disabled_account_cannot_log_in(storage: SqliteStorage) -> None:
    user, _ = await accounts(storage).login(OCTO, allow_signup=True)
    await storage.update_user(user.id, disabled=True)
    with pytest.raises(AccountDisabled):
        await accounts(storage).login(OCTO, allow_signup=False)
