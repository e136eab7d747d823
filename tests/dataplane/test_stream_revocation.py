"""The authorisation matrix over time, for HTTP responses: one still streaming from an editor is
authorised for as long as it streams, as a WebSocket is (`test_tunnel_revocation.py`).

Revoking what let the request in — a grant, every session of a user (logout everywhere), an API
token, the user themself — breaks the response off within a second: the front door closes the
client's connection, and what the editor sends afterwards never reaches the client. It holds for
every way a body streams: chunked (an event stream), delimited by the editor closing, and a large
body of known length, which the front door splices (socket -> pipe -> socket). The streams the
revocation does not concern (the owner's own) keep flowing.

The real daemon, auth plugin and front door over loopback; the editor is a raw socket server
(below) so that the test decides exactly when each byte of a response leaves it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio

from markco_trio.proxy.core import SPLICE_AT_LEAST
from markco_trio.records import User

from .conftest import XHR, Plane, eventually

Opened = list[trio.SocketStream]
WITHIN = 1.0  # seconds: what DESIGN §5.2 promises for WebSockets, and so for streams
BIG = 4 * SPLICE_AT_LEAST  # a body of known length this large is spliced by the front door
FIRST = 64 * 1024  # what the editor sends of the big body with its head


@pytest.fixture
async def opened() -> AsyncIterator[list[trio.SocketStream]]:
    """The test's client connections, closed at its end."""
    streams: list[trio.SocketStream] = []
    yield streams
    for stream in streams:
        await stream.aclose()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


# The response each path gets: its head and first bytes; `release` sends more, framed so.
RESPONSES: dict[str, tuple[bytes, Callable[[bytes], bytes]]] = {
    "/sse": (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
             b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
             + chunk(b"data: first\n\n"), chunk),
    "/until-close": (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                     b"\r\nfirst\n", bytes),
    "/big": (b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
             b"content-length: %d\r\nconnection: close\r\n\r\n" % BIG + b"a" * FIRST, bytes),
}


@dataclass
class Upstream:
    """One response the editor is streaming: `release` sends more of it; `gone` is set once
    the front door closed the editor's side (the stream can carry nothing more)."""

    path: str
    stream: trio.SocketStream
    frame: Callable[[bytes], bytes]
    gone: trio.Event = field(default_factory=trio.Event)

    async def release(self, data: bytes) -> bool:
        """Send `data` (framed for this response); False if the front door closed it."""
        try:
            await self.stream.send_all(self.frame(data))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.gone.set()
            return False
        return True


class StreamingEditor:
    """A stand-in editor as a raw socket server: each request gets its path's response head
    and first bytes at once, and the rest only when the test releases it."""

    def __init__(self) -> None:
        self.port = 0
        self._send, self._receive = trio.open_memory_channel[Upstream](10)

    async def start(self, plane: Plane, user: User) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        plane.nursery.start_soon(trio.serve_listeners, self._serve, listeners)
        plane.compute.addresses[user.id] = ("127.0.0.1", self.port)
        plane.compute.ready.add(user.id)

    async def _serve(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            got = await stream.receive_some(65536)
            if not got:
                return
            data += got
        path = data.split(b" ", 2)[1].decode()
        head, frame = RESPONSES[path]
        await stream.send_all(head)
        upstream = Upstream(path, stream, frame)
        await self._send.send(upstream)
        try:  # the front door sends nothing more: a read ends when it closes its side
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        upstream.gone.set()

    async def next(self) -> Upstream:
        with trio.fail_after(5):
            return await self._receive.receive()


class Client:
    """A raw HTTP client holding one streaming response: what arrived, and whether the
    connection ended."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.received = b""
        self.ended = False

    @classmethod
    async def get(cls, plane: Plane, owner: User, path: str, headers: dict[str, str],
                  opened: list[trio.SocketStream]) -> Client:
        lines = [f"GET /u/{owner.id}{path} HTTP/1.1", f"Host: 127.0.0.1:{plane.port}",
                 *(f"{k}: {v}" for k, v in {**headers, **XHR}.items())]
        stream = await trio.open_tcp_stream("127.0.0.1", plane.port)
        opened.append(stream)  # (closed by the test's teardown, whatever happened)
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        return cls(stream)

    async def read(self) -> bytes:
        """The next bytes (b"" once the connection ended)."""
        try:
            data = await self.stream.receive_some(1 << 20)
        except trio.BrokenResourceError:  # a reset ends it too
            data = b""
        self.ended = not data
        self.received += data
        return data

    async def read_until(self, marker: bytes) -> None:
        with trio.fail_after(5):
            while marker not in self.received:
                assert await self.read(), f"ended before {marker!r}: {self.received[:300]!r}"

    async def assert_broken_off(self, upstream: Upstream) -> None:
        """The connection ends in time with no further byte of the response, and the
        editor's side is closed too (whatever it sends next goes nowhere)."""
        with trio.fail_after(WITHIN):
            assert await self.read() == b""
            await upstream.gone.wait()
        assert not await upstream.release(b"data: after revocation\n\n")
        await self.stream.aclose()

    async def assert_flowing(self, upstream: Upstream) -> None:
        assert await upstream.release(b"data: still here\n\n")
        await self.read_until(b"data: still here")


Revoke = Callable[[Plane, User, User], Awaitable[None]]


async def bob_streaming_alices(
    plane: Plane, opened: Opened, path: str, *, token: bool = False,
) -> tuple[User, User, StreamingEditor, Client, Upstream]:
    """Bob (a collaborator, by session or API token) holds a streaming response of `path` from
    alice's editor."""
    alice, bob = await plane.user("alice", editor=False), await plane.user("bob", editor=False)
    await plane.grant(alice, bob, "editor")
    editor = StreamingEditor()
    await editor.start(plane, alice)
    if token:
        headers = {"Authorization": f"Bearer {await plane.api_token(bob)}"}
    else:
        headers = plane.cookie(await plane.session(bob))
    client = await Client.get(plane, alice, path, headers, opened)
    upstream = await editor.next()
    await client.read_until(b"first" if path != "/big" else b"a" * 1024)
    assert client.received.startswith(b"HTTP/1.1 200 ")
    return alice, bob, editor, client, upstream


async def revoke_grant(plane: Plane, alice: User, bob: User) -> None:
    [grant] = await plane.storage.list_grants(user_id=bob.id)
    assert await plane.storage.revoke_grant(grant.id, owner_id=alice.id,
                                            now=plane.daemon.ctx.clock.now())
    plane.authority.evict_user(bob.id)  # (what the invites API does after a revocation)


async def test_revoking_a_grant_breaks_off_the_collaborators_event_stream(
        plane: Plane, opened: Opened) -> None:
    alice, bob, editor, bobs, bobs_upstream = await bob_streaming_alices(plane, opened, "/sse")
    alices = await Client.get(plane, alice, "/sse", plane.cookie(await plane.session(alice)),
                              opened)
    alices_upstream = await editor.next()
    await alices.read_until(b"data: first")
    await revoke_grant(plane, alice, bob)
    await bobs.assert_broken_off(bobs_upstream)
    await alices.assert_flowing(alices_upstream)  # the owner's own stream is not concerned
    assert plane.front_door.statistics().errors["stream_revoked"] == 1


async def test_revoking_a_grant_breaks_off_a_spliced_download(plane: Plane, opened: Opened) -> None:
    alice, bob, _, client, upstream = await bob_streaming_alices(plane, opened, "/big")
    await revoke_grant(plane, alice, bob)
    await client.assert_broken_off(upstream)
    assert len(client.received) < BIG


async def test_a_download_that_keeps_flowing_is_broken_off_in_time(
        plane: Plane, opened: Opened) -> None:
    """The editor keeps sending (the front door splices without ever waiting long on it):
    the revocation still ends the body short."""
    alice, bob, _, client, upstream = await bob_streaming_alices(plane, opened, "/big")

    async def keep_sending() -> None:
        for _ in range(BIG // 16384):  # (more than the body holds: it is broken off first)
            if not await upstream.release(b"b" * 16384):
                return
            await trio.sleep(0.005)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_sending)
        await client.read_until(b"b" * 16384)
        await revoke_grant(plane, alice, bob)
        with trio.fail_after(WITHIN):
            while await client.read():
                pass
        await upstream.gone.wait()
    assert len(client.received) < BIG


async def test_revoking_a_grant_breaks_off_a_response_ended_by_closing(
        plane: Plane, opened: Opened) -> None:
    alice, bob, _, client, upstream = await bob_streaming_alices(plane, opened, "/until-close")
    await revoke_grant(plane, alice, bob)
    await client.assert_broken_off(upstream)


async def test_logging_out_everywhere_breaks_off_the_users_streams(
        plane: Plane, opened: Opened) -> None:
    alice, bob, _, client, upstream = await bob_streaming_alices(plane, opened, "/sse")
    assert await plane.authority.close_user_sessions(bob.id) == 1
    await client.assert_broken_off(upstream)


async def test_revoking_an_api_token_breaks_off_its_stream(plane: Plane, opened: Opened) -> None:
    _, bob, _, client, upstream = await bob_streaming_alices(plane, opened, "/sse", token=True)
    [record] = await plane.storage.list_api_tokens(bob.id)
    assert await plane.storage.revoke_api_token(record.id, now=plane.daemon.ctx.clock.now())
    plane.authority.evict_token_hash(record.token_hash)  # (what the tokens API does)
    await client.assert_broken_off(upstream)


async def test_disabling_a_user_breaks_off_their_spliced_download(
        plane: Plane, opened: Opened) -> None:
    """Made through the storage only (as another process would): the revocation epoch moves,
    which the test daemon polls every 0.2 s."""
    _, bob, _, client, upstream = await bob_streaming_alices(plane, opened, "/big")
    await plane.storage.update_user(bob.id, disabled=True)
    await client.assert_broken_off(upstream)


async def test_a_stream_that_ended_is_no_longer_watched(plane: Plane, opened: Opened) -> None:
    """A finished response leaves nothing behind in the guard (and a short one, whole with
    its head, is never watched)."""
    alice, bob, _, client, upstream = await bob_streaming_alices(plane, opened, "/sse")
    assert plane.front_door.statistics().guarded == 1
    assert await upstream.release(b"")  # the last chunk: the response ends
    await client.read_until(b"0\r\n\r\n")
    await eventually(lambda: plane.front_door.statistics().guarded == 0)
    await revoke_grant(plane, alice, bob)
    await trio.sleep(0.3)
    assert plane.front_door.statistics().errors.get("stream_revoked", 0) == 0


async def test_revoking_a_grant_ends_the_collaborators_progress_stream(
        plane: Plane, opened: Opened) -> None:
    """The wait page's progress stream (`/_markco/progress/<owner>`) follows an editor's start
    for whoever may enter it: only while they may."""
    alice = await plane.user("alice", ready=False)
    bob = await plane.user("bob", editor=False)
    await plane.grant(alice, bob, "editor")
    stream = await trio.open_tcp_stream("127.0.0.1", plane.port)
    opened.append(stream)
    cookie = plane.cookie(await plane.session(bob))["Cookie"]
    await stream.send_all(f"GET /_markco/progress/{alice.id} HTTP/1.1\r\nHost: t\r\n"
                          f"Cookie: {cookie}\r\n\r\n".encode())
    client = Client(stream)
    await client.read_until(b"event: progress")
    assert client.received.startswith(b"HTTP/1.1 200 ")
    await revoke_grant(plane, alice, bob)
    with trio.fail_after(WITHIN):
        while await client.read():
            pass
    assert plane.front_door.statistics().errors["stream_revoked"] == 1
