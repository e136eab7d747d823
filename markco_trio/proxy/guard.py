"""The tunnel guard: an open WebSocket, or a response still streaming from an editor, stays
authorised only as long as its caller is.

A WebSocket to an editor is admitted at its handshake like any request (`gate.admit`); after
that its bytes flow through the tunnel hub and no request passes the gate again. But the
handshake's answer can stop being true: a grant is deleted, a session revoked, every session of
a user ended, a user disabled, an admin's entry expires (DESIGN §5.2). So each tunnel is watched
here with what decided it (its owner and credential), and the decision is made again:

- whenever the session authority's revocation revision moves (an eviction in this process, or
  the storage's revocation epoch moving, which its poll notices), for every open tunnel;
- every `period` seconds for the tunnels admitted by something that expires by itself (an
  admin's entry), which need no revocation to end;
- every minute for all of them, which ends those whose session or API token expired (and
  picks up whatever the authority re-reads after its cache TTL). A session whose tab keeps a
  WebSocket open counts as used, as a request would: this renews it (sliding expiry).

A tunnel no longer admitted is closed (`expire("tunnel_revoked")`: a 1008 close frame to the
client where the stream allows, then both sockets closed). Nothing of this runs per request or
per relayed message: one task, woken by revocations; one lookup per distinct credential at most,
and none while the authority still holds the answer.

The same holds for an HTTP response from an editor that is still streaming (an event stream, a
slow or large download): the exchange watches it here from the moment its body is not all in
hand (never for a response that arrived whole with its head) until it ended, and a stream no
longer admitted is ended (`expire("stream_revoked")`: both sockets closed, the client gets no
further byte and sees the response break off).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from markco_trio.proxy.gate import Credential, EditorGate

__all__ = ["TunnelGuard"]

logger = logging.getLogger("markco.proxy")

_PERIOD: Final = 0.25  # how often admissions that expire by themselves are decided again
_FULL_EVERY: Final = 60.0  # how often every open tunnel is decided again regardless


class Expirable(Protocol):
    """A connection the guard may end (`exchange.ClientConnection`)."""

    def expire(self, reason: str) -> None: ...


@dataclass(slots=True)
class _Watched:
    owner: str
    credential: Credential
    timed: bool
    reason: str


class TunnelGuard:
    """Decides the open WebSockets and streaming responses of editors again when their
    admission may have changed."""

    def __init__(self, gate: EditorGate, *, period: float = _PERIOD) -> None:
        self._gate = gate
        self._period = period
        self._open: dict[Expirable, _Watched] = {}
        self._timed = 0
        self.closed = 0  # tunnels and streams ended because their caller lost access

    def __len__(self) -> int:
        return len(self._open)

    def watch(self, conn: Expirable, owner: str, credential: Credential, *,
              timed: bool = False, reason: str = "tunnel_revoked") -> None:
        """Keep deciding whether `conn`'s tunnel (or streaming response) to `owner`'s editor is
        still admitted; if not, `conn.expire(reason)`."""
        self.forget(conn)  # (a connection has one tunnel or stream at a time)
        self._open[conn] = _Watched(owner, credential, timed, reason)
        self._timed += timed

    def forget(self, conn: Expirable) -> None:
        """`conn`'s tunnel (or stream) ended."""
        watched = self._open.pop(conn, None)
        if watched is not None:
            self._timed -= watched.timed

    async def run(self) -> None:
        """Decide again on every revocation (and periodically for timed admissions), until
        cancelled."""
        gate = self._gate
        seen = gate.revision
        everything = False  # decide every tunnel again (not only the timed ones)
        failing = False
        next_full = trio.current_time() + _FULL_EVERY
        while True:
            # Woken every period even with nothing timed to decide: a tunnel opened meanwhile
            # may be timed (a handful of wake-ups a second, each a dict scan at most).
            with trio.move_on_after(self._period):  # one scope per wake-up, never per request
                seen = await gate.wait_revision(seen)
                everything = True
            if trio.current_time() >= next_full:
                next_full = trio.current_time() + _FULL_EVERY
                everything = True
            if not (everything or self._timed):
                continue
            try:
                await self._decide(everything)
            except Exception as exc:  # the authority could not answer: keep them, try again
                if not failing:
                    logger.warning("proxy: cannot decide open WebSockets again now (trying "
                                   "again until it works): %s", exc)
                failing = everything = True
            else:
                failing = everything = False

    async def _decide(self, everything: bool) -> None:
        answers: dict[tuple[str, Credential], bool] = {}
        for conn, watched in list(self._open.items()):
            if not (everything or watched.timed) or self._open.get(conn) is not watched:
                continue
            key = (watched.owner, watched.credential)
            allowed = answers.get(key)
            if allowed is None:
                allowed = answers[key] = await self._gate.still_admitted(*key)
            # (While the authority answered, the stream may have ended and the connection
            # moved on to another request: only what was decided is ended.)
            if not allowed and self._open.get(conn) is watched:
                self.forget(conn)
                self.closed += 1
                conn.expire(watched.reason)
