"""markco's host firewall (`markco_docker.firewall`): installed whole and idempotently, checked
for `markco doctor` and by the daemon, which refuses `egress` mode without it.

Each test works in a network namespace of its own (`markco_trio.testing.netns.namespace`):
nftables tables belong to a namespace, so installing, breaking and deleting the firewall there
leaves the host's (which other tests rely on) untouched. A daemon is started INSIDE such a
namespace to see what it decides from that namespace's firewall; it reaches the test's podman
service through its unix socket, which namespaces do not separate.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from markco_docker import firewall

from markco_trio.testing.netns import NamespaceUnavailable, namespace
from markco_trio.testing.system import missing_system

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def netns() -> Iterator[str]:
    """An empty network namespace with nftables available (skipped, failed in CI, when not)."""
    if shutil.which("nft") is None:
        missing_system("nftables (`nft`)", firewall.SETUP_HINT)
    try:
        with namespace("markco-fw") as name:
            yield name
    except NamespaceUnavailable as exc:
        missing_system("network namespaces", str(exc))


def nft(netns: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, "nft", *args], input=stdin,
                          capture_output=True, text=True, check=True)
    return done.stdout


def listing(netns: str) -> str:
    """The table as nft lists it, without what changes by itself (counters)."""
    text = nft(netns, "list", "table", firewall.FAMILY, firewall.TABLE)
    return "\n".join(line.split(" counter ")[0] for line in text.splitlines())


def test_check_finds_nothing_wrong_once_installed(netns: str) -> None:
    firewall.install(netns=netns)
    assert firewall.check(netns=netns) == []


def test_check_reports_a_missing_table(netns: str) -> None:
    assert firewall.check(netns=netns) == [
        f"the nftables table {firewall.FAMILY} {firewall.TABLE} is not installed"]


def test_check_reports_a_table_of_another_version(netns: str) -> None:
    nft(netns, "-f", "-", stdin=firewall.RULESET.replace(firewall.VERSION, "markco v0"))
    problems = firewall.check(netns=netns)
    assert len(problems) == 1 and "out of date" in problems[0] and "markco v0" in problems[0]


def test_check_reports_a_base_chain_that_runs_after_the_engines(netns: str) -> None:
    late = firewall.RULESET.replace("hook forward priority filter -10",
                                    "hook forward priority filter + 10")
    assert late != firewall.RULESET
    nft(netns, "-f", "-", stdin=late)
    problems = firewall.check(netns=netns)
    assert len(problems) == 1 and "'forward'" in problems[0] and "priority 10" in problems[0]


def test_check_reports_a_rule_deleted_by_hand(netns: str) -> None:
    firewall.install(netns=netns)
    listed = nft(netns, "-a", "list", "chain", firewall.FAMILY, firewall.TABLE,
                 "into_user_network")
    handle = next(line.rsplit("# handle ", 1)[1] for line in listed.splitlines()
                  if "fib daddr" in line)
    nft(netns, "delete", "rule", firewall.FAMILY, firewall.TABLE, "into_user_network",
        "handle", handle)
    assert firewall.check(netns=netns) == [
        f"chain 'into_user_network' of {firewall.FAMILY} {firewall.TABLE} has 2 rules, "
        f"expected 3"]


def test_installing_again_gives_the_same_table(netns: str) -> None:
    firewall.install(netns=netns)
    first = listing(netns)
    firewall.install(netns=netns)
    assert listing(netns) == first
    assert nft(netns, "list", "tables").count(f"table {firewall.FAMILY} {firewall.TABLE}") == 1


def test_installing_removes_the_earlier_iptables_chains(netns: str) -> None:
    def iptables(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", netns, "iptables", *args],
                              capture_output=True, text=True, check=False)

    for chain, parent, flag in (("MARKCO-INPUT", "INPUT", "-i"),
                                ("MARKCO-FORWARD", "FORWARD", "-i"),
                                ("MARKCO-FORWARD", "FORWARD", "-o")):
        iptables("-N", chain)
        iptables("-A", chain, "-j", "DROP")
        assert iptables("-I", parent, "1", flag, "mkc+", "-j", chain).returncode == 0
    firewall.install(netns=netns)
    rules = iptables("-S").stdout
    assert "MARKCO" not in rules, rules
    assert firewall.check(netns=netns) == []


# ---------------------------------------------------------------------- the daemon's start


def daemon_config(tmp_path: Path, engine_url: str, mounts: list[str],
                  network: str = "egress") -> Path:
    """A daemon of a fresh deployment on the test podman, in `network` mode."""
    path = tmp_path / "markco.toml"
    rendered_mounts = ", ".join(f'"{m}"' for m in mounts)
    path.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\ndata_dir = "data"\ndrain_seconds = 1\n'
        f'deployment_id = "fw-{os.urandom(3).hex()}"\n\n'
        f'[compute]\nbackend = "docker"\n\n'
        f'[compute.docker]\nengine_url = "{engine_url}"\nmounts = [{rendered_mounts}]\n'
        f'network = "{network}"\n')
    return path


def run_daemon(netns: str, config: Path, within: float = 60.0) -> tuple[int, str]:
    """Start `markco run` in the namespace; stop it (SIGTERM) once it listens. Its exit status
    and what it logged."""
    with subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "markco_trio", "run",
             "--config", str(config)], cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        assert process.stderr is not None
        logged: list[str] = []
        deadline = time.monotonic() + within
        try:
            for line in process.stderr:
                logged.append(line)
                if "markco listening on" in line:
                    process.send_signal(signal.SIGTERM)
                assert time.monotonic() < deadline, "".join(logged)
            return process.wait(timeout=within), "".join(logged)
        finally:
            if process.poll() is None:
                process.kill()


def test_the_daemon_starts_in_egress_mode_with_the_firewall(
        netns: str, tmp_path: Path, podman_engine_url: str,
        local_image_mounts: list[str]) -> None:
    firewall.install(netns=netns)
    code, logged = run_daemon(netns, daemon_config(tmp_path, podman_engine_url,
                                                   local_image_mounts))
    assert "markco listening on" in logged, logged
    assert code == 0, logged


def test_the_daemon_refuses_egress_mode_once_the_firewall_is_deleted(
        netns: str, tmp_path: Path, podman_engine_url: str,
        local_image_mounts: list[str]) -> None:
    firewall.install(netns=netns)
    nft(netns, "delete", "table", firewall.FAMILY, firewall.TABLE)
    code, logged = run_daemon(netns, daemon_config(tmp_path, podman_engine_url,
                                                   local_image_mounts))
    assert code == 1, logged
    assert "markco listening on" not in logged
    refusals = [line for line in logged.splitlines() if "scripts/setup-podman --firewall" in line]
    assert len(refusals) == 1, logged
    assert 'network = "egress"' in refusals[0]
    assert f"table {firewall.FAMILY} {firewall.TABLE} is not installed" in refusals[0]


def test_the_daemon_starts_in_internal_mode_without_the_firewall_and_warns(
        netns: str, tmp_path: Path, podman_engine_url: str,
        local_image_mounts: list[str]) -> None:
    code, logged = run_daemon(netns, daemon_config(tmp_path, podman_engine_url,
                                                   local_image_mounts, network="internal"))
    assert "markco listening on" in logged and code == 0, logged
    warnings = [line for line in logged.splitlines() if "WARNING" in line
                and "scripts/setup-podman --firewall" in line]
    assert len(warnings) == 1 and "reachable from containers" in warnings[0], logged
