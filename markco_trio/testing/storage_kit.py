"""The contract test kit of the `Storage` role: what every storage provider must do.

A provider's tests subclass `StorageContract` and provide a `storage` fixture yielding an
open, upgraded, EMPTY storage (a new database per test):

    import pytest
    from markco_trio.testing.storage_kit import StorageContract

    class TestMyStorage(StorageContract):
        @pytest.fixture
        async def storage(self, tmp_path):
            async with MyStorage(tmp_path / "db") as storage:
                await storage.upgrade()
                yield storage

Every test is a trio test (pytest-trio) and checks one behaviour, named for it. The built-in
SQLite storage and the markco-postgres plugin run this same kit.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from ..errors import AlreadyRunning, Conflict, NotFound
from ..records import (
    Event,
    GrantRole,
    Invite,
    OperationState,
    Runtime,
    RuntimeState,
    User,
    WorkloadRole,
)
from ..roles import Storage

T0 = 1_700_000_000.0  # "now" in these tests: storage never reads the clock itself
HOUR = 3600.0


async def make_user(storage: Storage, username: str = "alice", **fields: Any) -> User:
    """Create a user with sensible defaults (email `<username>@example.org`)."""
    defaults: dict[str, Any] = {"email": f"{username}@example.org", "name": username.title(),
                                "avatar_url": None, "now": T0}
    return await storage.create_user(username=username, **{**defaults, **fields})


async def make_invite(storage: Storage, owner: User, *, token_hash: str = "invite-hash",
                      role: GrantRole = GrantRole.EDITOR, project: str = "thesis",
                      max_uses: int = 1, expires_at: float | None = T0 + HOUR) -> Invite:
    """Create an invite of `owner` with sensible defaults."""
    return await storage.create_invite(owner_id=owner.id, project=project, role=role,
                                       token_hash=token_hash, expires_at=expires_at,
                                       max_uses=max_uses, now=T0)


async def make_runtime(storage: Storage, user: User, *,
                       role: WorkloadRole = WorkloadRole.RUNTIME,
                       state: RuntimeState = RuntimeState.RUNNING, now: float = T0) -> Runtime:
    """Create a workload record with sensible defaults."""
    return await storage.create_runtime(user_id=user.id, role=role, backend="process",
                                        host="local", state=state,
                                        limits={"memory_bytes": 256 << 20, "cpus": 0.5},
                                        now=now)


async def revoke_one(storage: Storage, kind: str) -> None:
    """Create something of `kind` and revoke it (for the revocation-epoch tests)."""
    owner = await make_user(storage, "owner")
    if kind == "session":
        await storage.create_session(user_id=owner.id, token_hash="s", expires_at=T0 + HOUR,
                                     now=T0)
        assert await storage.revoke_session("s", now=T0)
    elif kind == "user_sessions":
        await storage.create_session(user_id=owner.id, token_hash="s", expires_at=T0 + HOUR,
                                     now=T0)
        assert await storage.revoke_user_sessions(owner.id, now=T0) == 1
    elif kind == "api_token":
        token = await storage.create_api_token(user_id=owner.id, name="ci", token_hash="t",
                                               scopes=("read",), expires_at=None, now=T0)
        assert await storage.revoke_api_token(token.id, now=T0)
    elif kind == "invite":
        invite = await make_invite(storage, owner)
        assert await storage.revoke_invite(invite.id, owner_id=owner.id, now=T0)
    elif kind == "grant":
        guest = await make_user(storage, "guest")
        await make_invite(storage, owner)
        grant = await storage.accept_invite("invite-hash", user_id=guest.id, now=T0)
        assert grant is not None
        assert await storage.revoke_grant(grant.id, owner_id=owner.id, now=T0)
    elif kind == "disabled_user":
        await storage.update_user(owner.id, disabled=True)
    else:
        raise AssertionError(kind)


class StorageContract:
    """The behaviours every `Storage` provider must have. Subclasses provide the `storage`
    fixture (see the module docstring)."""

    pytestmark = pytest.mark.trio

    # ---------------------------------------------------------------- schema and process

    async def test_storage_satisfies_the_protocol(self, storage: Storage) -> None:
        assert isinstance(storage, Storage)
        assert isinstance(storage.name, str) and storage.name

    async def test_upgrade_is_idempotent(self, storage: Storage) -> None:
        version = await storage.schema_version()
        assert await storage.upgrade() == []
        assert await storage.schema_version() == version

    async def test_schema_version_is_positive_once_upgraded(self, storage: Storage) -> None:
        assert await storage.schema_version() > 0

    async def test_ping_succeeds_when_the_database_is_reachable(self, storage: Storage) -> None:
        await storage.ping()

    async def test_second_instance_lock_raises_already_running(self, storage: Storage) -> None:
        async with storage.instance_lock():
            with pytest.raises(AlreadyRunning, match="another markco daemon"):
                async with storage.instance_lock():
                    pass  # pragma: no cover

    async def test_instance_lock_is_released_when_its_block_ends(self,
                                                                 storage: Storage) -> None:
        async with storage.instance_lock():
            pass
        async with storage.instance_lock():
            pass

    async def test_a_call_cancelled_before_it_starts_writes_nothing(self,
                                                                   storage: Storage) -> None:
        with trio.CancelScope() as scope:
            scope.cancel()
            await make_user(storage, "ghost")
        assert scope.cancelled_caught
        assert await storage.get_user_by_username("ghost") is None

    # ---------------------------------------------------------------- users

    async def test_created_user_is_returned_by_id(self, storage: Storage) -> None:
        user = await make_user(storage, "alice", plan="pro", is_admin=True)
        assert await storage.get_user(user.id) == user
        assert (user.username, user.email, user.name, user.plan, user.is_admin,
                user.disabled, user.created_at) == ("alice", "alice@example.org", "Alice",
                                                    "pro", True, False, T0)

    async def test_user_ids_are_opaque_unique_strings(self, storage: Storage) -> None:
        first, second = await make_user(storage, "alice"), await make_user(storage, "bob")
        assert isinstance(first.id, str) and first.id and first.id != second.id

    async def test_times_come_back_as_floats(self, storage: Storage) -> None:
        user = await make_user(storage, "alice", now=1_700_000_000.0)
        fetched = await storage.get_user(user.id)
        assert fetched is not None
        assert type(user.created_at) is float and type(fetched.created_at) is float

    async def test_username_is_stored_lower_case(self, storage: Storage) -> None:
        user = await make_user(storage, "Alice")
        assert user.username == "alice"

    async def test_username_is_unique_case_insensitively(self, storage: Storage) -> None:
        await make_user(storage, "alice")
        with pytest.raises(Conflict, match="username 'alice' is taken"):
            await make_user(storage, "ALICE", email="other@example.org")

    async def test_email_is_unique_case_insensitively(self, storage: Storage) -> None:
        await make_user(storage, "alice", email="Alice@Example.org")
        with pytest.raises(Conflict, match="email"):
            await make_user(storage, "bob", email="alice@example.ORG")

    async def test_users_without_email_do_not_conflict(self, storage: Storage) -> None:
        await make_user(storage, "alice", email=None)
        await make_user(storage, "bob", email=None)

    async def test_user_is_found_by_username_case_insensitively(self,
                                                                storage: Storage) -> None:
        user = await make_user(storage, "alice")
        assert await storage.get_user_by_username("ALICE") == user

    async def test_user_is_found_by_email_case_insensitively(self, storage: Storage) -> None:
        user = await make_user(storage, "alice", email="Alice@Example.org")
        assert await storage.get_user_by_email("ALICE@example.ORG") == user

    async def test_unknown_user_is_none(self, storage: Storage) -> None:
        assert await storage.get_user("nope") is None
        assert await storage.get_user_by_username("nope") is None
        assert await storage.get_user_by_email("nope@example.org") is None

    async def test_list_users_pages_with_a_cursor(self, storage: Storage) -> None:
        for name in ["erin", "alice", "dave", "bob", "carol"]:
            await make_user(storage, name)
        seen, cursor, pages = [], None, 0
        while True:
            page = await storage.list_users(cursor=cursor, limit=2)
            pages += 1
            seen += [user.username for user in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == ["alice", "bob", "carol", "dave", "erin"]
        assert pages == 3

    async def test_list_users_has_no_next_cursor_on_an_exactly_full_page(
            self, storage: Storage) -> None:
        await make_user(storage, "alice")
        await make_user(storage, "bob")
        page = await storage.list_users(limit=2)
        assert len(page.items) == 2 and page.next_cursor is None

    @pytest.mark.parametrize("cursor", ["!!not a cursor!!", "abcd", "YWxpY2U", ""])
    async def test_list_users_rejects_a_cursor_it_did_not_make(self, storage: Storage,
                                                               cursor: str) -> None:
        await make_user(storage, "alice")
        with pytest.raises(ValueError, match="cursor"):
            await storage.list_users(cursor=cursor)

    async def test_update_user_changes_only_the_given_fields(self, storage: Storage) -> None:
        user = await make_user(storage, "alice")
        updated = await storage.update_user(user.id, name="Alice Liddell", plan="team",
                                            is_admin=True)
        assert updated == User(**{**user.__dict__, "name": "Alice Liddell", "plan": "team",
                                  "is_admin": True})
        assert await storage.get_user(user.id) == updated

    async def test_update_user_stores_a_new_username_lower_case(self, storage: Storage) -> None:
        user = await make_user(storage, "alice")
        assert (await storage.update_user(user.id, username="Alicia")).username == "alicia"

    async def test_update_user_to_a_taken_username_is_a_conflict(self,
                                                                 storage: Storage) -> None:
        await make_user(storage, "alice")
        bob = await make_user(storage, "bob")
        with pytest.raises(Conflict, match="username 'alice' is taken"):
            await storage.update_user(bob.id, username="Alice")

    async def test_update_of_a_missing_user_is_not_found(self, storage: Storage) -> None:
        with pytest.raises(NotFound):
            await storage.update_user("nope", name="x")

    async def test_update_user_rejects_unknown_fields(self, storage: Storage) -> None:
        user = await make_user(storage, "alice")
        with pytest.raises(TypeError, match="created_at"):
            await storage.update_user(user.id, created_at=0.0)  # type: ignore[call-arg]

    # ---------------------------------------------------------------- identities

    async def test_linked_identity_is_found(self, storage: Storage) -> None:
        user = await make_user(storage)
        identity = await storage.link_identity(user_id=user.id, provider="github",
                                               provider_user_id="42", email="a@example.org",
                                               email_verified=True, now=T0)
        assert await storage.find_identity("github", "42") == identity
        assert (identity.user_id, identity.email_verified) == (user.id, True)

    async def test_identity_can_be_linked_only_once(self, storage: Storage) -> None:
        alice, bob = await make_user(storage, "alice"), await make_user(storage, "bob")
        await storage.link_identity(user_id=alice.id, provider="github", provider_user_id="42",
                                    email=None, email_verified=False, now=T0)
        with pytest.raises(Conflict, match="github:42"):
            await storage.link_identity(user_id=bob.id, provider="github",
                                        provider_user_id="42", email=None,
                                        email_verified=False, now=T0)

    async def test_linking_an_identity_to_a_missing_user_is_not_found(
            self, storage: Storage) -> None:
        with pytest.raises(NotFound):
            await storage.link_identity(user_id="nope", provider="github",
                                        provider_user_id="42", email=None,
                                        email_verified=False, now=T0)

    async def test_list_identities_lists_the_users_identities(self, storage: Storage) -> None:
        alice, bob = await make_user(storage, "alice"), await make_user(storage, "bob")
        for provider, who in [("github", alice), ("gitlab", alice), ("github", bob)]:
            await storage.link_identity(user_id=who.id, provider=provider,
                                        provider_user_id=who.username, email=None,
                                        email_verified=False, now=T0)
        identities = await storage.list_identities(alice.id)
        assert sorted(i.provider for i in identities) == ["github", "gitlab"]
        assert await storage.find_identity("gitlab", "bob") is None

    # ---------------------------------------------------------------- sessions

    async def test_session_is_returned_by_its_token_hash(self, storage: Storage) -> None:
        user = await make_user(storage)
        session = await storage.create_session(user_id=user.id, token_hash="h",
                                               expires_at=T0 + HOUR, now=T0,
                                               user_agent="Firefox")
        assert await storage.get_session("h", now=T0 + 1) == session
        assert (session.last_seen_at, session.user_agent, session.revoked_at) == (
            T0, "Firefox", None)

    async def test_expired_session_is_not_returned(self, storage: Storage) -> None:
        user = await make_user(storage)
        await storage.create_session(user_id=user.id, token_hash="h", expires_at=T0 + HOUR,
                                     now=T0)
        assert await storage.get_session("h", now=T0 + HOUR) is None

    async def test_revoked_session_is_not_returned(self, storage: Storage) -> None:
        user = await make_user(storage)
        await storage.create_session(user_id=user.id, token_hash="h", expires_at=T0 + HOUR,
                                     now=T0)
        assert await storage.revoke_session("h", now=T0 + 1) is True
        assert await storage.get_session("h", now=T0 + 2) is None

    async def test_revoking_a_session_twice_returns_false(self, storage: Storage) -> None:
        user = await make_user(storage)
        await storage.create_session(user_id=user.id, token_hash="h", expires_at=T0 + HOUR,
                                     now=T0)
        await storage.revoke_session("h", now=T0)
        assert await storage.revoke_session("h", now=T0) is False
        assert await storage.revoke_session("unknown", now=T0) is False

    async def test_session_token_hash_is_unique(self, storage: Storage) -> None:
        user = await make_user(storage)
        await storage.create_session(user_id=user.id, token_hash="h", expires_at=T0 + HOUR,
                                     now=T0)
        with pytest.raises(Conflict):
            await storage.create_session(user_id=user.id, token_hash="h",
                                         expires_at=T0 + HOUR, now=T0)

    async def test_session_of_a_missing_user_is_not_found(self, storage: Storage) -> None:
        with pytest.raises(NotFound):
            await storage.create_session(user_id="nope", token_hash="h",
                                         expires_at=T0 + HOUR, now=T0)

    async def test_touch_sessions_slides_the_expiry(self, storage: Storage) -> None:
        user = await make_user(storage)
        for token_hash in ("a", "b"):
            await storage.create_session(user_id=user.id, token_hash=token_hash,
                                         expires_at=T0 + HOUR, now=T0)
        await storage.touch_sessions({"a": (T0 + 10, T0 + 10 + HOUR), "b": (T0 + 20, T0 + 5)})
        a, b = await storage.get_session("a", now=T0 + HOUR + 1), await storage.get_session(
            "b", now=T0 + 1)
        assert a is not None and (a.last_seen_at, a.expires_at) == (T0 + 10, T0 + 10 + HOUR)
        assert b is not None and (b.last_seen_at, b.expires_at) == (T0 + 20, T0 + 5)

    async def test_touch_sessions_does_not_revive_revoked_or_expired_sessions(
            self, storage: Storage) -> None:
        user = await make_user(storage)
        await storage.create_session(user_id=user.id, token_hash="revoked",
                                     expires_at=T0 + HOUR, now=T0)
        await storage.create_session(user_id=user.id, token_hash="expired",
                                     expires_at=T0 + 10, now=T0)
        await storage.revoke_session("revoked", now=T0 + 1)
        await storage.touch_sessions({"revoked": (T0 + 20, T0 + 2 * HOUR),
                                      "expired": (T0 + 20, T0 + 2 * HOUR),
                                      "unknown": (T0 + 20, T0 + 2 * HOUR)})
        assert await storage.get_session("revoked", now=T0 + 30) is None
        assert await storage.get_session("expired", now=T0 + 30) is None

    async def test_touch_sessions_with_nothing_to_do_succeeds(self, storage: Storage) -> None:
        await storage.touch_sessions({})

    async def test_revoke_user_sessions_revokes_only_that_users_live_sessions(
            self, storage: Storage) -> None:
        alice, bob = await make_user(storage, "alice"), await make_user(storage, "bob")
        for token_hash, who in [("a1", alice), ("a2", alice), ("b1", bob)]:
            await storage.create_session(user_id=who.id, token_hash=token_hash,
                                         expires_at=T0 + HOUR, now=T0)
        assert await storage.revoke_user_sessions(alice.id, now=T0 + 1) == 2
        assert await storage.get_session("a1", now=T0 + 2) is None
        assert await storage.get_session("b1", now=T0 + 2) is not None
        assert await storage.revoke_user_sessions(alice.id, now=T0 + 3) == 0

    async def test_list_sessions_lists_only_live_sessions(self, storage: Storage) -> None:
        user = await make_user(storage)
        for token_hash, expires_at in [("live", T0 + HOUR), ("expired", T0 + 5),
                                       ("revoked", T0 + HOUR)]:
            await storage.create_session(user_id=user.id, token_hash=token_hash,
                                         expires_at=expires_at, now=T0)
        await storage.revoke_session("revoked", now=T0)
        sessions = await storage.list_sessions(user.id, now=T0 + 10)
        assert [s.token_hash for s in sessions] == ["live"]

    async def test_purge_expired_deletes_expired_sessions_and_login_links(
            self, storage: Storage) -> None:
        user = await make_user(storage)
        await storage.create_session(user_id=user.id, token_hash="old", expires_at=T0 + 5,
                                     now=T0)
        await storage.create_session(user_id=user.id, token_hash="new", expires_at=T0 + HOUR,
                                     now=T0)
        await storage.create_login_link(user_id=user.id, token_hash="old-link",
                                        expires_at=T0 + 5, now=T0)
        await storage.create_login_link(user_id=user.id, token_hash="new-link",
                                        expires_at=T0 + HOUR, now=T0)
        assert await storage.purge_expired(now=T0 + 10) == 2
        assert await storage.get_session("new", now=T0 + 10) is not None
        assert await storage.consume_login_link("new-link", now=T0 + 10) is not None
        assert await storage.purge_expired(now=T0 + 10) == 0

    # ---------------------------------------------------------------- revocation epoch

    @pytest.mark.parametrize("kind", ["session", "user_sessions", "api_token", "invite",
                                      "grant", "disabled_user"])
    async def test_revoking_bumps_the_revocation_epoch(self, storage: Storage,
                                                       kind: str) -> None:
        before = await storage.revocation_epoch()
        await revoke_one(storage, kind)
        assert await storage.revocation_epoch() > before

    async def test_revoking_nothing_leaves_the_revocation_epoch(self, storage: Storage) -> None:
        user = await make_user(storage)
        before = await storage.revocation_epoch()
        assert await storage.revoke_session("unknown", now=T0) is False
        assert await storage.revoke_user_sessions(user.id, now=T0) == 0
        assert await storage.revoke_api_token("unknown", now=T0) is False
        assert await storage.revocation_epoch() == before

    # ---------------------------------------------------------------- API tokens

    async def test_api_token_is_returned_with_its_scopes(self, storage: Storage) -> None:
        user = await make_user(storage)
        token = await storage.create_api_token(user_id=user.id, name="ci", token_hash="t",
                                               scopes=("runtimes:read", "events:read"),
                                               expires_at=T0 + HOUR, now=T0)
        assert await storage.get_api_token("t", now=T0 + 1) == token
        assert token.scopes == ("runtimes:read", "events:read")

    async def test_api_token_without_expiry_stays_live(self, storage: Storage) -> None:
        user = await make_user(storage)
        await storage.create_api_token(user_id=user.id, name="ci", token_hash="t", scopes=(),
                                       expires_at=None, now=T0)
        token = await storage.get_api_token("t", now=T0 + 10_000 * HOUR)
        assert token is not None and token.scopes == () and token.expires_at is None

    async def test_expired_api_token_is_not_returned(self, storage: Storage) -> None:
        user = await make_user(storage)
        await storage.create_api_token(user_id=user.id, name="ci", token_hash="t", scopes=(),
                                       expires_at=T0 + HOUR, now=T0)
        assert await storage.get_api_token("t", now=T0 + HOUR) is None

    async def test_revoked_api_token_is_not_returned(self, storage: Storage) -> None:
        user = await make_user(storage)
        token = await storage.create_api_token(user_id=user.id, name="ci", token_hash="t",
                                               scopes=(), expires_at=None, now=T0)
        assert await storage.revoke_api_token(token.id, now=T0 + 1) is True
        assert await storage.get_api_token("t", now=T0 + 2) is None
        assert await storage.revoke_api_token(token.id, now=T0 + 3) is False

    async def test_list_api_tokens_includes_revoked_tokens(self, storage: Storage) -> None:
        user = await make_user(storage)
        first = await storage.create_api_token(user_id=user.id, name="one", token_hash="1",
                                               scopes=(), expires_at=None, now=T0)
        await storage.create_api_token(user_id=user.id, name="two", token_hash="2",
                                       scopes=(), expires_at=None, now=T0 + 1)
        await storage.revoke_api_token(first.id, now=T0 + 2)
        tokens = await storage.list_api_tokens(user.id)
        assert [(t.name, t.revoked_at) for t in tokens] == [("one", T0 + 2), ("two", None)]

    async def test_scope_with_whitespace_is_rejected(self, storage: Storage) -> None:
        user = await make_user(storage)
        with pytest.raises(ValueError, match="scope"):
            await storage.create_api_token(user_id=user.id, name="ci", token_hash="t",
                                           scopes=("read write",), expires_at=None, now=T0)

    # ---------------------------------------------------------------- login links

    async def test_login_link_is_consumed_once(self, storage: Storage) -> None:
        user = await make_user(storage)
        link = await storage.create_login_link(user_id=user.id, token_hash="l",
                                               expires_at=T0 + 300, now=T0)
        consumed = await storage.consume_login_link("l", now=T0 + 1)
        assert consumed is not None
        assert (consumed.id, consumed.user_id, consumed.used_at) == (link.id, user.id, T0 + 1)
        assert await storage.consume_login_link("l", now=T0 + 2) is None

    async def test_expired_login_link_cannot_be_consumed(self, storage: Storage) -> None:
        user = await make_user(storage)
        await storage.create_login_link(user_id=user.id, token_hash="l", expires_at=T0 + 300,
                                        now=T0)
        assert await storage.consume_login_link("l", now=T0 + 300) is None

    async def test_unknown_login_link_cannot_be_consumed(self, storage: Storage) -> None:
        assert await storage.consume_login_link("unknown", now=T0) is None

    async def test_concurrent_consumptions_of_a_login_link_succeed_once(
            self, storage: Storage) -> None:
        user = await make_user(storage)
        await storage.create_login_link(user_id=user.id, token_hash="l", expires_at=T0 + 300,
                                        now=T0)
        results = []

        async def consume() -> None:
            results.append(await storage.consume_login_link("l", now=T0 + 1))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(consume)
        assert sum(result is not None for result in results) == 1

    # ---------------------------------------------------------------- invites and grants

    async def test_created_invite_is_found_by_its_token_hash(self, storage: Storage) -> None:
        owner = await make_user(storage, "owner")
        invite = await make_invite(storage, owner, role=GrantRole.VIEWER, max_uses=3)
        assert await storage.get_invite("invite-hash") == invite
        assert (invite.role, invite.max_uses, invite.uses, invite.revoked_at) == (
            GrantRole.VIEWER, 3, 0, None)
        assert await storage.get_invite("unknown") is None

    async def test_invite_needs_at_least_one_use(self, storage: Storage) -> None:
        owner = await make_user(storage, "owner")
        with pytest.raises(ValueError, match="max_uses"):
            await make_invite(storage, owner, max_uses=0)

    async def test_accepting_an_invite_records_a_grant_and_counts_a_use(
            self, storage: Storage) -> None:
        owner, guest = await make_user(storage, "owner"), await make_user(storage, "guest")
        invite = await make_invite(storage, owner, role=GrantRole.VIEWER, max_uses=2)
        grant = await storage.accept_invite("invite-hash", user_id=guest.id, now=T0 + 1)
        assert grant is not None
        assert (grant.owner_id, grant.project, grant.user_id, grant.role, grant.invite_id,
                grant.created_at) == (owner.id, "thesis", guest.id, GrantRole.VIEWER,
                                      invite.id, T0 + 1)
        accepted = await storage.get_invite("invite-hash")
        assert accepted is not None and accepted.uses == 1
        assert await storage.list_grants(user_id=guest.id) == [grant]

    async def test_invite_cannot_be_accepted_past_its_use_limit(self, storage: Storage) -> None:
        owner = await make_user(storage, "owner")
        guests = [await make_user(storage, f"guest{i}") for i in range(3)]
        await make_invite(storage, owner, max_uses=2)
        results = [await storage.accept_invite("invite-hash", user_id=guest.id, now=T0)
                   for guest in guests]
        assert [result is not None for result in results] == [True, True, False]
        invite = await storage.get_invite("invite-hash")
        assert invite is not None and invite.uses == 2

    async def test_concurrent_acceptances_never_exceed_the_use_limit(
            self, storage: Storage) -> None:
        owner = await make_user(storage, "owner")
        guests = [await make_user(storage, f"guest{i}") for i in range(10)]
        await make_invite(storage, owner, max_uses=3)
        results = []

        async def accept(user: User) -> None:
            results.append(await storage.accept_invite("invite-hash", user_id=user.id,
                                                       now=T0))

        async with trio.open_nursery() as nursery:
            for guest in guests:
                nursery.start_soon(accept, guest)
        assert sum(result is not None for result in results) == 3
        assert len(await storage.list_grants(owner_id=owner.id)) == 3
        invite = await storage.get_invite("invite-hash")
        assert invite is not None and invite.uses == 3

    async def test_expired_invite_cannot_be_accepted(self, storage: Storage) -> None:
        owner, guest = await make_user(storage, "owner"), await make_user(storage, "guest")
        await make_invite(storage, owner, expires_at=T0 + HOUR)
        assert await storage.accept_invite("invite-hash", user_id=guest.id,
                                           now=T0 + HOUR) is None

    async def test_invite_without_expiry_can_be_accepted_any_time(self,
                                                                  storage: Storage) -> None:
        owner, guest = await make_user(storage, "owner"), await make_user(storage, "guest")
        await make_invite(storage, owner, expires_at=None)
        assert await storage.accept_invite("invite-hash", user_id=guest.id,
                                           now=T0 + 10_000 * HOUR) is not None

    async def test_revoked_invite_cannot_be_accepted(self, storage: Storage) -> None:
        owner, guest = await make_user(storage, "owner"), await make_user(storage, "guest")
        invite = await make_invite(storage, owner)
        assert await storage.revoke_invite(invite.id, owner_id=owner.id, now=T0) is True
        assert await storage.accept_invite("invite-hash", user_id=guest.id, now=T0) is None

    async def test_unknown_invite_cannot_be_accepted(self, storage: Storage) -> None:
        guest = await make_user(storage, "guest")
        assert await storage.accept_invite("unknown", user_id=guest.id, now=T0) is None

    async def test_accepting_for_a_missing_user_is_not_found_and_uses_nothing(
            self, storage: Storage) -> None:
        owner = await make_user(storage, "owner")
        await make_invite(storage, owner)
        with pytest.raises(NotFound):
            await storage.accept_invite("invite-hash", user_id="nope", now=T0)
        invite = await storage.get_invite("invite-hash")
        assert invite is not None and invite.uses == 0

    async def test_accepting_a_second_invite_updates_the_live_grant(self,
                                                                    storage: Storage) -> None:
        owner, guest = await make_user(storage, "owner"), await make_user(storage, "guest")
        await make_invite(storage, owner, token_hash="view", role=GrantRole.VIEWER)
        second = await make_invite(storage, owner, token_hash="edit", role=GrantRole.EDITOR)
        first_grant = await storage.accept_invite("view", user_id=guest.id, now=T0)
        second_grant = await storage.accept_invite("edit", user_id=guest.id, now=T0 + 1)
        assert first_grant is not None and second_grant is not None
        assert second_grant.id == first_grant.id
        assert (second_grant.role, second_grant.invite_id) == (GrantRole.EDITOR, second.id)
        assert await storage.list_grants(user_id=guest.id) == [second_grant]

    async def test_revoke_invite_only_revokes_the_owners_invite(self, storage: Storage) -> None:
        owner, other = await make_user(storage, "owner"), await make_user(storage, "other")
        invite = await make_invite(storage, owner)
        assert await storage.revoke_invite(invite.id, owner_id=other.id, now=T0) is False
        assert await storage.revoke_invite(invite.id, owner_id=owner.id, now=T0) is True
        assert await storage.revoke_invite(invite.id, owner_id=owner.id, now=T0) is False
        revoked = await storage.get_invite("invite-hash")
        assert revoked is not None and revoked.revoked_at == T0

    async def test_list_invites_lists_the_owners_invites(self, storage: Storage) -> None:
        owner, other = await make_user(storage, "owner"), await make_user(storage, "other")
        mine = [await make_invite(storage, owner, token_hash=f"mine{i}") for i in range(2)]
        await make_invite(storage, other, token_hash="theirs")
        assert sorted(i.id for i in await storage.list_invites(owner.id)) == sorted(
            i.id for i in mine)

    async def test_list_grants_filters_by_holder_and_owner(self, storage: Storage) -> None:
        alice, bob, carol = [await make_user(storage, name) for name in ("alice", "bob",
                                                                         "carol")]
        for owner, guest in [(alice, bob), (alice, carol), (bob, carol)]:
            await make_invite(storage, owner, token_hash=f"{owner.id}{guest.id}")
            await storage.accept_invite(f"{owner.id}{guest.id}", user_id=guest.id, now=T0)

        def pairs(grants: list[Any]) -> set[tuple[str, str]]:
            return {(g.owner_id, g.user_id) for g in grants}

        assert pairs(await storage.list_grants(owner_id=alice.id)) == {(alice.id, bob.id),
                                                                        (alice.id, carol.id)}
        assert pairs(await storage.list_grants(user_id=carol.id)) == {(alice.id, carol.id),
                                                                       (bob.id, carol.id)}
        assert pairs(await storage.list_grants(user_id=carol.id, owner_id=bob.id)) == {
            (bob.id, carol.id)}
        assert len(await storage.list_grants()) == 3

    async def test_revoked_grant_is_no_longer_listed(self, storage: Storage) -> None:
        owner, guest = await make_user(storage, "owner"), await make_user(storage, "guest")
        await make_invite(storage, owner)
        grant = await storage.accept_invite("invite-hash", user_id=guest.id, now=T0)
        assert grant is not None
        assert await storage.revoke_grant(grant.id, owner_id=owner.id, now=T0 + 1) is True
        assert await storage.list_grants(user_id=guest.id) == []

    async def test_revoke_grant_only_revokes_the_owners_grant(self, storage: Storage) -> None:
        owner, guest = await make_user(storage, "owner"), await make_user(storage, "guest")
        await make_invite(storage, owner)
        grant = await storage.accept_invite("invite-hash", user_id=guest.id, now=T0)
        assert grant is not None
        assert await storage.revoke_grant(grant.id, owner_id=guest.id, now=T0) is False
        assert await storage.revoke_grant("unknown", owner_id=owner.id, now=T0) is False
        assert len(await storage.list_grants(user_id=guest.id)) == 1

    async def test_a_revoked_grant_can_be_granted_again(self, storage: Storage) -> None:
        owner, guest = await make_user(storage, "owner"), await make_user(storage, "guest")
        await make_invite(storage, owner, max_uses=2)
        first = await storage.accept_invite("invite-hash", user_id=guest.id, now=T0)
        assert first is not None
        await storage.revoke_grant(first.id, owner_id=owner.id, now=T0 + 1)
        second = await storage.accept_invite("invite-hash", user_id=guest.id, now=T0 + 2)
        assert second is not None and second.id != first.id
        assert await storage.list_grants(user_id=guest.id) == [second]

    # ---------------------------------------------------------------- workloads

    async def test_created_runtime_is_returned_by_id(self, storage: Storage) -> None:
        user = await make_user(storage)
        operation = await storage.create_operation(user_id=user.id, kind="start",
                                                   targets={}, now=T0)
        runtime = await storage.create_runtime(
            user_id=user.id, role=WorkloadRole.RUNTIME, backend="docker", host="h1",
            state=RuntimeState.STARTING, limits={"memory_bytes": 1 << 28, "cpus": 0.5},
            now=T0, handle="c0ffee", address="10.0.0.2:8000", operation_id=operation.id)
        assert await storage.get_runtime(runtime.id) == runtime
        assert runtime == Runtime(
            id=runtime.id, user_id=user.id, role=WorkloadRole.RUNTIME, backend="docker",
            host="h1", handle="c0ffee", address="10.0.0.2:8000", state=RuntimeState.STARTING,
            limits={"memory_bytes": 1 << 28, "cpus": 0.5}, created_at=T0, updated_at=T0,
            operation_id=operation.id, reason=None, restarts=0, oom_kills=0)

    async def test_second_live_runtime_of_a_role_is_a_conflict(self, storage: Storage) -> None:
        user = await make_user(storage)
        await make_runtime(storage, user, state=RuntimeState.SLEEPING)
        with pytest.raises(Conflict, match="live runtime"):
            await make_runtime(storage, user, state=RuntimeState.STARTING)

    async def test_a_user_has_a_live_editor_and_a_live_runtime(self, storage: Storage) -> None:
        user = await make_user(storage)
        await make_runtime(storage, user, role=WorkloadRole.EDITOR)
        await make_runtime(storage, user, role=WorkloadRole.RUNTIME)
        assert len(await storage.list_runtimes(user_id=user.id)) == 2

    async def test_stopped_and_failed_runtimes_do_not_block_a_new_one(self,
                                                                      storage: Storage) -> None:
        user = await make_user(storage)
        await make_runtime(storage, user, state=RuntimeState.STOPPED)
        await make_runtime(storage, user, state=RuntimeState.FAILED)
        live = await make_runtime(storage, user, state=RuntimeState.STARTING)
        assert await storage.get_live_runtime(user.id, WorkloadRole.RUNTIME) == live

    async def test_runtime_of_a_missing_user_is_not_found(self, storage: Storage) -> None:
        with pytest.raises(NotFound):
            await storage.create_runtime(user_id="nope", role=WorkloadRole.RUNTIME,
                                         backend="process", host="local",
                                         state=RuntimeState.STARTING, limits={}, now=T0)

    async def test_get_live_runtime_is_none_without_a_live_one(self, storage: Storage) -> None:
        user = await make_user(storage)
        await make_runtime(storage, user, state=RuntimeState.STOPPED)
        assert await storage.get_live_runtime(user.id, WorkloadRole.RUNTIME) is None
        assert await storage.get_live_runtime(user.id, WorkloadRole.EDITOR) is None

    async def test_update_runtime_changes_the_given_fields_and_updated_at(
            self, storage: Storage) -> None:
        user = await make_user(storage)
        runtime = await make_runtime(storage, user, state=RuntimeState.STARTING)
        updated = await storage.update_runtime(
            runtime.id, now=T0 + 5, state=RuntimeState.RUNNING, address="127.0.0.1:9000",
            limits={"memory_bytes": 1 << 29}, restarts=1, oom_kills=2, reason="oom")
        assert updated == Runtime(**{**runtime.__dict__, "state": RuntimeState.RUNNING,
                                     "address": "127.0.0.1:9000",
                                     "limits": {"memory_bytes": 1 << 29}, "restarts": 1,
                                     "oom_kills": 2, "reason": "oom", "updated_at": T0 + 5})
        assert await storage.get_runtime(runtime.id) == updated

    async def test_reviving_a_stopped_runtime_beside_a_live_one_is_a_conflict(
            self, storage: Storage) -> None:
        user = await make_user(storage)
        old = await make_runtime(storage, user, state=RuntimeState.STOPPED)
        await make_runtime(storage, user, state=RuntimeState.RUNNING)
        with pytest.raises(Conflict):
            await storage.update_runtime(old.id, now=T0, state=RuntimeState.WAKING)

    async def test_update_of_a_missing_runtime_is_not_found(self, storage: Storage) -> None:
        with pytest.raises(NotFound):
            await storage.update_runtime("nope", now=T0, state=RuntimeState.STOPPED)

    async def test_update_runtime_rejects_unknown_fields(self, storage: Storage) -> None:
        user = await make_user(storage)
        runtime = await make_runtime(storage, user)
        with pytest.raises(TypeError, match="user_id"):
            await storage.update_runtime(runtime.id, now=T0,  # type: ignore[call-arg]
                                         user_id="someone-else")

    async def test_list_runtimes_filters_by_user_and_liveness(self, storage: Storage) -> None:
        alice, bob = await make_user(storage, "alice"), await make_user(storage, "bob")
        stopped = await make_runtime(storage, alice, state=RuntimeState.STOPPED)
        live = await make_runtime(storage, alice, now=T0 + 1)
        other = await make_runtime(storage, bob)
        assert await storage.list_runtimes(user_id=alice.id) == [live]
        assert await storage.list_runtimes(user_id=alice.id, live_only=False) == [stopped, live]
        assert {r.id for r in await storage.list_runtimes()} == {live.id, other.id}
        assert len(await storage.list_runtimes(live_only=False)) == 3

    # ---------------------------------------------------------------- the operation log

    async def test_created_operation_is_open_with_its_targets(self, storage: Storage) -> None:
        user = await make_user(storage)
        targets = {"editor": "markco-alice-editor-1", "runtime": "markco-alice-runtime-1"}
        operation = await storage.create_operation(user_id=user.id, kind="start",
                                                   targets=targets, now=T0)
        assert (operation.state, operation.step, operation.targets, operation.error) == (
            OperationState.OPEN, "created", targets, None)
        assert await storage.get_operation(operation.id) == operation

    async def test_update_operation_advances_its_step_and_state(self, storage: Storage) -> None:
        user = await make_user(storage)
        operation = await storage.create_operation(user_id=user.id, kind="start", targets={},
                                                   now=T0)
        stepped = await storage.update_operation(operation.id, now=T0 + 1, step="created-c")
        failed = await storage.update_operation(operation.id, now=T0 + 2,
                                                state=OperationState.FAILED, error="boom")
        assert (stepped.step, stepped.state, stepped.updated_at) == (
            "created-c", OperationState.OPEN, T0 + 1)
        assert (failed.step, failed.state, failed.error, failed.updated_at) == (
            "created-c", OperationState.FAILED, "boom", T0 + 2)
        assert await storage.get_operation(operation.id) == failed

    async def test_update_of_a_missing_operation_is_not_found(self, storage: Storage) -> None:
        with pytest.raises(NotFound):
            await storage.update_operation("nope", now=T0, step="x")

    async def test_unknown_operation_is_none(self, storage: Storage) -> None:
        assert await storage.get_operation("nope") is None

    async def test_list_operations_filters_by_user_and_openness(self,
                                                               storage: Storage) -> None:
        alice, bob = await make_user(storage, "alice"), await make_user(storage, "bob")
        done = await storage.create_operation(user_id=alice.id, kind="stop", targets={},
                                              now=T0)
        done = await storage.update_operation(done.id, now=T0, state=OperationState.DONE)
        open_ = await storage.create_operation(user_id=alice.id, kind="start", targets={},
                                               now=T0 + 1)
        theirs = await storage.create_operation(user_id=bob.id, kind="start", targets={},
                                                now=T0 + 2)
        assert await storage.list_operations(user_id=alice.id) == [done, open_]
        assert await storage.list_operations(user_id=alice.id, open_only=True) == [open_]
        assert await storage.list_operations(open_only=True) == [open_, theirs]

    # ---------------------------------------------------------------- snapshots

    async def test_created_snapshot_is_listed_for_its_user(self, storage: Storage) -> None:
        alice, bob = await make_user(storage, "alice"), await make_user(storage, "bob")
        runtime = await make_runtime(storage, alice)
        snapshot = await storage.create_snapshot(
            user_id=alice.id, runtime_id=runtime.id, name="idle-1", path="/data/s/1.tar",
            size_bytes=7 << 30, sha256="ab" * 32,
            depends_on={"image": "sha256:1", "mrmd_python": "0.4.2"}, now=T0)
        await storage.create_snapshot(user_id=bob.id, runtime_id=None, name="b",
                                      path="/data/s/2.tar", size_bytes=1, sha256=None,
                                      depends_on={}, now=T0)
        assert await storage.list_snapshots(alice.id) == [snapshot]
        assert (snapshot.size_bytes, snapshot.depends_on) == (
            7 << 30, {"image": "sha256:1", "mrmd_python": "0.4.2"})

    async def test_deleted_snapshot_is_gone(self, storage: Storage) -> None:
        user = await make_user(storage)
        snapshot = await storage.create_snapshot(user_id=user.id, runtime_id=None, name="s",
                                                 path="/s.tar", size_bytes=1, sha256=None,
                                                 depends_on={}, now=T0)
        assert await storage.delete_snapshot(snapshot.id) is True
        assert await storage.delete_snapshot(snapshot.id) is False
        assert await storage.list_snapshots(user.id) == []

    async def test_snapshot_kind_defaults_to_named(self, storage: Storage) -> None:
        user = await make_user(storage)
        snapshot = await storage.create_snapshot(user_id=user.id, runtime_id=None, name="s",
                                                 path="/s.img", size_bytes=1, sha256=None,
                                                 depends_on={}, now=T0)
        assert snapshot.kind == "named"

    async def test_snapshots_are_listed_by_kind(self, storage: Storage) -> None:
        user = await make_user(storage)
        named = await storage.create_snapshot(user_id=user.id, runtime_id=None, name="a",
                                              path="/a.img", size_bytes=1, sha256="0" * 64,
                                              depends_on={}, now=T0)
        sleep = await storage.create_snapshot(user_id=user.id, runtime_id=None, name="zz",
                                              path="/z.img", size_bytes=2, sha256="1" * 64,
                                              depends_on={}, now=T0 + 1, kind="sleep")
        assert await storage.list_snapshots(user.id, kind="sleep") == [sleep]
        assert await storage.list_snapshots(kind="named") == [named]
        assert await storage.list_snapshots(user.id) == [named, sleep]

    async def test_snapshot_is_found_by_id(self, storage: Storage) -> None:
        user = await make_user(storage)
        snapshot = await storage.create_snapshot(user_id=user.id, runtime_id=None, name="a",
                                                 path="/a.img", size_bytes=1, sha256=None,
                                                 depends_on={"criu": "4.1"}, now=T0,
                                                 kind="fork")
        assert await storage.get_snapshot(snapshot.id) == snapshot
        assert await storage.get_snapshot("nope") is None

    async def test_second_named_snapshot_of_one_name_conflicts(self,
                                                               storage: Storage) -> None:
        user = await make_user(storage)
        await storage.create_snapshot(user_id=user.id, runtime_id=None, name="a",
                                      path="/a.img", size_bytes=1, sha256=None,
                                      depends_on={}, now=T0)
        with pytest.raises(Conflict):
            await storage.create_snapshot(user_id=user.id, runtime_id=None, name="a",
                                          path="/b.img", size_bytes=1, sha256=None,
                                          depends_on={}, now=T0)

    async def test_sleep_images_may_share_a_name(self, storage: Storage) -> None:
        user = await make_user(storage)
        for path in ("/a.img", "/b.img"):
            await storage.create_snapshot(user_id=user.id, runtime_id=None, name="sleep",
                                          path=path, size_bytes=1, sha256=None,
                                          depends_on={}, now=T0, kind="sleep")
        assert len(await storage.list_snapshots(user.id, kind="sleep")) == 2

    # ---------------------------------------------------------------- migrations

    async def test_finished_migration_records_its_outcome_and_timings(
            self, storage: Storage) -> None:
        user = await make_user(storage)
        runtime = await make_runtime(storage, user)
        migration = await storage.create_migration(runtime_id=runtime.id, user_id=user.id,
                                                   from_host="h1", to_host="h2",
                                                   strategy="checkpoint", now=T0)
        assert (migration.started_at, migration.completed_at) == (T0, None)
        finished = await storage.finish_migration(migration.id, status="done", now=T0 + 3,
                                                  checkpoint_ms=900, transfer_ms=400,
                                                  restore_ms=800)
        assert (finished.status, finished.completed_at, finished.checkpoint_ms,
                finished.transfer_ms, finished.restore_ms, finished.error) == (
            "done", T0 + 3, 900, 400, 800, None)
        assert await storage.list_migrations(runtime_id=runtime.id) == [finished]

    async def test_finishing_a_missing_migration_is_not_found(self, storage: Storage) -> None:
        with pytest.raises(NotFound):
            await storage.finish_migration("nope", status="failed", now=T0, error="x")

    async def test_list_migrations_filters_by_runtime(self, storage: Storage) -> None:
        alice, bob = await make_user(storage, "alice"), await make_user(storage, "bob")
        runtimes = [await make_runtime(storage, alice), await make_runtime(storage, bob)]
        for runtime in runtimes:
            await storage.create_migration(runtime_id=runtime.id, user_id=runtime.user_id,
                                           from_host="h1", to_host="h2", strategy="cold",
                                           now=T0)
        assert [m.runtime_id for m in await storage.list_migrations(
            runtime_id=runtimes[0].id)] == [runtimes[0].id]
        assert len(await storage.list_migrations()) == 2

    # ---------------------------------------------------------------- workload accounts

    async def test_first_workload_account_gets_the_bottom_of_the_range(
            self, storage: Storage) -> None:
        account = await storage.allocate_workload_account("u1", uid_min=200000,
                                                          uid_max=200009, now=T0)
        assert (account.user_id, account.uid, account.gid, account.created_at) == (
            "u1", 200000, 200000, T0)

    async def test_allocating_again_returns_the_same_account(self, storage: Storage) -> None:
        first = await storage.allocate_workload_account("u1", uid_min=200000, uid_max=200009,
                                                        now=T0)
        again = await storage.allocate_workload_account("u1", uid_min=200000, uid_max=200009,
                                                        now=T0 + 5)
        assert again == first == await storage.get_workload_account("u1")

    async def test_users_get_distinct_uids(self, storage: Storage) -> None:
        uids = [(await storage.allocate_workload_account(f"u{i}", uid_min=200000,
                                                         uid_max=200009, now=T0)).uid
                for i in range(3)]
        assert uids == [200000, 200001, 200002]
        assert [a.uid for a in await storage.list_workload_accounts()] == uids

    async def test_concurrent_allocations_never_share_a_uid(self, storage: Storage) -> None:
        uids: list[int] = []

        async def allocate(user_id: str) -> None:
            for _ in range(5):  # a Conflict means another daemon won the race: retry
                try:
                    account = await storage.allocate_workload_account(
                        user_id, uid_min=200000, uid_max=200099, now=T0)
                except Conflict:
                    continue
                uids.append(account.uid)
                return

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(allocate, f"u{i}")
        assert len(uids) == 8 and len(set(uids)) == 8

    async def test_a_used_up_uid_range_is_a_conflict(self, storage: Storage) -> None:
        await storage.allocate_workload_account("u1", uid_min=200000, uid_max=200000, now=T0)
        with pytest.raises(Conflict):
            await storage.allocate_workload_account("u2", uid_min=200000, uid_max=200000,
                                                    now=T0)

    async def test_a_workload_account_needs_no_user_row(self, storage: Storage) -> None:
        # No foreign key: an account outlives its user, so its uid is never handed on.
        account = await storage.allocate_workload_account("gone-user", uid_min=200000,
                                                          uid_max=200009, now=T0)
        assert await storage.get_workload_account("gone-user") == account

    async def test_unknown_user_has_no_workload_account(self, storage: Storage) -> None:
        assert await storage.get_workload_account("nobody-here") is None

    # ---------------------------------------------------------------- the event log

    async def test_appended_events_have_increasing_seqs(self, storage: Storage) -> None:
        events = [await storage.append_event(type="idle-sleep", user_id=None,
                                             data={"i": i}, now=T0 + i) for i in range(3)]
        assert events[0].seq < events[1].seq < events[2].seq
        assert [e.data for e in events] == [{"i": 0}, {"i": 1}, {"i": 2}]

    async def test_events_are_listed_after_a_seq(self, storage: Storage) -> None:
        events = [await storage.append_event(type="migrate", user_id="u1", data={"n": i},
                                             now=T0) for i in range(5)]
        listed = await storage.list_events(after_seq=events[1].seq)
        assert listed == events[2:]
        assert await storage.list_events() == events
        assert await storage.list_events(after_seq=events[-1].seq) == []

    async def test_list_events_returns_at_most_limit_events(self, storage: Storage) -> None:
        for i in range(5):
            await storage.append_event(type="t", user_id=None, data={"n": i}, now=T0)
        listed = await storage.list_events(limit=2)
        assert [e.data["n"] for e in listed] == [0, 1]

    async def test_events_are_filtered_by_type_and_user(self, storage: Storage) -> None:
        def kinds(events: list[Event]) -> list[tuple[str, str | None]]:
            return [(e.type, e.user_id) for e in events]

        for type_, user_id in [("critical", "u1"), ("critical", "u2"), ("gpu-hint", "u1"),
                               ("critical", None)]:
            await storage.append_event(type=type_, user_id=user_id, data={}, now=T0)
        assert kinds(await storage.list_events(type="critical")) == [
            ("critical", "u1"), ("critical", "u2"), ("critical", None)]
        assert kinds(await storage.list_events(user_id="u1")) == [("critical", "u1"),
                                                                   ("gpu-hint", "u1")]
        assert kinds(await storage.list_events(type="critical", user_id="u1")) == [
            ("critical", "u1")]

    async def test_concurrent_appends_get_distinct_seqs(self, storage: Storage) -> None:
        async def append(i: int) -> None:
            await storage.append_event(type="t", user_id=None, data={"n": i}, now=T0)

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(append, i)
        events = await storage.list_events(limit=100)
        assert len({e.seq for e in events}) == 20
        assert sorted(e.data["n"] for e in events) == list(range(20))

    async def test_events_are_filtered_by_several_types(self, storage: Storage) -> None:
        for type_ in ("critical", "migrate", "idle-sleep", "critical"):
            await storage.append_event(type=type_, user_id=None, data={}, now=T0)
        listed = await storage.list_events(types=["critical", "idle-sleep"])
        assert [e.type for e in listed] == ["critical", "idle-sleep", "critical"]
        assert await storage.list_events(types=[]) == []

    async def test_events_are_filtered_by_a_time_range(self, storage: Storage) -> None:
        for i in range(5):
            await storage.append_event(type="t", user_id=None, data={"n": i}, now=T0 + i)
        listed = await storage.list_events(since=T0 + 1, until=T0 + 3)
        assert [e.data["n"] for e in listed] == [1, 2]  # since inclusive, until exclusive

    async def test_last_event_seq_is_the_newest_events_seq(self, storage: Storage) -> None:
        assert await storage.last_event_seq() == 0
        for _ in range(3):
            newest = await storage.append_event(type="t", user_id=None, data={}, now=T0)
        assert await storage.last_event_seq() == newest.seq

    # ---------------------------------------------------------------- webhook deliveries

    async def _delivery(self, storage: Storage, event: Event, *, webhook: str = "billing",
                        attempt: int = 1, outcome: str = "delivered",
                        now: float = T0) -> Any:
        return await storage.append_webhook_delivery(
            webhook=webhook, url="https://hooks.example.org/markco", event=event,
            attempt=attempt, outcome=outcome, status_code=None if outcome != "delivered"
            else 204, error=None if outcome == "delivered" else "connection refused",
            duration_ms=12, now=now)

    async def test_webhook_delivery_attempts_are_logged_in_order(self,
                                                                 storage: Storage) -> None:
        event = await storage.append_event(type="critical", user_id="u1", data={}, now=T0)
        first = await self._delivery(storage, event, outcome="retrying")
        second = await self._delivery(storage, event, attempt=2)
        assert first.seq < second.seq
        listed = await storage.list_webhook_deliveries()
        assert listed == [first, second]
        assert (second.event_id, second.event_seq, second.event_type, second.user_id,
                second.attempt, second.status_code) == (event.id, event.seq, "critical", "u1",
                                                        2, 204)
        assert first.error == "connection refused" and first.status_code is None

    async def test_webhook_deliveries_are_filtered_and_paged(self, storage: Storage) -> None:
        event = await storage.append_event(type="t", user_id=None, data={}, now=T0)
        other = await storage.append_event(type="t", user_id=None, data={}, now=T0)
        a = await self._delivery(storage, event, webhook="a")
        b = await self._delivery(storage, event, webhook="b", outcome="failed")
        c = await self._delivery(storage, other, webhook="a")
        assert await storage.list_webhook_deliveries(webhook="a") == [a, c]
        assert await storage.list_webhook_deliveries(outcome="failed") == [b]
        assert await storage.list_webhook_deliveries(event_id=other.id) == [c]
        assert await storage.list_webhook_deliveries(after_seq=a.seq, limit=1) == [b]

    async def test_webhook_delivery_with_an_unknown_outcome_is_refused(
            self, storage: Storage) -> None:
        event = await storage.append_event(type="t", user_id=None, data={}, now=T0)
        with pytest.raises(ValueError, match="outcome"):
            await self._delivery(storage, event, outcome="maybe")

    async def test_old_webhook_deliveries_are_purged(self, storage: Storage) -> None:
        event = await storage.append_event(type="t", user_id=None, data={}, now=T0)
        await self._delivery(storage, event, now=T0)
        kept = await self._delivery(storage, event, now=T0 + 100)
        assert await storage.purge_webhook_deliveries(before=T0 + 50) == 1
        assert await storage.list_webhook_deliveries() == [kept]
