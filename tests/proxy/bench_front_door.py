"""Throughput of the front door under wrk, against a minimal upstream (not collected by pytest).

Run: `PYTHONPATH=. .venv/bin/python tests/proxy/bench_front_door.py [seconds]` with `wrk` on PATH.
Three processes share the machine, as in production: wrk (one thread), the FrontDoor (one trio
process), and an upstream on a unix socket that answers fixed responses from an epoll loop (so
that the upstream, not hypercorn, is the cheap part and the proxy is what is measured).
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\nHello, World!"
MIB = 1024 * 1024
BIG = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % MIB + b"x" * MIB


def run_upstream(path: str) -> None:
    """Answer every request head with SMALL (or BIG for /big), pipelining included."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1024)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, bytes] = {}
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                conn, _ = listener.accept()
                selector.register(conn, selectors.EVENT_READ)
                pending[conn] = b""
                continue
            try:
                data = sock.recv(65536)
                buf = pending[sock] + data
                out = []
                while (end := buf.find(b"\r\n\r\n")) >= 0:
                    out.append(BIG if buf.startswith(b"GET /big") else SMALL)
                    buf = buf[end + 4 :]
                pending[sock] = buf
                if out:
                    sock.sendall(b"".join(out))  # blocking is fine: the proxy drains each one
            except ConnectionError:
                data = b""
            if not data:
                selector.unregister(sock)
                del pending[sock]
                sock.close()


def run_proxy(path: str, port_file: str) -> None:
    import trio

    from markco_trio.proxy import FrontDoor
    from markco_trio.readiness import Readiness

    async def main() -> None:
        door = FrontDoor("127.0.0.1", 0, path, Readiness(), access_log_sample_every=10_000)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(door.serve)
            await trio.Path(port_file).write_text(str(port))

    trio.run(main)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (robust to other load on the machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: int, connections: int) -> tuple[float, str, float]:
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))  # type: ignore[union-attr]
    transfer = re.search(r"Transfer/sec:\s+(\S+)", result.stdout)
    total = re.search(r"(\d+) requests in", result.stdout)
    return rate, transfer.group(1) if transfer else "?", float(total.group(1)) if total else 0.0


def main() -> None:
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    if shutil.which("wrk") is None:
        sys.exit("wrk not found (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp())
    sock_path = str(workdir / "api.sock")
    port_file = workdir / "port"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    me = [sys.executable, __file__]
    upstream = subprocess.Popen([*me, "upstream", sock_path], env=env)
    proxy = subprocess.Popen([*me, "proxy", sock_path, str(port_file)], env=env)
    try:
        for _ in range(100):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port_file.read_text()}"
        wrk(base + "/", 2, 64)  # warm up
        for label, path, conns in [
            ("/healthz answered by the proxy", "/healthz", 64),
            ("small GET forwarded", "/", 64),
            ("1 MiB GET forwarded", "/big", 16),
        ]:
            before = cpu_seconds(proxy.pid)
            rate, transfer, count = wrk(base + path, seconds, conns)
            per_request = (cpu_seconds(proxy.pid) - before) / max(count, 1) * 1e6
            print(
                f"{label:32s} {rate:8.0f} req/s {transfer:>10s}/s  "
                f"proxy CPU {per_request:6.1f} µs/request  (wrk -c{conns})"
            )
    finally:
        proxy.terminate()
        upstream.terminate()
        proxy.wait()
        upstream.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "upstream":
        run_upstream(sys.argv[2])
    elif len(sys.argv) > 3 and sys.argv[1] == "proxy":
        run_proxy(sys.argv[2], sys.argv[3])
    else:
        main()
