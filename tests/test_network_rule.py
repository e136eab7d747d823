"""The network rule, kept: no test, benchmark or script sends a packet beyond this machine.

Packets go only to loopback or to addresses inside network namespaces and bridges a test
creates (`markco_trio.testing.netns`). This scan of the repository's tests, benchmarks, scripts
and test helpers fails on:

- any mention of a cloud metadata endpoint or a well-known public resolver, whatever for (a
  "should be blocked" probe reaches it the day it is not blocked);
- a literal address used as a connect target — in a URL, a `(host, port)` tuple, a connect or
  open call, bash's `/dev/tcp/` — outside loopback, the unspecified address and the ranges the
  fakes use (169.254.0.0/16 but the metadata address, 203.0.113.0/24, 198.51.100.0/24). Not
  192.0.2.0/24: our CI machines' own network is in it. Addresses in header values or allow-lists
  (`X-Forwarded-For: 10.0.0.1`) are data, not targets, and pass;
- a headless Chromium launched without the flags that stop its own traffic (background
  networking, component updates, sync, first-run fetches).

This file itself is not scanned: it names what it looks for.
"""

from __future__ import annotations

import ast
import ipaddress
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ["tests", "bench", "scripts", ".ci", "markco_trio/testing", "plugins/*/tests",
           "plugins/*/markco_*/testing.py"]
SUFFIXES = {".py", ".js", ".c", ".sh", ".toml", ".patch", ""}
THIS_FILE = Path(__file__).resolve()

# Cloud metadata services (AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba) and public DNS
# resolvers (Cloudflare, Google, Quad9, OpenDNS), by address or name.
FORBIDDEN = ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "metadata.google.internal",
             "1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4", "9.9.9.9", "149.112.112.112",
             "208.67.222.222", "208.67.220.220", "2606:4700:4700::1111",
             "2001:4860:4860::8888"]
ALLOWED_TARGETS = [ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128",
    "169.254.0.0/16",                     # link-local: the fake metadata service of a test
    "203.0.113.0/24", "198.51.100.0/24",  # documentation: the fake internet hosts of a test
)]
NEVER_TARGETS = [ipaddress.ip_address("169.254.169.254")]

_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
URL_HOST = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^/@\s\"'`]*@)?(\[[0-9A-Fa-f:.]+\]|"
                      + _IPV4 + r")")
DEV_TCP = re.compile(r"/dev/(?:tcp|udp)/(" + _IPV4 + r"|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]+)/")
CONNECT_CALLS = {"connect", "connect_ex", "create_connection", "open_tcp_stream",
                 "open_connection", "sendto", "open_ssl_over_tcp_stream"}


def scanned_files() -> list[Path]:
    """The files the rule applies to."""
    found: set[Path] = set()
    for pattern in SCANNED:
        for base in ROOT.glob(pattern):
            candidates = [base] if base.is_file() else base.rglob("*")
            for path in candidates:
                if (path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts
                        and path.resolve() != THIS_FILE):
                    found.add(path)
    return sorted(found)


def _forbidden_pattern(text: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w.])" + re.escape(text) + r"(?!\w|\.\d)", re.IGNORECASE)


FORBIDDEN_PATTERNS = [(name, _forbidden_pattern(name)) for name in FORBIDDEN]


def forbidden_mentions(text: str) -> list[str]:
    """The forbidden addresses and names `text` mentions."""
    return [name for name, pattern in FORBIDDEN_PATTERNS if pattern.search(text)]


def _as_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _off_machine(text: str) -> bool:
    address = _as_address(text)
    if address is None:
        return False
    if address in NEVER_TARGETS:
        return True
    return not any(address in network for network in ALLOWED_TARGETS)


def _python_targets(source: str) -> list[str]:
    """Literal hosts in `(host, port)` tuples and in the first argument of connect calls."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    hosts: list[str] = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Tuple) and len(node.elts) in (2, 4)
                and isinstance(node.elts[0], ast.Constant) and isinstance(node.elts[0].value, str)
                and isinstance(node.elts[1], ast.Constant)
                and isinstance(node.elts[1].value, int)):
            hosts.append(node.elts[0].value)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (name in CONNECT_CALLS and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)):
                hosts.append(first.value.rsplit(":", 1)[0] if first.value.count(":") == 1
                             else first.value)
    return hosts


def off_machine_targets(text: str, *, python: bool) -> list[str]:
    """Literal connect targets in `text` that are not loopback nor test-owned."""
    hosts = [m.group(1) for m in URL_HOST.finditer(text)]
    hosts += [m.group(1) for m in DEV_TCP.finditer(text)]
    if python:
        hosts += _python_targets(text)
    return [host for host in hosts if _off_machine(host)]


def test_no_file_names_a_cloud_metadata_address_or_a_public_resolver() -> None:
    offenders = {}
    for path in scanned_files():
        found = forbidden_mentions(path.read_text(errors="replace"))
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert not offenders, (f"never name these, not even as targets to block (use "
                           f"markco_trio.testing.netns.fake_outside): {offenders}")


def test_every_literal_connect_target_is_loopback_or_test_owned() -> None:
    offenders = {}
    for path in scanned_files():
        found = off_machine_targets(path.read_text(errors="replace"),
                                    python=path.suffix == ".py")
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert not offenders, (f"connect targets beyond this machine (use loopback or "
                           f"markco_trio.testing.netns.fake_outside): {offenders}")


CHROMIUM_QUIET = ["--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]


def test_every_headless_chromium_launch_stops_chromiums_own_traffic() -> None:
    offenders = {}
    for path in scanned_files():
        text = path.read_text(errors="replace")
        if '"--headless' in text:
            missing = [flag for flag in CHROMIUM_QUIET if flag not in text]
            if missing:
                offenders[str(path.relative_to(ROOT))] = missing
    assert not offenders, f"Chromium launched without: {offenders}"


def test_the_scan_covers_the_tests_benchmarks_and_scripts() -> None:
    files = {str(path.relative_to(ROOT)) for path in scanned_files()}
    assert {"tests/docker/test_isolation.py", "bench/proxy.py", "bench/wsclient.c",
            "scripts/setup-podman", ".ci/run", "markco_trio/testing/netns.py"} <= files


def test_the_scan_flags_the_probes_issue_9_found() -> None:
    old_probes = 'METADATA = "169.254.169.254:80"\nOUTSIDE = "1.1.1.1:53"\n'
    assert forbidden_mentions(old_probes) == ["169.254.169.254", "1.1.1.1"]
    assert forbidden_mentions("curl http://METADATA.google.internal/") == [
        "metadata.google.internal"]


def test_the_scan_flags_literal_targets_beyond_this_machine() -> None:
    snippets = {
        'httpx.get("http://192.0.2.1:8080/")': "192.0.2.1",
        's.connect(("10.1.2.3", 80))': "10.1.2.3",
        'await trio.open_tcp_stream("172.16.0.5", 443)': "172.16.0.5",
        'exec 3<>/dev/tcp/93.184.216.34/80': "93.184.216.34",
        'url = "https://[2001:db8::1]:443/"': "[2001:db8::1]",
        'url = "http://169.254.169.254/latest/"': "169.254.169.254",
    }
    for snippet, target in snippets.items():
        assert off_machine_targets(snippet, python=True) == [target], snippet


def test_the_scan_passes_loopback_test_owned_targets_and_header_values() -> None:
    fine = ('s.connect(("127.0.0.1", port))\n'
            'httpx.get(f"http://{runtime.address}/")\n'
            'httpx.get("http://[::1]:3000/healthz")\n'
            'dsn = "postgresql://m@127.0.0.1:5432/markco"\n'
            'probe("169.254.77.77:80")\n'
            's.connect(("203.0.113.7", 80))\n'
            'headers = {"X-Forwarded-For": "10.0.0.1"}\n'
            'trusted = TrustedProxies(["10.0.0.0/8", "192.0.2.1"])\n')
    assert off_machine_targets(fine, python=True) == []
    assert forbidden_mentions(fine) == []
    # Addresses that merely contain a forbidden one are not it.
    assert forbidden_mentions("11.1.1.1 and 1.1.1.10 and 18.8.8.8") == []
