"""Micro-benchmark: our strict head parser against httptools (llhttp) doing the same job.

Run: `PYTHONPATH=. .venv/bin/python tests/proxy/bench_head_parser.py` (pytest does not collect it).
The httptools variant is given the same work: a fresh parser per head (llhttp parses messages,
not heads), the header names lower-cased, the raw lines kept for re-emission, and the checks
llhttp does not do itself (duplicate Content-Length, Host, Transfer-Encoding value, Expect).
Its strictness is printed too: which of our refused shapes llhttp accepts on its own.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

import httptools

from markco_trio.proxy.head import BadRequest, parse_request_head

HEADS = {
    "wrk-style GET, 3 headers": (
        b"GET /plaintext HTTP/1.1\r\nHost: localhost:3000\r\nUser-Agent: wrk\r\nAccept: */*"
    ),
    "browser GET, 8 headers": (
        b"GET /api/v1/projects?limit=20 HTTP/1.1\r\n"
        b"Host: markco.dev\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
        b"Accept: application/json\r\n"
        b"Accept-Language: en-US,en;q=0.5\r\n"
        b"Accept-Encoding: gzip, deflate, br\r\n"
        b"Connection: keep-alive\r\n"
        b"Cookie: markco_session=abcdefghijklmnopqrstuvwxyz0123456789abcdefghij\r\n"
        b"Sec-Fetch-Mode: cors"
    ),
    "POST with Content-Length, 6 headers": (
        b"POST /api/v1/projects HTTP/1.1\r\n"
        b"Host: markco.dev\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 42\r\n"
        b"Origin: https://markco.dev\r\n"
        b"Cookie: markco_session=abcdefghijklmnopqrstuvwxyz\r\n"
        b"Accept: */*"
    ),
}


class _Collect:
    __slots__ = ("url", "names", "values")

    def __init__(self) -> None:
        self.names: list[bytes] = []
        self.values: list[bytes] = []
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.names.append(name.lower())
        self.values.append(value)


def httptools_parse(head: bytes) -> object:
    """What the proxy would need from httptools for one head."""
    collected = _Collect()
    parser = httptools.HttpRequestParser(collected)
    try:
        parser.feed_data(head + b"\r\n\r\n")
    except httptools.HttpParserError as exc:
        raise BadRequest(400, str(exc)) from None
    host = length = None
    chunked = False
    for name, value in zip(collected.names, collected.values, strict=True):
        if name == b"host":
            if host is not None:
                raise BadRequest(400, "duplicate Host")
            host = value
        elif name == b"content-length":
            if length is not None or not value.isdigit():
                raise BadRequest(400, "bad Content-Length")
            length = int(value)
        elif name == b"transfer-encoding":
            if value.lower() != b"chunked":
                raise BadRequest(501, "transfer coding")
            chunked = True
        elif name == b"expect" and value.lower() != b"100-continue":
            raise BadRequest(417, "expectation")
    lines = [n + b": " + v for n, v in zip(collected.names, collected.values, strict=True)]
    return (
        parser.get_method(),
        collected.url,
        parser.should_keep_alive(),
        host,
        length,
        chunked,
        lines,
    )


def best_of(fn: Callable[[bytes], object], head: bytes, number: int = 200_000) -> float:
    """Microseconds per call, best of 7 runs of CPU time (robust to a busy machine)."""
    timer = timeit.Timer(lambda: fn(head), timer=time.process_time)
    return min(timer.repeat(repeat=7, number=number)) / number * 1e6


def main() -> None:
    print(f"{'head':40s} {'ours':>8s} {'httptools':>10s}")
    for label, head in HEADS.items():
        ours = best_of(parse_request_head, head)
        theirs = best_of(httptools_parse, head)
        print(f"{label:40s} {ours:6.2f} µs {theirs:8.2f} µs")

    print("\nshapes llhttp (strict mode) accepts by itself:")
    shapes = {
        "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b",
        "bare LF": b"GET / HTTP/1.1\nHost: a",
        "CL + TE": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked",
        "duplicate CL": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1",
        "space before colon": b"GET / HTTP/1.1\r\nHost : a",
        "absolute-form": b"GET http://evil.example/ HTTP/1.1\r\nHost: a",
        "missing Host": b"GET / HTTP/1.1\r\nX: a",
        "TE: gzip, chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked",
    }
    for name, head in shapes.items():
        parser = httptools.HttpRequestParser(_Collect())
        try:
            parser.feed_data(head + b"\r\n\r\n")
            verdict = "accepted"
        except httptools.HttpParserError:
            verdict = "refused"
        print(f"  {name:22s} {verdict}")


if __name__ == "__main__":
    main()
