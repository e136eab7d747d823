"""One container engine's HTTP API: the connection, the negotiated version, errors that name it.

Docker and Podman serve the same "Docker Engine API" over a unix socket (or TCP). Podman serves
its own `libpod` API on the same socket too; the backend uses it only where the Docker API falls
short on Podman (live limit updates), and says so where it does.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from markco_trio.errors import BackendError, Conflict, NotFound

# The API versions this backend speaks: 1.41 is Docker 20.10 and what Podman 4 reports.
MIN_API_VERSION = "1.41"
MAX_API_VERSION = "1.45"
# Podman's own API (no version negotiation there: 4.x serves it under any /v4.x.y/ prefix).
LIBPOD_PREFIX = "/v4.0.0/libpod"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class EngineVersion:
    """What `/version` told us, and the API version we speak with it."""

    product: str  # "podman" or "docker"
    version: str  # the engine's own version, e.g. 4.3.1
    api_version: str  # the negotiated API version, e.g. 1.41
    os: str = ""

    @property
    def is_podman(self) -> bool:
        """Podman (rather than Docker's own engine)."""
        return self.product == "podman"


def describe_engine(headers: Mapping[str, str]) -> dict[str, Any]:
    """What `/_ping`'s headers say about the engine, in `/version`'s terms (`ApiVersion`,
    `Version`, `Components`). Docker's own client negotiates from these headers too: they cost
    nothing, where Podman's `/version` runs its helpers to report their versions (~0.6 s)."""
    info: dict[str, Any] = {"ApiVersion": headers.get("api-version", "")}
    libpod = headers.get("libpod-api-version")
    server = headers.get("server", "")
    if libpod:
        info.update(Version=libpod, Components=[{"Name": "Podman Engine"}])
    elif server.startswith("Docker/"):
        info.update(Version=server.split("/", 1)[1].split(" ", 1)[0],
                    Components=[{"Name": "Engine"}])
    return info


def negotiate(info: Mapping[str, Any], pinned: str | None, url: str) -> EngineVersion:
    """Pick the API version from the engine's `/version` answer (the highest both speak, or the
    pinned one), refusing engines older than Docker 20.10's API."""
    engine_max = str(info.get("ApiVersion") or "")
    engine_min = str(info.get("MinAPIVersion") or MIN_API_VERSION)
    if not engine_max:
        raise BackendError(f"the container engine at {url} did not report its API version: "
                           f"is it Docker or Podman's API service?")
    components = info.get("Components") or []
    product = "docker"
    for component in components:
        if "podman" in str(component.get("Name", "")).lower():
            product = "podman"
    if pinned is not None:
        if not (_version_tuple(engine_min) <= _version_tuple(pinned)
                <= _version_tuple(engine_max)):
            raise BackendError(f"the container engine at {url} speaks API {engine_min} to "
                               f"{engine_max}, not the pinned {pinned}: change [compute.docker] "
                               f"api_version")
        chosen = pinned
    else:
        chosen = min(engine_max, MAX_API_VERSION, key=_version_tuple)
    if _version_tuple(chosen) < _version_tuple(MIN_API_VERSION):
        raise BackendError(f"the container engine at {url} speaks API {engine_max}, older than "
                           f"{MIN_API_VERSION} (Docker 20.10, Podman 4): upgrade it")
    return EngineVersion(product=product, version=str(info.get("Version", "")),
                         api_version=chosen, os=str(info.get("Os", "")))


def engine_message(response: httpx.Response) -> str:
    """The engine's error message (both engines answer `{"message": ...}`), else the body."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text.strip()[:500]
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return json.dumps(body)[:500]


class Engine:
    """A connection to one engine. Enter it (`async with`) to open the pool and negotiate the
    API version; every request then goes to `/v<version>/...`.

    Errors: an engine that does not answer raises `BackendError` naming the URL and what to do;
    `check()` turns error statuses into `NotFound`, `Conflict` or `BackendError`.
    """

    def __init__(self, url: str, *, timeout: float = 30.0, api_version: str | None = None,
                 tls_ca_file: str | None = None, tls_cert_file: str | None = None,
                 tls_key_file: str | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self._pinned = api_version
        self._tls = (tls_ca_file, tls_cert_file, tls_key_file)
        self._client: httpx.AsyncClient | None = None
        self._version: EngineVersion | None = None

    # ------------------------------------------------------------------ lifecycle

    def _make_client(self) -> httpx.AsyncClient:
        parts = urlsplit(self.url)
        timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
        if parts.scheme == "unix":
            transport = httpx.AsyncHTTPTransport(uds=parts.path)
            # The host part is never resolved over a unix socket; "engine" reads well in logs.
            return httpx.AsyncClient(transport=transport, base_url="http://engine",
                                     timeout=timeout)
        verify: ssl.SSLContext | bool = True
        if parts.scheme == "https":
            ca, cert, key = self._tls
            context = ssl.create_default_context(cafile=ca)
            if cert is not None:
                context.load_cert_chain(cert, key)
            verify = context
        scheme = "https" if parts.scheme == "https" else "http"
        return httpx.AsyncClient(base_url=f"{scheme}://{parts.netloc}", timeout=timeout,
                                 verify=verify)

    async def __aenter__(self) -> Engine:
        self._client = self._make_client()
        try:
            response = await self.request("GET", "/_ping", versioned=False)
            self.check(response, "a ping")
            info = describe_engine(response.headers)
            if not info["ApiVersion"]:  # an engine too old to say it in its ping
                response = await self.request("GET", "/version", versioned=False)
                self.check(response, "asking its version")
                info = response.json()
            self._version = negotiate(info, self._pinned, self.url)
        except BaseException:
            await self._client.aclose()
            self._client = None
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def version(self) -> EngineVersion:
        """The negotiated version (after entering)."""
        if self._version is None:
            raise RuntimeError("the engine connection is not open: use `async with`")
        return self._version

    # ------------------------------------------------------------------ requests

    def unreachable(self, exc: Exception) -> BackendError:
        """The error for an engine that does not answer: where, why, what to do."""
        return BackendError(
            f"the container engine at {self.url} does not answer ({type(exc).__name__}: {exc}). "
            f"Start it — Podman: `podman system service --time=0 {self.url}` (as root, with "
            f"CONTAINERS_CONF=config/containers.conf; `scripts/setup-podman` installs podman); "
            f"Docker: `systemctl start docker` — or fix [compute.docker] engine_url")

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                      json: Any = None, wait_seconds: float | None = None, versioned: bool = True,
                      libpod: bool = False) -> httpx.Response:
        """Send one request. `path` is relative to the negotiated API version (or to Podman's
        libpod API with `libpod=True`, or unversioned with `versioned=False`). `wait_seconds`
        replaces the engine timeout for a call that legitimately takes longer (a stop)."""
        if self._client is None:
            raise RuntimeError("the engine connection is not open: use `async with`")
        if libpod:
            full = LIBPOD_PREFIX + path
        elif versioned:
            full = f"/v{self.version.api_version}{path}"
        else:
            full = path
        extra: dict[str, Any] = {}
        if wait_seconds is not None:
            extra["timeout"] = httpx.Timeout(wait_seconds, connect=min(wait_seconds, 10.0))
        try:
            return await self._client.request(method, full, params=params, json=json, **extra)
        except httpx.TimeoutException as exc:
            raise BackendError(f"the container engine at {self.url} did not answer {method} "
                               f"{path} within {wait_seconds or self.timeout:g} s: it may be "
                               f"overloaded or stuck ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc

    @asynccontextmanager
    async def stream(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                     content: Any = None, headers: dict[str, str] | None = None,
                     wait_seconds: float | None = None,
                     libpod: bool = False) -> AsyncIterator[httpx.Response]:
        """Like `request`, with a streamed body each way: `content` (bytes or an async iterable
        of bytes) is sent as it comes, and the response's body is read by the caller
        (`aiter_bytes()`) inside the block. `wait_seconds` bounds each wait for the engine (the
        first byte of a checkpoint comes only once the engine has dumped it)."""
        if self._client is None:
            raise RuntimeError("the engine connection is not open: use `async with`")
        full = LIBPOD_PREFIX + path if libpod else f"/v{self.version.api_version}{path}"
        wait = wait_seconds or self.timeout
        request = self._client.build_request(
            method, full, params=params, content=content, headers=headers,
            timeout=httpx.Timeout(wait, connect=min(wait, 10.0)))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise BackendError(f"the container engine at {self.url} did not answer {method} "
                               f"{path} within {wait:g} s: it may be overloaded or stuck "
                               f"({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise self.unreachable(exc) from exc
        try:
            yield response
        finally:
            await response.aclose()

    def check(self, response: httpx.Response, doing: str, *, not_found: str | None = None,
              conflict: str | None = None) -> httpx.Response:
        """Return `response` when it succeeded; otherwise raise: 404 → `NotFound(not_found)`
        (when given), 409 → `Conflict(conflict)` (when given), else `BackendError` naming the
        engine, what we were doing and the engine's message."""
        if response.status_code < 400:
            return response
        message = engine_message(response)
        if response.status_code == 404 and not_found is not None:
            raise NotFound(f"{not_found} ({message})")
        if response.status_code == 409 and conflict is not None:
            raise Conflict(f"{conflict} ({message})")
        raise BackendError(f"the container engine at {self.url} refused {doing} "
                           f"({response.status_code}): {message}")
