"""The runtime front (DESIGN §3.4): one user's stable endpoint to their runtime.

The daemon listens on a unix socket per user, `<data_dir>/fronts/<user_id>/runtime.sock`
(0600, owned by the account the user's workloads run as, in a root-owned 0711 directory: the
editor can connect, nothing can swap the socket). It speaks HTTP/1.1 and forwards each request to
wherever the runtime is NOW — so the runtime can be restarted, restored or moved without the
editor being re-pointed, and the path survives daemon restarts.

- A request that arrives while the runtime is starting is HELD until it is ready, bounded in
  time (`hold_seconds`) and in number (`hold_max`); past either, 503 with Retry-After.
- An execute request (`POST /mrp/v1/execute...`) to a stopped runtime starts it (`wake=True`);
  other requests to a stopped runtime get 503 at once.
- Executions in flight are counted (`statistics()`) and reported as activity; the code an
  execute request carries (its JSON `code`, up to 256 KiB) goes to `on_code` for the
  monitor's hints.
- `POST /markco/v1/activity` is answered by the front itself (204): the editor reports user
  input, which `on_input` records as activity. The runtime is not touched.
- Bodies stream both ways, chunk by chunk: server-sent events arrive event by event.
- `GET /markco/v1/notice` is answered by the front itself, never forwarded (a sleeping runtime
  stays asleep): `{"notice": <text or null>, "id": <opaque id or null>}`, the notice compute
  has for the user (a wake that could not restore the checkpoint and started afresh).

- Browsers are not its clients: a request carrying an `Origin` or Fetch-Metadata
  (`Sec-Fetch-*`) header, a CORS preflight, or a `Host` other than a loopback name (or `runtime`,
  what clients of the unix socket send) is refused with 403 — mrmd-python itself answers
  `Access-Control-Allow-Origin: *` and checks no Host, so a web page that could reach it could
  run code. `Access-Control-*` headers of the runtime are dropped from responses.
- The runtime is dialled with `markco_trio.dial`: inside its own network namespace on the
  process backend (the `netns:` host form).

Optionally the same front also listens on `127.0.0.1:<tcp_port>` for editors that insist on
`RUNTIME_PORT` — only where workloads share the host's network (the process backend without
network namespaces, i.e. a daemon that is not root): any local process can reach that port, so
the checks above are all that keeps web pages out. With network namespaces it is not offered.

h11 parses both sides: this is the editor-to-runtime path, not the daemon's hot path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import h11
import trio

from ...dial import open_tcp_stream

log = logging.getLogger("markco.compute.front")

SOCKET_NAME = "runtime.sock"
MAX_UNIX_PATH = 107  # sun_path is 108 bytes including the final NUL
READ_SIZE = 64 * 1024
IDLE_SECONDS = 300.0  # a keep-alive connection with no request for this long is closed
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"upgrade", b"proxy-authenticate", b"proxy-authorization"})
EXECUTE_PREFIX = b"/mrp/v1/execute"
# Answered by the front itself, never forwarded (so it never wakes nor waits for the runtime):
# the user-facing notice of the user's compute, e.g. that a wake fell back to a cold start.
NOTICE_PATH = b"/markco/v1/notice"
# Also answered here: the editor reports real user input (keys, clicks) so that a user who is
# reading and typing is not idle (DESIGN §3.3); raw WebSocket traffic is not activity.
ACTIVITY_PATH = b"/markco/v1/activity"
CODE_CAPTURE = 256 * 1024  # an execute body is kept (for the hints) up to this size
# Host names a legitimate client sends: `runtime` over the unix socket (the built-in editor),
# loopback literals over the TCP forwarder. Never a DNS name (DNS rebinding).
ALLOWED_HOSTS = frozenset({b"runtime", b"localhost", b"127.0.0.1", b"[::1]"})
BROWSER_HEADERS = frozenset({b"origin", b"sec-fetch-site", b"sec-fetch-mode",
                             b"sec-fetch-dest", b"access-control-request-method"})


class NotReady(Exception):
    """The runtime cannot take the request now; the message says why (sent in the 503)."""

    def __init__(self, message: str, *, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Locate(Protocol):
    """Where the user's runtime is: `(host, port)` once it is ready. Waits while it starts;
    with `wake=True` a stopped runtime is started first. Raises `NotReady` otherwise."""

    def __call__(self, *, wake: bool) -> Awaitable[tuple[str, int]]: ...


@dataclass(frozen=True)
class FrontStatistics:
    """Counters of one front: requests forwarded, executions in flight and in total, requests
    held right now, requests refused (503), and when the last execution started."""

    requests: int
    executions_in_flight: int
    executions: int
    held: int
    rejected: int
    last_execution_at: float | None


def front_socket_path(fronts_dir: Path, user_id: str) -> Path:
    """`<fronts_dir>/<user_id>/runtime.sock`."""
    return fronts_dir / user_id / SOCKET_NAME


def is_execute(method: bytes, target: bytes) -> bool:
    """Whether a request runs code (and so wakes a stopped runtime and counts as activity)."""
    return method == b"POST" and target.split(b"?", 1)[0].startswith(EXECUTE_PREFIX)


def refusal(method: bytes, headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request must not reach the runtime (None: it may): it comes from a browser (an
    `Origin`, Fetch-Metadata, a CORS preflight) or names a Host that is not a loopback name."""
    if method == b"OPTIONS":
        return "CORS preflights are refused: web pages are not clients of the runtime"
    hosts = []
    for name, value in headers:
        lname = name.lower()
        if lname in BROWSER_HEADERS:
            return "requests from web pages are refused (Origin / Sec-Fetch-* present)"
        if lname == b"host":
            hosts.append(value)
    if len(hosts) != 1:
        return "exactly one Host header is required"
    host = hosts[0].strip().lower()
    if host.startswith(b"["):
        name = host[:host.find(b"]") + 1]
    else:
        name = host.partition(b":")[0]
    if name not in ALLOWED_HOSTS:
        return "Host must be a loopback name (runtime, localhost, 127.0.0.1, [::1])"
    return None


def forwarded_headers(headers: list[tuple[bytes, bytes]], *, host: bytes,
                      request: bool) -> list[tuple[bytes, bytes]]:
    """Headers minus hop-by-hop ones. Requests keep their framing (`Content-Length` or
    `Transfer-Encoding: chunked`) and get the upstream's Host; responses lose
    `Transfer-Encoding` (h11 re-frames them: chunked to an HTTP/1.1 peer)."""
    out = []
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname == b"host":
            continue
        if not request and (lname == b"transfer-encoding" or
                            lname.startswith(b"access-control-")):
            continue
        out.append((name, value))
    if request:
        out.insert(0, (b"Host", host))
        out.append((b"Connection", b"close"))
    return out


class _ClientGone(Exception):
    """The editor closed its connection mid-exchange."""


class RuntimeFront:
    """One user's runtime front; `serve()` runs it until cancelled."""

    def __init__(self, user_id: str, socket_path: Path, locate: Locate, *,
                 owner: tuple[int, int] | None = None, hold_seconds: float = 30.0,
                 hold_max: int = 64, tcp_port: int | None = None,
                 on_execution: Callable[[], None] | None = None,
                 notice: Callable[[], tuple[str | None, str | None]] | None = None,
                 now: Callable[[], float] | None = None,
                 on_code: Callable[[str], None] | None = None,
                 on_input: Callable[[], None] | None = None) -> None:
        if len(os.fsencode(socket_path)) > MAX_UNIX_PATH:
            raise ValueError(f"runtime front socket path is too long for a unix socket "
                             f"({len(os.fsencode(socket_path))} > {MAX_UNIX_PATH} bytes): "
                             f"{socket_path}; use a shorter [server] data_dir")
        self.user_id = user_id
        self.socket_path = socket_path
        self.tcp_port = tcp_port
        self._locate_fn = locate
        self._owner = owner
        self._hold_seconds = hold_seconds
        self._hold_max = hold_max
        self._on_execution = on_execution
        self._notice = notice
        self._on_code = on_code
        self._on_input = on_input
        self._now = now or trio.current_time
        self._requests = 0
        self._in_flight = 0
        self._executions = 0
        self._held = 0
        self._rejected = 0
        self._last_execution: float | None = None
        self._upstreams: set[trio.CancelScope] = set()
        self._upstreams_gone = trio.Event()

    def statistics(self) -> FrontStatistics:
        """The counters (cheap, synchronous)."""
        return FrontStatistics(requests=self._requests, executions_in_flight=self._in_flight,
                               executions=self._executions, held=self._held,
                               rejected=self._rejected, last_execution_at=self._last_execution)

    # ---------------------------------------------------------------------------- listening

    def _bind_unix(self) -> socket.socket:
        """Bind the socket file: 0600, owned by the editor's account, in a root-owned 0711
        directory. A stale socket of a previous daemon is replaced.

        The process umask is not touched (worker threads create files meanwhile): the socket
        is bound in a private 0700 directory beside its place, where nobody else can reach it,
        given its mode and owner there, then renamed into place (a unix socket is its inode:
        it stays bound under the new name) before it listens."""
        directory = self.socket_path.parent
        directory.mkdir(parents=True, exist_ok=True, mode=0o711)
        st = directory.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise OSError(errno.EPERM, f"{directory} is not a directory owned by the daemon")
        os.chmod(directory, 0o711)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        private = tempfile.mkdtemp(prefix=".b", dir=directory)  # 0700; as long a path as ours
        staged = os.path.join(private, "s")
        try:
            sock.bind(os.fsencode(staged))
            os.chmod(staged, 0o600)
            if self._owner is not None:
                os.lchown(staged, *self._owner)
            os.rename(staged, self.socket_path)
        except BaseException:
            sock.close()
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
            os.rmdir(private)
        sock.listen(128)
        return sock

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Listen (unix socket, and TCP when `tcp_port`), then serve until cancelled."""
        raw = self._bind_unix()
        listeners: list[trio.abc.Listener[Any]] = [
            trio.SocketListener(trio.socket.from_stdlib_socket(raw))]
        if self.tcp_port is not None:
            try:
                listeners.extend(await trio.open_tcp_listeners(self.tcp_port,
                                                               host="127.0.0.1"))
            except OSError as exc:
                # The socket still works; only an editor insisting on RUNTIME_PORT suffers
                # (the next start of the user's workloads gives it a free port).
                log.error("runtime front of %s: cannot listen on 127.0.0.1:%s (%s); serving "
                          "the unix socket only", self.user_id, self.tcp_port, exc)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._handle, listeners)
                task_status.started()
        finally:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass

    # -------------------------------------------------------------------------- connections

    async def _handle(self, stream: trio.abc.Stream) -> None:
        """One editor connection: requests one after another (keep-alive)."""
        conn = h11.Connection(h11.SERVER)
        try:
            async with stream:
                while True:
                    with trio.move_on_after(IDLE_SECONDS):
                        event = await _next_event(conn, stream)
                    if not isinstance(event, h11.Request):
                        return  # idle timeout, connection closed, or garbage
                    keep = await self._exchange(conn, stream, event)
                    if not keep or conn.our_state is not h11.DONE or \
                            conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
        except (_ClientGone, trio.BrokenResourceError, trio.ClosedResourceError,
                h11.ProtocolError):
            return
        except Exception:
            log.exception("runtime front of %s: a connection failed", self.user_id)

    async def _exchange(self, conn: h11.Connection, stream: trio.abc.Stream,
                        request: h11.Request) -> bool:
        """Forward one request; False when the connection must close afterwards."""
        self._requests += 1
        refused = refusal(request.method, list(request.headers))
        if refused is not None:
            self._rejected += 1
            await _answer(conn, stream, 403, refused)
            return False
        if request.target.split(b"?", 1)[0] == NOTICE_PATH:
            return await self._answer_notice(conn, stream, request)
        if request.target.split(b"?", 1)[0] == ACTIVITY_PATH:
            return await self._answer_activity(conn, stream, request)
        execute = is_execute(request.method, request.target)
        try:
            upstream = await self._connect(wake=execute)
        except NotReady as exc:
            self._rejected += 1
            await _answer(conn, stream, 503, str(exc),
                          [(b"Retry-After", str(exc.retry_after).encode())])
            return False
        if execute:
            self._in_flight += 1
            self._executions += 1
            self._last_execution = self._now()
            if self._on_execution is not None:
                self._on_execution()
        scope = trio.CancelScope()
        self._upstreams.add(scope)
        try:
            with scope:
                async with upstream:
                    return await self._relay(conn, stream, request, upstream,
                                             capture=bytearray() if execute and
                                             self._on_code is not None else None)
            await _answer(conn, stream, 503, "the runtime is being checkpointed; try again",
                          [(b"Retry-After", b"2")])
            return False
        finally:
            self._upstreams.discard(scope)
            if not self._upstreams:
                self._upstreams_gone.set()
            if execute:
                self._in_flight -= 1

    async def _answer_notice(self, conn: h11.Connection, stream: trio.abc.Stream,
                             request: h11.Request) -> bool:
        """`GET /markco/v1/notice`, answered here: the runtime is not touched."""
        if request.method not in (b"GET", b"HEAD"):
            await _answer(conn, stream, 405, "only GET is allowed here",
                          [(b"Allow", b"GET, HEAD")])
            return False
        while True:  # a GET has no body worth reading; drain whatever came
            event = await _next_event(conn, stream)
            if isinstance(event, h11.EndOfMessage):
                break
            if not isinstance(event, h11.Data):
                raise _ClientGone()
        text, notice_id = self._notice() if self._notice is not None else (None, None)
        body = json.dumps({"notice": text, "id": notice_id if text else None}).encode()
        await _send(conn, stream, h11.Response(status_code=200, headers=[
            (b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode()),
            (b"Cache-Control", b"no-store")]))
        if request.method == b"GET":
            await _send(conn, stream, h11.Data(data=body))
        await _send(conn, stream, h11.EndOfMessage())
        return True

    # ------------------------------------------------------------------------------ draining

    async def drain(self, within: float) -> int:
        """Before a checkpoint: wait up to `within` seconds for the requests being forwarded to
        the runtime to finish, then cut the rest (their clients get a 503, or a broken stream
        if the answer had begun). New requests are not forwarded meanwhile: the caller has
        made `locate` hold them. Returns how many were cut."""
        if self._upstreams:
            self._upstreams_gone = trio.Event()
            with trio.move_on_after(within):
                await self._upstreams_gone.wait()
        cut = len(self._upstreams)
        for scope in list(self._upstreams):
            scope.cancel()
        return cut

    async def _connect(self, *, wake: bool) -> trio.SocketStream:
        """Locate the runtime and connect, holding the request (bounded) while it starts.
        A refused connection is retried until the hold deadline: the runtime may have just
        crashed and be restarting."""
        if self._held >= self._hold_max:
            raise NotReady(f"too many requests ({self._hold_max}) are waiting for the runtime",
                           retry_after=5)
        self._held += 1
        try:
            with trio.move_on_after(self._hold_seconds):
                while True:
                    host, port = await self._locate_fn(wake=wake)
                    try:
                        return await open_tcp_stream(host, port)
                    except OSError:
                        await trio.sleep(0.1)
            raise NotReady(f"the runtime did not become ready within {self._hold_seconds:g} s",
                           retry_after=5)
        finally:
            self._held -= 1

    async def _answer_activity(self, conn: h11.Connection, stream: trio.abc.Stream,
                               request: h11.Request) -> bool:
        """`POST /markco/v1/activity`: the editor reports user input (body ignored, at most
        4 KiB read). Answered here, 204; the runtime is not touched nor woken."""
        if request.method != b"POST":
            await _answer(conn, stream, 405, "only POST is allowed here",
                          [(b"Allow", b"POST")])
            return False
        size = 0
        while True:
            event = await _next_event(conn, stream)
            if isinstance(event, h11.EndOfMessage):
                break
            if not isinstance(event, h11.Data):
                raise _ClientGone()
            size += len(event.data)
            if size > 4096:
                await _answer(conn, stream, 413, "an activity report has no body to speak of")
                return False
        if self._on_input is not None:
            self._on_input()
        await _send(conn, stream, h11.Response(status_code=204, headers=[
            (b"Cache-Control", b"no-store")]))
        await _send(conn, stream, h11.EndOfMessage())
        return True

    def _captured(self, body: bytes) -> None:
        """Hand an execute request's code to `on_code` (never fails the request)."""
        if self._on_code is None or len(body) > CODE_CAPTURE:
            return
        try:
            code = json.loads(body).get("code")
        except (ValueError, AttributeError):
            return
        if isinstance(code, str):
            self._on_code(code)

    async def _relay(self, conn: h11.Connection, stream: trio.abc.Stream,
                     request: h11.Request, upstream: trio.SocketStream, *,
                     capture: bytearray | None = None) -> bool:
        up = h11.Connection(h11.CLIENT)
        host, port = upstream.socket.getpeername()[:2]
        head = h11.Request(method=request.method, target=request.target,
                           headers=forwarded_headers(list(request.headers),
                                                     host=f"{host}:{port}".encode(),
                                                     request=True))
        try:
            await upstream.send_all(up.send(head))
            while True:  # the request body, as it comes
                event = await _next_event(conn, stream)
                if isinstance(event, h11.Data):
                    if capture is not None and len(capture) <= CODE_CAPTURE:
                        capture += event.data
                    await upstream.send_all(up.send(h11.Data(data=event.data)))
                elif isinstance(event, h11.EndOfMessage):
                    await upstream.send_all(up.send(h11.EndOfMessage()))
                    if capture is not None:
                        self._captured(bytes(capture))
                    break
                else:
                    raise _ClientGone()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await _answer(conn, stream, 502, "the runtime closed the connection")
            return False
        responded = False
        try:
            while True:  # the response, relayed event by event (SSE stays live)
                event = await _next_event(up, upstream)
                if isinstance(event, h11.Response):
                    headers = forwarded_headers(list(event.headers), host=b"", request=False)
                    await _send(conn, stream, h11.Response(status_code=event.status_code,
                                                           headers=headers,
                                                           reason=event.reason))
                    responded = True
                elif isinstance(event, h11.InformationalResponse):
                    continue
                elif isinstance(event, h11.Data):
                    await _send(conn, stream, h11.Data(data=event.data))
                elif isinstance(event, h11.EndOfMessage):
                    await _send(conn, stream, h11.EndOfMessage())
                    return True
                else:
                    break
        except (h11.RemoteProtocolError, OSError, trio.BrokenResourceError) as exc:
            log.info("runtime front of %s: the runtime broke the response: %s", self.user_id,
                     exc)
        if not responded:
            await _answer(conn, stream, 502, "the runtime closed the connection")
        return False


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
    """The next h11 event, reading from `stream` as needed."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(READ_SIZE)
        conn.receive_data(bytes(data))  # b"" tells h11 the peer closed


async def _send(conn: h11.Connection, stream: trio.abc.Stream, event: Any) -> None:
    data = conn.send(event)
    if data:
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _ClientGone() from exc


async def _answer(conn: h11.Connection, stream: trio.abc.Stream, status: int, message: str,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A small JSON error in the API's shape, then the connection closes."""
    if conn.our_state is not h11.SEND_RESPONSE:
        return
    code = {403: "forbidden", 405: "method_not_allowed", 413: "too_large",
            502: "runtime_unreachable", 503: "runtime_not_ready"}.get(status, "error")
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await _send(conn, stream, h11.Response(status_code=status, headers=[
        (b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode()),
        (b"Connection", b"close"), *(headers or [])]))
    await _send(conn, stream, h11.Data(data=body))
    await _send(conn, stream, h11.EndOfMessage())

