"""The editor refuses web pages of other sites: a Host that is not markco's (DNS rebinding) and
state-changing requests or WebSockets from another Origin (docs/editor-contract.md)."""

from __future__ import annotations

import httpx
import pytest
from editor_testing import RawRequest
from markco_editor.guard import HostAndOrigin

PUBLIC = HostAndOrigin("https://markco.example.org")


@pytest.mark.parametrize("host", ["markco.example.org", "markco.example.org:443",
                                  "localhost:8080", "127.0.0.1:31000", "[::1]:9"])
def test_markcos_host_and_loopback_names_are_accepted(host: str) -> None:
    assert PUBLIC.refusal("GET", {"host": host}, websocket=False) is None


@pytest.mark.parametrize("host", ["evil.example", "evil.example:31000", "127.0.0.2:31000",
                                  "markco.example.org.evil.example", ""])
def test_any_other_host_is_refused_as_misdirected(host: str) -> None:
    refused = PUBLIC.refusal("GET", {"host": host}, websocket=False)
    assert refused is not None and refused[0] == 421


def test_a_post_from_markcos_origin_passes() -> None:
    headers = {"host": "markco.example.org", "origin": "https://markco.example.org",
               "sec-fetch-site": "same-origin"}
    assert PUBLIC.refusal("POST", headers, websocket=False) is None


@pytest.mark.parametrize("origin", ["http://127.0.0.2:8000", "https://evil.example",
                                    "null", "http://markco.example.org"])
def test_a_post_from_another_origin_is_refused(origin: str) -> None:
    refused = PUBLIC.refusal("POST", {"host": "markco.example.org", "origin": origin},
                             websocket=False)
    assert refused is not None and refused[1] == "bad_origin"


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
def test_a_cross_site_post_is_refused_by_fetch_metadata(site: str) -> None:
    refused = PUBLIC.refusal("PUT", {"host": "127.0.0.1:9000", "sec-fetch-site": site},
                             websocket=False)
    assert refused is not None and refused[1] == "cross_site"


def test_a_websocket_from_another_origin_is_refused() -> None:
    refused = PUBLIC.refusal("GET", {"host": "127.0.0.1:9000",
                                     "origin": "http://127.0.0.2:9000"}, websocket=True)
    assert refused is not None and refused[0] == 403


def test_the_editors_own_loopback_origin_passes() -> None:
    headers = {"host": "127.0.0.1:9000", "origin": "http://127.0.0.1:9000"}
    assert HostAndOrigin("").refusal("POST", headers, websocket=True) is None


def test_a_rebound_name_cannot_pass_as_its_own_origin() -> None:
    headers = {"host": "evil.example:9000", "origin": "http://evil.example:9000"}
    assert HostAndOrigin("").refusal("POST", headers, websocket=False) is not None


async def test_a_rebound_host_gets_421_from_the_editor(editor: httpx.AsyncClient) -> None:
    response = await editor.get("/api/files", headers={"Host": "evil.example"})
    assert response.status_code == 421


async def test_a_cross_origin_save_is_refused_and_writes_nothing(
        editor: httpx.AsyncClient) -> None:
    response = await editor.post("/api/files", json={"path": "planted.md", "content": "x"},
                                 headers={"Origin": "http://127.0.0.2:8000"})
    assert response.status_code == 403
    listing = (await editor.get("/api/files")).json()["files"]
    assert "planted.md" not in [entry["path"] for entry in listing]


async def test_a_cross_origin_websocket_is_refused(editor: httpx.AsyncClient,
                                                  raw_request: RawRequest) -> None:
    port = editor.base_url.port
    assert port is not None
    status, _ = await raw_request(
        port,
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.2:8000\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    assert status == 403
