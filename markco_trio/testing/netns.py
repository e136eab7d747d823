"""Fake outside hosts that a test owns: "cloud metadata" and "the internet", inside a network
namespace this machine creates and removes, so that no test sends a packet beyond it.

    with fake_outside() as outside:
        outside.metadata.endpoint        # "169.254.N.77:80": link-local, as a metadata service
        outside.internet.endpoint        # "203.0.113.N:80": a documentation address, as a host
        outside.answers(outside.metadata)  # True: the host reaches it (the control)
        outside.connect_from_inside("10.89.0.2", 8888)  # as another host on the network

`fake_outside()` creates a network namespace and a veth pair: the host end holds 169.254.N.1/24,
the far end (in the namespace) 169.254.N.77/24 and 203.0.113.N/32, and the host routes
203.0.113.N to it. A small TCP listener runs in the namespace on both addresses and answers every
connection with one banner line. N is chosen free on this host, so concurrent tests do not
collide. Everything (listener, namespace, veth, routes) is removed when the block ends, also on
failure. Needs root and `ip` (iproute2).

`namespace()` is just an empty namespace (loopback up): a process run in it with `ip netns
exec` sees its own interfaces and its own (empty) firewall tables.

Never probe a real address instead (the real metadata service's, a public resolver's, ...): a
probe that is not blocked then reaches a machine that is not ours. `tests/test_network_rule.py`
enforces it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

# The two address blocks the fakes take their addresses from: IPv4 link-local (RFC 3927, where
# cloud metadata services live) and TEST-NET-3 (RFC 5737: documentation, never routed on the
# internet). Not TEST-NET-1 (192.0.2.0/24): our CI machines' own eth0 is in it.
LINK_LOCAL_PREFIX = "169.254"
INTERNET_PREFIX = "203.0.113"
BANNER = b"markco-test-target"
# The listener: one thread per connection is not needed; answer, close, repeat.
LISTENER = r"""
import socket, sys
port = int(sys.argv[1])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", port))
server.listen(64)
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    try:
        conn.sendall(b"markco-test-target\n")
    except OSError:
        pass
    conn.close()
"""
READY_TIMEOUT = 10.0


@dataclass(frozen=True)
class Target:
    """One fake host: what it stands for, its address and the port its listener answers on."""

    role: str
    address: str
    port: int

    @property
    def endpoint(self) -> str:
        """`address:port`."""
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class FakeOutside:
    """The namespace and its two targets (see the module doc)."""

    namespace: str
    host_interface: str
    metadata: Target
    internet: Target

    def answers(self, target: Target, timeout: float = 2.0) -> bool:
        """Whether `target` answers from here (the host) with the listener's banner: the
        control that shows a target a container cannot reach does exist."""
        try:
            with socket.create_connection((target.address, target.port), timeout=timeout) as s:
                s.settimeout(timeout)
                return s.recv(64).startswith(BANNER)
        except OSError:
            return False


    def connect_from_inside(self, address: str, port: int, timeout: float = 2.0) -> str:
        """Connect from INSIDE the namespace (as another host on the network would) to
        `address:port`, from the fake internet address (replies to a link-local source could
        be dropped for that reason alone): "open", "refused", "timeout" or "unreachable"."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.namespace, sys.executable, "-c", CONNECT,
             self.internet.address, address, str(port), str(timeout)],
            capture_output=True, text=True, check=False, timeout=timeout + 30)
        return done.stdout.strip() or f"error: {done.stderr.strip()[-500:]}"


# A connect attempt run inside the namespace; prints its verdict.
CONNECT = r"""
import socket, sys
source, host, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket()
s.bind((source, 0))
s.settimeout(timeout)
try:
    s.connect((host, port))
    print("open")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print("unreachable" if exc.errno in (101, 113) else f"error {exc.errno}")
"""


class NamespaceUnavailable(RuntimeError):
    """Network namespaces cannot be created here: the message says why."""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _must(*args: str) -> None:
    done = _ip(*args)
    if done.returncode != 0:
        raise NamespaceUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _subnet_in_use(third_octet: int) -> bool:
    """Whether 169.254.N.0/24 or 203.0.113.N is routed or assigned on this host already."""
    link_local = f"{LINK_LOCAL_PREFIX}.{third_octet}."
    internet = f"{INTERNET_PREFIX}.{third_octet}"
    routes = _ip("-4", "route", "show", "table", "all").stdout
    addresses = _ip("-4", "-o", "addr", "show").stdout
    text = routes + addresses
    return link_local in text or f"{internet} " in text or f"{internet}/" in text


def _choose_octet() -> int:
    for _ in range(64):
        # Not the real metadata service's /24 (N = 169), nor 169.254.0.x / 169.254.255.x.
        octet = 16 + secrets.randbelow(150)
        if octet != 169 and not _subnet_in_use(octet):
            return octet
    raise NamespaceUnavailable("no free 169.254.N.0/24 for a test namespace")


@contextmanager
def namespace(prefix: str = "markco-test") -> Iterator[str]:
    """An empty network namespace (loopback up) for the block; yields its name. Processes run
    in it with `ip netns exec NAME ...` see only its interfaces and its own firewall tables."""
    _require_root()
    name = f"{prefix}-{secrets.token_hex(3)}"
    _must("netns", "add", name)
    try:
        _must("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        _ip("netns", "del", name)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise NamespaceUnavailable("creating network namespaces needs root")
    if shutil.which("ip") is None:
        raise NamespaceUnavailable("`ip` (iproute2) is not installed: apt-get install iproute2")


@contextmanager
def fake_outside(*, port: int = 80) -> Iterator[FakeOutside]:
    """Create the namespace, its veth pair, addresses, routes and listener; yield them; remove
    them all at the end (see the module doc). Raises `NamespaceUnavailable` when this machine
    cannot (not root, no iproute2, no namespaces)."""
    _require_root()
    tag = secrets.token_hex(3)
    namespace = f"markco-test-{tag}"
    host_end, far_end = f"mkt{tag}h", f"mkt{tag}n"
    with ExitStack() as cleanup:
        _must("netns", "add", namespace)
        cleanup.callback(_ip, "netns", "del", namespace)
        # Deleting the namespace deletes the far end, and with it the host end and its routes;
        # deleting the host end too covers a failure before the far end moved in.
        cleanup.callback(_ip, "link", "del", host_end)
        _must("link", "add", host_end, "type", "veth", "peer", "name", far_end,
              "netns", namespace)
        for attempt in range(8):
            octet = _choose_octet()
            done = _ip("addr", "add", f"{LINK_LOCAL_PREFIX}.{octet}.1/24", "dev", host_end)
            if done.returncode == 0:
                break
            if attempt == 7:
                raise NamespaceUnavailable(f"could not address {host_end}: {done.stderr}")
        metadata = Target("metadata", f"{LINK_LOCAL_PREFIX}.{octet}.77", port)
        internet = Target("internet", f"{INTERNET_PREFIX}.{octet}", port)
        _must("link", "set", host_end, "up")
        _must("-n", namespace, "link", "set", "lo", "up")
        _must("-n", namespace, "addr", "add", f"{metadata.address}/24", "dev", far_end)
        _must("-n", namespace, "addr", "add", f"{internet.address}/32", "dev", far_end)
        _must("-n", namespace, "link", "set", far_end, "up")
        _must("-n", namespace, "route", "add", "default", "via",
              f"{LINK_LOCAL_PREFIX}.{octet}.1", "dev", far_end)
        _must("route", "add", f"{internet.address}/32", "via", metadata.address, "dev",
              host_end)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", LISTENER, str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        cleanup.callback(_stop, listener)
        outside = FakeOutside(namespace, host_end, metadata, internet)
        _wait_ready(listener, outside)
        yield outside


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _wait_ready(listener: subprocess.Popen[bytes], outside: FakeOutside) -> None:
    """Until the listener answers on both addresses from the host (the veth needs a moment)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not (outside.answers(outside.metadata, 0.5) and outside.answers(outside.internet, 0.5)):
        if listener.poll() is not None or time.monotonic() > deadline:
            if listener.poll() is None:
                listener.kill()
            _, error = listener.communicate()
            raise NamespaceUnavailable(
                f"the listener in {outside.namespace} did not answer within "
                f"{READY_TIMEOUT:g} s (exit status {listener.returncode}): "
                f"{error.decode(errors='replace')[-1000:]}")
        time.sleep(0.05)

