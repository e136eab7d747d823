"""A real Caddy running the repository's own `Caddyfile` on loopback ports, for tests.

The edge is the deployed one, not a test copy: only the file's environment variables differ
(`MARKCO_DOMAIN`, `MARKCO_EDITOR_DOMAIN`, `MARKCO_UPSTREAM`, `MARKCO_CADDY_ADMIN`,
`MARKCO_CADDY_BIND`, `MARKCO_HTTP_PORT`, `MARKCO_HTTPS_PORT`), and Caddy's state (its local CA,
certificates, autosave) lives in a directory of the test's own (`XDG_DATA_HOME` and
`XDG_CONFIG_HOME`), never in the machine's trust store (the Caddyfile says `skip_install_trust`).

Use:

    from markco_trio.testing.edge import running_edge

    port = free_port()                                   # the daemon's port, chosen first
    with running_edge(f"127.0.0.1:{port}", tmp_path / "caddy") as edge:
        # the daemon: [server] public_url = edge.url, trusted_proxies = ["127.0.0.1"]
        # (and editor_domain = edge.editor_domain for per-user editor origins)
        async with edge.client() as client:            # trusts the edge's CA
            await client.get(edge.url + "/healthz")

- `edge.url` is `https://localhost:<port>` (TLS from Caddy's internal CA; `edge.ca_file` is its
  root certificate) or, with `tls=False`, `http://localhost:<port>`.
- `edge.editor_origin(user_id)` is that user's editor origin, `https://<id>.u.localhost:<port>`,
  served by the Caddyfile's wildcard site (always TLS).
- `edge.client()` is an `httpx.AsyncClient` that trusts the CA and connects every host name to
  127.0.0.1 (glibc does not resolve `*.localhost`); `edge.ssl_context()` for other clients.
- Chromium resolves `*.localhost` to loopback by itself; start it with
  `--ignore-certificate-errors` (or `--ignore-certificate-errors-spki-list=`+`edge.spki()`), since
  the local CA is in no trust store.
- `running_edge` is a plain (blocking) context manager, usable from sync and trio tests alike: it
  starts Caddy, waits (at most `start_timeout` seconds) until the site answers a TLS handshake
  with a certificate from the CA, and on exit stops Caddy (SIGINT, then SIGKILL after 10 s).
  Nothing is sent to the daemon while starting, so the daemon may start before or after.
- `edge.websocket(url, headers)` opens a WebSocket through the edge (trio-websocket, the `test`
  extra), also to editor origins.
- `edge.log_text()` is Caddy's log so far (JSON lines), for assertions and failure messages.

Without Caddy (`apt-get install caddy`) the test skips, or fails under MARKCO_REQUIRE_SYSTEM.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpcore
import httpx
import trio

from markco_trio.testing.network import free_port
from markco_trio.testing.system import missing_system

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection

ROOT = Path(__file__).resolve().parents[2]
CADDYFILE = ROOT / "Caddyfile"
DOMAIN = "localhost"
EDITOR_DOMAIN = "u.localhost"


def caddy_binary() -> str:
    """The `caddy` executable, or skip (fail under MARKCO_REQUIRE_SYSTEM) without one."""
    found = shutil.which("caddy")
    if found is None:
        missing_system("caddy", "apt-get install caddy (scripts/bootstrap --system does)")
    return found


def caddy_env(state_dir: Path, **settings: str) -> dict[str, str]:
    """The environment Caddy runs the Caddyfile in: its state under `state_dir`, the
    `MARKCO_*` settings given (names without the prefix, e.g. `DOMAIN="x.org"`)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(state_dir),
           "XDG_DATA_HOME": str(state_dir / "data"), "XDG_CONFIG_HOME": str(state_dir / "config")}
    env.update({f"MARKCO_{name}": value for name, value in settings.items()})
    return env


@dataclass
class Edge:
    """A running Caddy in front of `upstream` (see the module's docstring)."""

    process: subprocess.Popen[bytes]
    upstream: str
    state_dir: Path
    tls: bool
    port: int
    https_port: int
    admin: str
    log_path: Path

    @property
    def url(self) -> str:
        """The public URL: what the daemon's `[server] public_url` must be."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{DOMAIN}:{self.port}"

    @property
    def editor_domain(self) -> str:
        """What the daemon's `[server] editor_domain` must be for per-user origins."""
        return EDITOR_DOMAIN

    def editor_origin(self, user_id: str) -> str:
        """`user_id`'s editor origin through this edge (always TLS)."""
        return f"https://{user_id}.{EDITOR_DOMAIN}:{self.https_port}"

    @property
    def ca_file(self) -> Path:
        """The root certificate of Caddy's local CA (what signs the edge's certificates)."""
        return self.state_dir / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the edge's CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def spki(self) -> str:
        """Base64 SHA-256 of the leaf certificate's public key, for Chromium's
        `--ignore-certificate-errors-spki-list`."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        with socket.create_connection(("127.0.0.1", self.https_port), timeout=5) as sock, \
                self.ssl_context().wrap_socket(sock, server_hostname=DOMAIN) as tls:
            der_cert = tls.getpeercert(binary_form=True)
        assert der_cert is not None
        cert = x509.load_der_x509_certificate(der_cert)
        der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(der).digest()).decode()

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client for this edge: trusts its CA, connects every name to 127.0.0.1."""
        transport = httpx.AsyncHTTPTransport(verify=self.ssl_context() if self.tls else True)
        # httpx has no resolver option: give its connection pool a network backend that
        # dials loopback whatever the name (the name still goes in SNI and Host).
        pool = transport._pool
        pool._network_backend = LoopbackBackend(pool._network_backend)
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(transport=transport, trust_env=False, **kwargs)

    @asynccontextmanager
    async def websocket(self, url: str, headers: Sequence[tuple[str, str]] = ()
                        ) -> AsyncIterator[WebSocketConnection]:
        """A WebSocket (trio-websocket) to `url` (`wss://name:port/path`) through this edge,
        connected to 127.0.0.1 whatever the name (SNI and Host carry it); HTTP/1.1."""
        from trio_websocket import HandshakeError, wrap_client_stream

        parts = urlsplit(url)
        tcp = await trio.open_tcp_stream("127.0.0.1", parts.port or 443)
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = tcp
        if parts.scheme == "wss":
            stream = trio.SSLStream(tcp, self.ssl_context(), server_hostname=parts.hostname)
            await stream.do_handshake()
        resource = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            async with stream, trio.open_nursery() as nursery:
                conn = await wrap_client_stream(
                    nursery, stream, parts.netloc, resource,
                    extra_headers=[(k.encode(), v.encode()) for k, v in headers])
                try:
                    yield conn
                finally:
                    await conn.aclose()
        except BaseExceptionGroup as group:
            # A refused handshake (ConnectionRejected: its status, headers and body) is raised
            # as itself, so that a test can `pytest.raises` it.
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], HandshakeError):
                raise group.exceptions[0] from None
            raise

    def log_text(self) -> str:
        """Caddy's log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class LoopbackBackend(httpcore.AsyncNetworkBackend):
    """A network backend that connects to 127.0.0.1 whatever host name it is asked for."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp("127.0.0.1", port, timeout=timeout,
                                             local_address=local_address,
                                             socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_unix_socket(path, timeout=timeout,
                                                     socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@contextmanager
def running_edge(upstream: str, state_dir: Path, *, tls: bool = True,
                 start_timeout: float = 20.0,
                 caddyfile: Path = CADDYFILE) -> Iterator[Edge]:
    """Run Caddy with the Caddyfile in front of `upstream` (HOST:PORT) on loopback ports."""
    caddy = caddy_binary()
    state_dir.mkdir(parents=True, exist_ok=True)
    http_port, https_port, admin_port = free_port(), free_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    domain = DOMAIN if tls else f"http://{DOMAIN}"
    env = caddy_env(state_dir, DOMAIN=domain, EDITOR_DOMAIN=EDITOR_DOMAIN, UPSTREAM=upstream,
                    CADDY_ADMIN=admin, CADDY_BIND="127.0.0.1", HTTP_PORT=str(http_port),
                    HTTPS_PORT=str(https_port))
    log_path = state_dir / "caddy.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([caddy, "run", "--config", str(caddyfile), "--adapter",
                                    "caddyfile"], env=env, stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, cwd=state_dir)
    edge = Edge(process=process, upstream=upstream, state_dir=state_dir, tls=tls,
                port=https_port if tls else http_port, https_port=https_port, admin=admin,
                log_path=log_path)
    try:
        _wait_until_serving(edge, start_timeout)
        yield edge
    finally:
        _stop(process)


def _wait_until_serving(edge: Edge, timeout: float) -> None:
    """Until the site port answers (a TLS handshake verified against the CA, with TLS)."""
    deadline = time.monotonic() + timeout
    last = "nothing tried yet"
    while time.monotonic() < deadline:
        if edge.process.poll() is not None:
            raise RuntimeError(f"caddy exited with {edge.process.returncode} while starting:\n"
                               f"{edge.log_text()[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", edge.port), timeout=1) as sock:
                if edge.tls:
                    if not edge.ca_file.exists():
                        raise OSError("the local CA is not written yet")
                    with edge.ssl_context().wrap_socket(sock, server_hostname=DOMAIN):
                        pass
            return
        except (OSError, ssl.SSLError) as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise RuntimeError(f"caddy did not serve {edge.url} within {timeout} s (last: {last}):\n"
                       f"{edge.log_text()[-4000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Graceful stop (SIGINT: Caddy finishes its requests), SIGKILL after 10 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def caddy_tool(*args: str, state_dir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run `caddy <args>` (fmt, validate, adapt) in a test environment; never raises on a
    non-zero exit (the caller asserts)."""
    return subprocess.run([caddy_binary(), *args], capture_output=True, text=True, timeout=60,
                          env=caddy_env(state_dir, **settings), cwd=state_dir, check=False)


__all__ = ["CADDYFILE", "Edge", "LoopbackBackend", "caddy_binary", "caddy_env", "caddy_tool",
           "running_edge"]
