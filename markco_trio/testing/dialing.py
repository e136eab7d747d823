"""HTTP clients for tests that talk to a workload the way the daemon does: through
`markco_trio.dial`, so `netns:` addresses (a process-backend workload inside its own network
namespace) work like `host:port` ones.

    async with workload_client(info.address) as http:
        assert (await http.get("/health")).status_code == 200

Every connection of the client goes to `address`, whatever the URL's host (`base_url` is
`http://localhost`, so the Host header is a loopback name, which editors and the runtime front
accept). Needs the daemon's privileges for `netns:` addresses (root).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import trio
from httpcore._backends.trio import TrioStream

from .. import dial

__all__ = ["DialBackend", "workload_client", "workload_transport"]


class DialBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend whose every TCP connection is `dial.open_stream(address)`."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def connect_tcp(self, host: str, port: int,
                          timeout: float | None = None,  # noqa: ASYNC109 - httpcore's API
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        """Dial the fixed address (the URL's host and port are ignored)."""
        try:
            stream = await dial.open_stream(self.address)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return TrioStream(stream)

    async def connect_unix_socket(self, path: str,
                                  timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        """Not used: give a `unix:` address instead."""
        raise httpcore.ConnectError("DialBackend dials its fixed address only")

    async def sleep(self, seconds: float) -> None:
        """trio's sleep."""
        await trio.sleep(seconds)


def workload_transport(address: str) -> httpx.AsyncHTTPTransport:
    """An httpx transport dialling `address` for every connection."""
    transport = httpx.AsyncHTTPTransport()
    transport._pool = httpcore.AsyncConnectionPool(network_backend=DialBackend(address))
    return transport


def workload_client(address: str, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client (base URL `http://localhost`) whose connections all go to `address`."""
    kwargs.setdefault("timeout", 30)
    return httpx.AsyncClient(transport=workload_transport(address),
                             base_url="http://localhost", trust_env=False, **kwargs)
