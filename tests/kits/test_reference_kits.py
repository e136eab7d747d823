"""The contract kits of the session authority and compute control, run on their in-memory
references (`MemorySessions`, `MemoryCompute`) and on the auth plugin's built-in session
authority (over real SQLite storage). The built-in compute control runs the compute kit in
`tests/compute/test_compute_kit.py` (it needs the process backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from markco_trio.builtin.auth.api_tokens import create_api_token
from markco_trio.builtin.auth.authority import SessionAuthority
from markco_trio.builtin.auth.login_links import ensure_user
from markco_trio.builtin.auth.options import AuthOptions
from markco_trio.builtin.auth.origin import allowed_origins
from markco_trio.builtin.auth.tokens import hash_token
from markco_trio.clock import ManualClock
from markco_trio.roles import ComputeControl
from markco_trio.storage.sqlite import SqliteStorage
from markco_trio.testing.compute_kit import ComputeControlContract, MemoryCompute
from markco_trio.testing.session_kit import (
    Issuer,
    MemoryIssuer,
    MemorySessions,
    SessionAuthorityContract,
)


class TestMemoryCompute(ComputeControlContract):
    @pytest.fixture
    async def compute(self) -> AsyncIterator[ComputeControl]:
        async with MemoryCompute(address=("127.0.0.1", 8999)) as compute:
            yield compute


class TestMemorySessions(SessionAuthorityContract):
    @pytest.fixture
    async def sessions(self) -> AsyncIterator[MemorySessions]:
        async with MemorySessions() as sessions:
            yield sessions

    @pytest.fixture
    def issue(self, sessions: MemorySessions) -> Issuer:
        return MemoryIssuer(sessions)


@dataclass
class BuiltinIssuer:
    """Credentials from the auth plugin's own code paths (open_session, create_api_token,
    close_session, the API's token revocation)."""

    storage: SqliteStorage
    clock: ManualClock
    authority: SessionAuthority

    async def session(self, username: str) -> tuple[str, str]:
        user, _ = await ensure_user(self.storage, self.clock, username, admin=False)
        token, _ = await self.authority.open_session(user)
        return token, user.id

    async def api_token(self, username: str) -> tuple[str, str]:
        user, _ = await ensure_user(self.storage, self.clock, username, admin=False)
        token, _ = await create_api_token(self.storage, self.clock, user, name="kit",
                                          scopes=["user"])
        return token, user.id

    async def revoke(self, token: str) -> None:
        record = await self.storage.get_api_token(hash_token(token), now=self.clock.now())
        if record is None:
            await self.authority.close_session(token)
            return
        await self.storage.revoke_api_token(record.id, now=self.clock.now())
        self.authority.evict_token_hash(record.token_hash)


class TestBuiltinSessions(SessionAuthorityContract):
    @pytest.fixture
    async def storage(self, tmp_path: Path) -> AsyncIterator[SqliteStorage]:
        async with SqliteStorage(tmp_path / "markco.db") as storage:
            await storage.upgrade()
            yield storage

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock(start=1_700_000_000.0)

    @pytest.fixture
    async def sessions(self, storage: SqliteStorage,
                       clock: ManualClock) -> AsyncIterator[SessionAuthority]:
        yield SessionAuthority(storage, clock, AuthOptions(), secure=False,
                               allowed_origins=allowed_origins("http://127.0.0.1:8080", []))

    @pytest.fixture
    def public_origin(self) -> str:
        return "http://127.0.0.1:8080"

    @pytest.fixture
    def issue(self, sessions: SessionAuthority, storage: SqliteStorage,
              clock: ManualClock) -> Issuer:
        return BuiltinIssuer(storage, clock, sessions)
