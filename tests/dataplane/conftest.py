"""The data plane's test harness: the real Daemon (front door, API app, SQLite, the real auth
plugin) on a free 127.0.0.1 port, with stand-in editors (`echo_editor.EchoEditor`, one hypercorn
per user) and compute replaced by `fake_compute.FakeCompute`: a compute control provider named
`fake` (`compute_kit.instance_compute_plugin`), chosen in the config like any provider, which
the daemon enters and sets as `ctx.compute` (the compute plugin is disabled).

People are made the way markco makes them: users through the auth plugin's `ensure_user`,
sessions through the session authority (`open_session`, the token a login puts in the cookie),
grants through an invite accepted in storage, API tokens through auth's `create_api_token`, an
admin's entry through `grant_admin_entry` (what `POST /admin/enter/<id>` calls).
"""

from __future__ import annotations

import json
import os
import socket
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from markco_trio.builtin.auth.api_tokens import create_api_token
from markco_trio.builtin.auth.authority import SessionAuthority
from markco_trio.builtin.auth.login_links import ensure_user
from markco_trio.builtin.auth.tokens import hash_token, new_token
from markco_trio.clock import Clock
from markco_trio.config import load_config
from markco_trio.daemon import Daemon
from markco_trio.proxy import FrontDoor
from markco_trio.records import GrantRole, User
from markco_trio.roles import Storage
from markco_trio.testing.compute_kit import instance_compute_plugin

from .echo_editor import EchoEditor
from .fake_compute import FakeCompute

NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document",
            "Sec-Fetch-Site": "none"}
XHR = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty", "Sec-Fetch-Site": "same-origin"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def open_sockets() -> int:
    """Sockets this process holds open (its file descriptors that are sockets: SQLite's
    files come and go with its connections, and are not what a leak test counts)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


def rss_bytes(pid: int | str = "self") -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def eventually(check: Callable[[], bool], *, within: float = 5.0) -> None:
    """Wait until `check()` holds (polling: it reads counters); fail after `within` s."""
    with trio.fail_after(within):
        while True:
            if check():
                return
            await trio.sleep(0.01)


@dataclass
class Plane:
    """A running daemon, its fake compute and the users' stand-in editors."""

    daemon: Daemon
    port: int
    compute: FakeCompute
    nursery: trio.Nursery
    editors: dict[str, EchoEditor] = field(default_factory=dict)
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    # Every WebSocket opened through the plane, closed by `start_plane`'s teardown (an autouse
    # async fixture would not do: pytest-trio runs only the fixtures a test asks for).
    websockets: list[RawWebSocket] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage(self) -> Storage:
        storage = self.daemon.ctx.storage
        assert storage is not None
        return storage

    @property
    def authority(self) -> SessionAuthority:
        authority = self.daemon.ctx.sessions
        assert isinstance(authority, SessionAuthority)
        return authority

    @property
    def front_door(self) -> FrontDoor:
        assert self.daemon.front_door is not None
        return self.daemon.front_door

    async def user(self, username: str, *, admin: bool = False, editor: bool = True,
                   ready: bool = True) -> User:
        """A user (created if absent), with a stand-in editor running unless `editor=False`;
        compute reports it ready unless `ready=False`."""
        user, _ = await ensure_user(self.storage, self.daemon.ctx.clock, username, admin=admin)
        if editor and user.id not in self.editors:
            echo = EchoEditor(username)
            await echo.start(self.nursery)
            self.editors[user.id] = echo
            self.compute.addresses[user.id] = echo.address
        if ready and editor:
            self.compute.ready.add(user.id)
        return user

    async def session(self, user: User) -> str:
        """A session token for `user`, as a login sets it in the cookie."""
        token, _ = await self.authority.open_session(user)
        return token

    def cookie(self, token: str, *, extra: str = "") -> dict[str, str]:
        value = f"{self.authority.cookie_name}={token}"
        return {"Cookie": f"{extra}; {value}" if extra else value}

    async def grant(self, owner: User, holder: User, role: str, project: str = "notes") -> None:
        """`holder` accepts `owner`'s invite with `role` (editor | viewer) on `project`."""
        now = self.daemon.ctx.clock.now()
        token = new_token()
        await self.storage.create_invite(owner_id=owner.id, project=project,
                                         role=GrantRole(role), token_hash=hash_token(token),
                                         expires_at=None, max_uses=1, now=now)
        assert await self.storage.accept_invite(hash_token(token), user_id=holder.id, now=now)
        self.authority.evict_user(holder.id)

    async def api_token(self, user: User, scopes: tuple[str, ...] = ("user",)) -> str:
        token, _ = await create_api_token(self.storage, self.daemon.ctx.clock, user,
                                          name="tests", scopes=scopes)
        return token

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=self.url, timeout=10, trust_env=False, **kwargs)
        self.clients.append(client)
        return client


StartPlane = Callable[..., Awaitable[Plane]]


@pytest.fixture
async def start_plane(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[StartPlane]:
    """`plane = await start_plane(server="...extra [server] keys", auth="...")`; `clock`: the
    daemon's wall clock (a `ManualClock` to make an expiry happen)."""
    planes: list[Plane] = []

    async def start(*, server: str = "", auth: str = "",
                    compute: FakeCompute | None = None, clock: Clock | None = None) -> Plane:
        port = free_port()
        text = textwrap.dedent(f"""
            [server]
            listen = "127.0.0.1:{port}"
            public_url = "http://127.0.0.1:{port}"
            data_dir = "data-{port}"
            drain_seconds = 0.5
            """) + textwrap.dedent(server) + textwrap.dedent("""
            [plugins]
            disable = ["compute", "process"]
            modules = ["{module}"]

            [auth]
            login_link = "never"
            revocation_poll_seconds = 0.2
            """) + textwrap.dedent(auth) + '\n[compute_control]\nprovider = "fake"\n'
        fake = compute or FakeCompute()
        fake.nursery = nursery
        path = tmp_path / f"markco-{port}.toml"
        with instance_compute_plugin(fake, name="fake") as module:  # chosen by name
            path.write_text(text.replace("{module}", module))
            config, pm = load_config(path, entry_points=False)
        daemon = Daemon(config, pm, clock=clock)
        await nursery.start(partial(daemon.run, handle_signals=False))
        await eventually(lambda: daemon.readiness.snapshot().ready, within=10)
        plane = Plane(daemon=daemon, port=port, compute=fake, nursery=nursery)
        planes.append(plane)
        return plane

    yield start
    for plane in planes:
        for ws in plane.websockets:
            await ws.aclose()
        for client in plane.clients:
            await client.aclose()
        for editor in plane.editors.values():
            editor.stop()


@pytest.fixture
async def plane(start_plane: StartPlane) -> Plane:
    return await start_plane()


def ws_url(plane: Plane, path: str) -> str:
    return f"ws://127.0.0.1:{plane.port}{path}"


def ws_headers(plane: Plane, headers: dict[str, str] | None = None, *,
               origin: str | None = "self") -> list[tuple[bytes, bytes]]:
    """Handshake headers: `headers`, and an Origin (the public URL unless told otherwise)."""
    out = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    if origin is not None:
        out.append((b"Origin", (plane.url if origin == "self" else origin).encode()))
    return out


class RawWebSocket:
    """A WebSocket client at the frame level (what the proxy must pass unchanged): masked
    frames out, the server's frames in, one at a time, nothing interpreted."""

    def __init__(self, stream: trio.SocketStream, rest: bytes) -> None:
        self.stream = stream
        self._buf = rest

    @classmethod
    async def open(cls, plane: Plane, path: str, headers: dict[str, str] | None = None, *,
                   origin: str | None = "self", port: int | None = None,
                   ) -> tuple[int, RawWebSocket | None]:
        """(101, a connection) or (the refusal's status, None); `port`: another front door
        than the daemon's."""
        port = port or plane.port
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
                 "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
        lines += [f"{k.decode()}: {v.decode()}" for k, v in ws_headers(plane, headers,
                                                                        origin=origin)]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
            data = b""
            with trio.fail_after(5):
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise AssertionError(f"closed without an answer: {data!r}")
                    data += chunk
        except BaseException:
            await stream.aclose()
            raise
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            await stream.aclose()
            return status, None
        ws = cls(stream, rest)
        plane.websockets.append(ws)
        return status, ws

    async def send(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        """One masked frame (opcode 1 text, 2 binary, 8 close, 9 ping, 10 pong)."""
        n = len(payload)
        first = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            length = bytes([0x80 | n])
        elif n < 65536:
            length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "little") ^ int.from_bytes(
            (mask * (n // 4 + 1))[:n], "little")).to_bytes(n, "little") if n else b""
        await self.stream.send_all(first + length + mask + masked)

    async def recv(self) -> tuple[int, bytes]:
        """The server's next frame: (opcode, payload)."""
        with trio.fail_after(10):
            while len(self._buf) < 2 or len(self._buf) < _frame_end(self._buf):
                chunk = await self.stream.receive_some(1 << 20)
                if not chunk:
                    raise EOFError("the connection closed")
                self._buf += chunk
        end = _frame_end(self._buf)
        opcode = self._buf[0] & 0x0F
        payload = self._buf[end - _frame_length(self._buf):end]
        self._buf = self._buf[end:]
        return opcode, payload

    async def aclose(self) -> None:
        await self.stream.aclose()


async def ws_status(plane: Plane, path: str, headers: dict[str, str] | None = None, *,
                    origin: str | None = "self") -> tuple[int, dict[str, Any] | None]:
    """Open a WebSocket; (101, the editor's hello message) or (the refusal's status, None)."""
    status, ws = await RawWebSocket.open(plane, path, headers, origin=origin)
    if ws is None:
        return status, None
    try:
        opcode, payload = await ws.recv()
        assert opcode == 1
        hello: dict[str, Any] = json.loads(payload)
        return status, hello
    finally:
        await ws.aclose()


def _frame_length(data: bytes) -> int:
    n = data[1] & 0x7F
    if n == 126:
        return int.from_bytes(data[2:4], "big")
    if n == 127:
        return int.from_bytes(data[2:10], "big")
    return n


def _frame_end(data: bytes) -> int:
    n = data[1] & 0x7F
    header = 2 if n < 126 else 4 if n == 126 else 10
    if len(data) < header:
        return header + 1
    return header + _frame_length(data)
