"""`SessionAuthority`: who is calling, answered from memory (DESIGN §3.1, §5.1).

The daemon's one place that turns a session cookie or an API token into a `Principal` (with
the grants it holds). It is the auth plugin's `builtin` session authority (`ctx.sessions`) for
the front door, which asks on every proxied request, so its hot path is synchronous,
allocation-light and never touches the database:

    authority = ctx.sessions
    answer = authority.principal_for_cookie_nowait(cookie_header, entering=owner_id)
    if answer is LOOKUP_NEEDED:               # not cached (first request, or after a flush)
        answer = await authority.principal_for_cookie(cookie_header, entering=owner_id)
    # answer: Principal, or None (anonymous: no cookie, unknown, expired, revoked, tampered)

- Tokens are looked up by their SHA-256 hash; unknown hashes are remembered for a minute, so
  a client replaying a bad cookie costs one database read, not one per request.
- Sliding renewal: a hit pushes the session's expiry forward in memory at most once per
  `renew_after_seconds`; the new expiries are written in batches by `flush_renewals` (a
  supervised service), never one write per request.
- Revocation: revocations made in this process evict at once; any revocation anywhere bumps
  the storage's revocation epoch, and `check_revocations` (polled every
  `revocation_poll_seconds` by a supervised service) drops the whole cache when it moves. So a
  `markco sessions revoke-all` in another process reaches the daemon within the poll interval.
  Cached principals are also re-read after `cache_ttl_seconds`. Each of these moments moves
  `revision`: whoever keeps an earlier answer (the front door's open WebSockets) awaits
  `wait_revision` and decides again.
- Admin entry: `entering=<owner id>` marks the returned principal `admin_entry=True` only when
  the caller is an admin whose session explicitly entered that owner's editor
  (`grant_admin_entry`, audited as an `admin.entry` event) and the entry has not expired. The
  flag is computed per request for that one owner: never reuse such a principal for another.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final, Literal

import trio

from ...authz import HeldGrant, Principal
from ...clock import Clock
from ...records import Grant, Session, User
from ...roles import Storage
from .editor_origin import EDITOR_COOKIE, EditorOrigins
from .options import AuthOptions
from .origin import same_origin_request
from .tokens import API_TOKEN_PREFIX, cookie_value, hash_token, new_token, well_formed

UNKNOWN_TOKEN_SECONDS = 60.0  # how long an unknown hash is answered "anonymous" from memory
MAX_UNKNOWN = 50_000
MAX_ENTRIES = 100_000


class LookupNeeded:
    """The type of `LOOKUP_NEEDED`: the answer is not in memory; await the lookup."""

    _instance: LookupNeeded | None = None

    def __new__(cls) -> LookupNeeded:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "LOOKUP_NEEDED"

    def __bool__(self) -> bool:
        return False  # so `if answer:` never mistakes it for a principal


LOOKUP_NEEDED: Final = LookupNeeded()

Kind = Literal["session", "token"]


@dataclass
class _Entry:
    principal: Principal
    kind: Kind
    created_at: float
    expires_at: float  # math.inf: never
    renewed_at: float
    loaded_at: float


@dataclass(frozen=True)
class AuthorityStatistics:
    """Counters for metrics and tests."""

    cached: int
    unknown_cached: int
    hits: int
    misses: int
    loads: int
    cache_clears: int
    pending_renewals: int
    epoch: int | None


def principal_of(user: User, grants: Iterable[Grant], *, scopes: frozenset[str] | None,
                 via: str) -> Principal:
    """The principal of `user` holding `grants` (scopes None: a browser session)."""
    return Principal(
        user_id=user.id, username=user.username, is_admin=user.is_admin, scopes=scopes,
        grants=frozenset(HeldGrant(g.owner_id, g.project, g.role.value) for g in grants),
        via=via)


class SessionAuthority:
    """The session and API-token cache of one daemon (see the module docstring).

    Interface for the front door and other plugins:
    - `cookie_name`: the session cookie's name (`__Host-` prefixed on https).
    - `principal_for_cookie_nowait(cookie_header, *, entering=None)`
      → `Principal | None | LOOKUP_NEEDED`; synchronous, never does I/O.
    - `async principal_for_cookie(cookie_header, *, entering=None) -> Principal | None`.
    - `async principal_for_token(token) -> Principal | None` for `Authorization: Bearer`.
    - `session_token(cookie_header) -> str | None`, `set_cookie_header(token)`,
      `clear_cookie_header()` for code that sets or removes the cookie.
    - `origin_allowed(origin, referer) -> bool`: whether a state-changing request (or a
      WebSocket handshake) comes from a markco page (the public URL or a trusted origin).
    """

    def __init__(self, storage: Storage, clock: Clock, options: AuthOptions, *,
                 secure: bool, allowed_origins: frozenset[str] = frozenset()) -> None:
        self._storage = storage
        self._clock = clock
        self._options = options
        self.secure = secure
        self.allowed_origins = allowed_origins
        self.cookie_name = ("__Host-" if secure else "") + options.cookie_name
        self.login_path = "/login"  # the login page (`web/login.py`), for the front door
        # Per-user editor origins (`[server] editor_domain`): their cookie and codes.
        self.editor_cookie_name = ("__Host-" if secure else "") + EDITOR_COOKIE
        self.editor_origins = EditorOrigins()
        self._entries: dict[str, _Entry] = {}
        self._unknown: dict[str, float] = {}
        self._loading: dict[str, trio.Event] = {}
        self._touches: dict[str, tuple[float, float]] = {}
        self._admin_entries: dict[str, dict[str, float]] = {}
        self._generation = 0
        self._epoch: int | None = None
        self._revision = 0
        self._revised = trio.Event()
        self._hits = self._misses = self._loads = self._clears = 0

    # ------------------------------------------------------------------ the hot path

    def session_token(self, cookie_header: str | None) -> str | None:
        """The session token in a `Cookie` header, if any (not checked)."""
        return cookie_value(cookie_header, self.cookie_name)

    def principal_for_cookie_nowait(self, cookie_header: str | None, *,
                                    entering: str | None = None,
                                    ) -> Principal | None | LookupNeeded:
        """The principal of the session cookie in `cookie_header`, from memory only: a
        `Principal`, None (anonymous), or `LOOKUP_NEEDED` (await `principal_for_cookie`).
        `entering`: the owner whose editor the request is for (see admin entry)."""
        token = cookie_value(cookie_header, self.cookie_name)
        if token is None or not _session_shaped(token):
            return None
        return self._hit(hash_token(token), "session", entering)

    async def principal_for_cookie(self, cookie_header: str | None, *,
                                   entering: str | None = None) -> Principal | None:
        """Like `principal_for_cookie_nowait`, reading storage when needed."""
        token = cookie_value(cookie_header, self.cookie_name)
        if token is None:
            return None
        return await self.principal_for_session(token, entering=entering)

    async def principal_for_session(self, token: str, *,
                                    entering: str | None = None) -> Principal | None:
        """The principal of a raw session token (as found in the cookie)."""
        if not _session_shaped(token):
            return None
        return await self._resolve(hash_token(token), "session", entering)

    async def principal_for_token(self, token: str) -> Principal | None:
        """The principal of an API token (`Authorization: Bearer`): its user, limited to the
        token's scopes. None when unknown, revoked, expired or its user is disabled."""
        if not token.startswith(API_TOKEN_PREFIX) or not well_formed(token):
            return None
        return await self._resolve(hash_token(token), "token", None)

    def _hit(self, key: str, kind: Kind, entering: str | None,
             ) -> Principal | None | LookupNeeded:
        now = self._clock.now()
        entry = self._entries.get(key)
        if entry is None or entry.kind != kind:
            if self._unknown.get(key, 0.0) > now:
                self._hits += 1
                return None
            self._misses += 1
            return LOOKUP_NEEDED
        if entry.expires_at <= now:
            # Expired as far as this daemon knows; storage decides (another daemon sharing
            # the database may have renewed it), and remembers it as unknown if so.
            del self._entries[key]
            self._misses += 1
            return LOOKUP_NEEDED
        if now - entry.loaded_at >= self._options.cache_ttl_seconds:
            del self._entries[key]
            self._misses += 1
            return LOOKUP_NEEDED
        self._hits += 1
        if kind == "session":
            self._renew(key, entry, now)
        return self._as_entering(key, entry.principal, entering, now)

    def _renew(self, key: str, entry: _Entry, now: float) -> None:
        if now - entry.renewed_at < self._options.renew_after_seconds:
            return
        entry.renewed_at = now
        new_expiry = min(now + self._options.session_ttl,
                         entry.created_at + self._options.session_max_age)
        if new_expiry > entry.expires_at:
            entry.expires_at = new_expiry
            self._touches[key] = (now, new_expiry)

    def _as_entering(self, key: str, principal: Principal, entering: str | None,
                     now: float) -> Principal:
        if entering is None or not principal.is_admin or entering == principal.user_id:
            return principal
        if self._admin_entries.get(key, {}).get(entering, 0.0) > now:
            return replace(principal, admin_entry=True)
        return principal

    # ------------------------------------------------------------------ editor origins

    def principal_for_editor_cookie_nowait(self, cookie_header: str | None, owner: str,
                                           ) -> Principal | None | LookupNeeded:
        """The principal behind the editor-origin cookie in `cookie_header` for `owner`'s
        editor origin: its parent session's, computed for entering `owner` (so an admin's
        entry counts). None when the cookie is absent, unknown, or for another owner's origin;
        `LOOKUP_NEEDED` when the parent session is not in memory."""
        parent = self._editor_parent(cookie_header, owner)
        if parent is None:
            return None
        return self._hit(parent, "session", owner)

    async def principal_for_editor_cookie(self, cookie_header: str | None,
                                          owner: str) -> Principal | None:
        """Like `principal_for_editor_cookie_nowait`, reading storage when needed; an editor
        token whose parent session ended is forgotten."""
        parent = self._editor_parent(cookie_header, owner)
        if parent is None:
            return None
        principal = await self._resolve(parent, "session", owner)
        if principal is None:
            self.editor_origins.end_session(parent)
        return principal

    def _editor_parent(self, cookie_header: str | None, owner: str) -> str | None:
        token = cookie_value(cookie_header, self.editor_cookie_name)
        if token is None:
            return None
        found = self.editor_origins.lookup(token, self._clock.now())
        if found is None or found.owner != owner:
            return None
        return found.parent

    def mint_editor_code(self, session_token: str, owner: str) -> str:
        """A one-time code that the front door on `owner`'s editor origin exchanges for an
        editor cookie tied to this session (the caller checked the session and the
        authorisation)."""
        return self.editor_origins.mint(hash_token(session_token), owner, self._clock.now())

    def redeem_editor_code(self, code: str, owner: str) -> str | None:
        """The editor token for a one-time `code` minted for `owner` (see `editor_origin`),
        or None; the code is used up either way."""
        return self.editor_origins.redeem(code, owner, self._clock.now(),
                                          self._options.session_max_age)

    def editor_set_cookie_header(self, token: str) -> str:
        """The `Set-Cookie` value of the editor-origin cookie: host-only (no Domain),
        Path=/, HttpOnly, SameSite=Lax, Secure on https (`__Host-` then)."""
        return (f"{self.editor_cookie_name}={token}; "
                f"Max-Age={int(self._options.session_max_age)}; Path=/; HttpOnly; "
                f"SameSite=Lax" + ("; Secure" if self.secure else ""))

    def origin_allowed(self, origin: str | None, referer: str | None = None) -> bool:
        """Whether a request's `Origin` (or `Referer`) is markco's own (see `origin.py`)."""
        return same_origin_request(origin, referer, self.allowed_origins)

    # ------------------------------------------------------------------ lookups

    async def _resolve(self, key: str, kind: Kind, entering: str | None) -> Principal | None:
        while True:
            answer = self._hit(key, kind, entering)
            if not isinstance(answer, LookupNeeded):
                return answer
            loading = self._loading.get(key)
            if loading is None:
                break
            await loading.wait()  # one lookup per token however many requests wait for it
        done = self._loading[key] = trio.Event()
        try:
            entry = await (self._load_session(key) if kind == "session"
                           else self._load_token(key))
        finally:
            del self._loading[key]
            done.set()
        if entry is None:
            return None
        now = self._clock.now()
        if kind == "session":
            self._renew(key, entry, now)
        return self._as_entering(key, entry.principal, entering, now)

    async def _load_session(self, key: str) -> _Entry | None:
        generation = self._generation
        self._loads += 1
        now = self._clock.now()
        # A renewal not yet written is newer than the database: judge the row as of that
        # renewal (it still checks revocation), then apply the renewed expiry.
        pending = self._touches.get(key)
        session = await self._storage.get_session(key, now=pending[0] if pending else now)
        expires = session.expires_at if session is not None else 0.0
        renewed = session.last_seen_at if session is not None else 0.0
        if pending is not None:
            renewed, expires = max(renewed, pending[0]), max(expires, pending[1])
        user = await self._storage.get_user(session.user_id) if session else None
        if session is None or expires <= now or user is None or user.disabled:
            self._forget(key, generation)
            return None
        grants = await self._storage.list_grants(user_id=user.id)
        entry = _Entry(principal=principal_of(user, grants, scopes=None, via="session"),
                       kind="session", created_at=session.created_at, expires_at=expires,
                       renewed_at=renewed, loaded_at=self._clock.now())
        self._store(key, entry, generation)
        return entry

    async def _load_token(self, key: str) -> _Entry | None:
        generation = self._generation
        self._loads += 1
        token = await self._storage.get_api_token(key, now=self._clock.now())
        user = await self._storage.get_user(token.user_id) if token else None
        if token is None or user is None or user.disabled:
            self._forget(key, generation)
            return None
        grants = await self._storage.list_grants(user_id=user.id)
        now = self._clock.now()
        entry = _Entry(
            principal=principal_of(user, grants, scopes=frozenset(token.scopes), via="token"),
            kind="token", created_at=token.created_at,
            expires_at=token.expires_at if token.expires_at is not None else math.inf,
            renewed_at=now, loaded_at=now)
        self._store(key, entry, generation)
        return entry

    def _store(self, key: str, entry: _Entry, generation: int) -> None:
        # A revocation seen while this lookup was reading makes its result suspect: answer
        # the request that asked, but keep nothing.
        if generation != self._generation:
            return
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.pop(next(iter(self._entries)))  # the oldest
        self._entries[key] = entry

    def _forget(self, key: str, generation: int) -> None:
        if generation == self._generation:
            self._remember_unknown(key, self._clock.now())

    def _remember_unknown(self, key: str, now: float) -> None:
        if len(self._unknown) >= MAX_UNKNOWN:
            self._unknown.clear()  # a flood of junk tokens: start over rather than grow
        self._unknown[key] = now + UNKNOWN_TOKEN_SECONDS

    # ------------------------------------------------------------------ sessions

    async def open_session(self, user: User, *,
                           user_agent: str | None = None) -> tuple[str, Session]:
        """Create a session for `user`; return its token (for the cookie, never stored) and
        the record."""
        token = new_token()
        now = self._clock.now()
        expires = now + min(self._options.session_ttl, self._options.session_max_age)
        session = await self._storage.create_session(
            user_id=user.id, token_hash=hash_token(token), expires_at=expires, now=now,
            user_agent=(user_agent or None) and user_agent[:200])
        return token, session

    async def close_session(self, token: str) -> bool:
        """Revoke the session of `token` (logout); False if it was not live."""
        key = hash_token(token)
        self._evict(key)
        self.editor_origins.end_session(key)
        try:
            return await self._storage.revoke_session(key, now=self._clock.now())
        finally:
            self._revoked()

    async def close_session_record(self, session: Session) -> bool:
        """Revoke a session known by its record (the sessions API)."""
        self._evict(session.token_hash)
        self.editor_origins.end_session(session.token_hash)
        try:
            return await self._storage.revoke_session(session.token_hash,
                                                      now=self._clock.now())
        finally:
            self._revoked()

    async def close_user_sessions(self, user_id: str) -> int:
        """Revoke every session of a user (logout everywhere); return how many."""
        count = await self._storage.revoke_user_sessions(user_id, now=self._clock.now())
        self.evict_user(user_id)
        return count

    def evict_user(self, user_id: str) -> None:
        """Drop the user's cached sessions and tokens (after their grants or rights
        changed), so the next request reads them again."""
        for key in [k for k, e in self._entries.items() if e.principal.user_id == user_id]:
            self._evict(key)
        self._revoked()

    def evict_token_hash(self, token_hash: str) -> None:
        """Drop one cached session or API token by its hash (after revoking it)."""
        self._evict(token_hash)
        self._revoked()

    def _evict(self, key: str) -> None:
        self._entries.pop(key, None)
        self._touches.pop(key, None)
        self._admin_entries.pop(key, None)

    def set_cookie_header(self, token: str) -> str:
        """The `Set-Cookie` value that stores session `token` in the browser: HttpOnly,
        SameSite=Lax, Path=/, Secure on https. Its Max-Age is the absolute session limit;
        the server-side expiry (sliding) is what decides."""
        return (f"{self.cookie_name}={token}; Max-Age={int(self._options.session_max_age)}; "
                f"Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if self.secure else ""))

    def clear_cookie_header(self) -> str:
        """The `Set-Cookie` value that removes the session cookie."""
        return (f"{self.cookie_name}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; "
                f"Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if self.secure else ""))

    # ------------------------------------------------------------------ admin entry

    def grant_admin_entry(self, session_token: str, owner_id: str) -> float:
        """Let the admin session of `session_token` into `owner_id`'s editor until the
        returned time. The caller records the `admin.entry` event."""
        expires = self._clock.now() + self._options.admin_entry_minutes * 60
        self._admin_entries.setdefault(hash_token(session_token), {})[owner_id] = expires
        return expires

    # ------------------------------------------------------------------ maintenance

    async def check_revocations(self) -> bool:
        """Read the revocation epoch; when it moved, drop every cached answer. True if it
        did (the first reading only records it)."""
        epoch = await self._storage.revocation_epoch()
        if self._epoch is None:
            self._epoch = epoch
            return False
        if epoch == self._epoch:
            return False
        self._epoch = epoch
        self.clear()
        return True

    def clear(self) -> None:
        """Drop every cached principal and unknown token (lookups in flight keep nothing)."""
        self._generation += 1
        self._entries.clear()
        self._unknown.clear()
        self._clears += 1
        self._revoked()

    @property
    def revision(self) -> int:
        """Moves whenever an answer given before may have been revoked (an eviction, a moved
        revocation epoch, a cleared cache)."""
        return self._revision

    async def wait_revision(self, seen: int) -> int:
        """Wait until `revision` is no longer `seen`; return it."""
        while self._revision == seen:
            await self._revised.wait()
        return self._revision

    def _revoked(self) -> None:
        self._revision += 1
        self._revised.set()
        self._revised = trio.Event()

    async def flush_renewals(self) -> int:
        """Write the pending sliding renewals in one batch; return how many sessions."""
        if not self._touches:
            return 0
        batch, self._touches = self._touches, {}
        try:
            await self._storage.touch_sessions(batch)
        except BaseException:
            for key, (seen, expires) in batch.items():  # keep them for the next flush
                old = self._touches.get(key)
                self._touches[key] = (seen, expires) if old is None or old[1] < expires else old
            raise
        return len(batch)

    def purge(self) -> None:
        """Forget expired unknown-token entries and admin entries."""
        now = self._clock.now()
        self._unknown = {k: t for k, t in self._unknown.items() if t > now}
        self.editor_origins.purge(now)
        for key in list(self._admin_entries):
            live = {o: t for o, t in self._admin_entries[key].items() if t > now}
            if live:
                self._admin_entries[key] = live
            else:
                del self._admin_entries[key]

    def statistics(self) -> AuthorityStatistics:
        """The cache's counters."""
        return AuthorityStatistics(
            cached=len(self._entries), unknown_cached=len(self._unknown), hits=self._hits,
            misses=self._misses, loads=self._loads, cache_clears=self._clears,
            pending_renewals=len(self._touches), epoch=self._epoch)


def _session_shaped(token: str) -> bool:
    return well_formed(token) and not token.startswith(API_TOKEN_PREFIX)
