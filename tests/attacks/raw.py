"""A raw HTTP/1.1 client for attack tests: sends a request head exactly as given (bytes an
HTTP library would refuse or normalise) and returns the response's status and headers."""

from __future__ import annotations

import trio


async def raw_request(url: str, head: bytes) -> tuple[int, dict[str, str]]:
    """Send `head` (a full request head, ending with an empty line, `Connection: close`
    advised) to `url`'s host and port; (status, headers with lower-case names) of the
    answer. The status is 0 when the server closed without answering."""
    host, _, port = url.removeprefix("http://").partition(":")
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(head)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
    if not data:
        return 0, {}
    lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers


def get(target: bytes, host: str, *extra: bytes) -> bytes:
    """A GET head for `target` (raw bytes) with `Connection: close`."""
    return b"GET " + target + b" HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + b"".join(
        e + b"\r\n" for e in extra) + b"Connection: close\r\n\r\n"
