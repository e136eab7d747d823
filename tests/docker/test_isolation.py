"""On podman, one user's containers cannot reach another user's — by any address — nor the
host's services, the engine or cloud metadata; the daemon reaches both of a user's workloads.

A probe runs as user A's EDITOR workload (same image, network, user and privileges as a real
editor) and tries every address of user B's runtime and editor, the host through A's gateway,
and "the outside"; it prints one JSON line of verdicts, which the test reads from the logs.

"The outside" is owned by the test (`markco_trio.testing.netns.fake_outside`): a fake metadata
service on a link-local address and a fake internet host on a documentation address, in a
network namespace the test creates and removes. No probe is ever sent to a real address; each
test shows from the host that its targets do answer, so an unreachable verdict means something.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import trio
from markco_docker import DockerBackend, firewall
from markco_docker.testing import kit_spec_factory

from markco_trio.records import WorkloadRole
from markco_trio.roles import ContainerInfo, ContainerSpec
from markco_trio.testing.backend_kit import Workloads, fresh_user, wait_for_log
from markco_trio.testing.netns import FakeOutside, NamespaceUnavailable, fake_outside
from markco_trio.testing.network import free_port
from markco_trio.testing.system import missing_system

pytestmark = pytest.mark.system

BackendFactory = Callable[..., DockerBackend]

PROBE = r"""
import json, os, socket, sys, time
from concurrent.futures import ThreadPoolExecutor
targets = json.loads(sys.argv[1])
def probe(target):
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(1.5)
    try:
        s.connect((host, int(port)))
        return "open"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return "unreachable" if exc.errno in (101, 113) else f"error {exc.errno}"
    finally:
        s.close()
with ThreadPoolExecutor(len(targets) or 1) as pool:
    verdicts = dict(zip(targets, pool.map(probe, targets)))
sockets = [p for p in ("/run/podman/podman.sock", "/var/run/docker.sock", "/run/docker.sock")
           if os.path.exists(p)]
print("probe: " + json.dumps({"verdicts": verdicts, "engine_sockets": sockets}), flush=True)
while True:
    time.sleep(1)
"""

# What a probe may answer for a target it must not reach: no route, or dropped on the way.
BLOCKED = ("unreachable", "timeout")


@pytest.fixture
def outside() -> Iterator[FakeOutside]:
    """The test's fake metadata service and internet host (see the module doc), reachable from
    the host — checked here, so that a target the probe cannot reach is known to exist."""
    try:
        with fake_outside() as hosts:
            assert hosts.answers(hosts.metadata) and hosts.answers(hosts.internet)
            yield hosts
    except NamespaceUnavailable as exc:
        missing_system("network namespaces (for the test's fake outside hosts)", str(exc))


async def wait_answering(url: str, within: float = 20.0) -> None:
    """Poll `url` from the host until the workload answers over HTTP — with any status: what
    these tests are about is the network path, not what the application makes of the request
    (the editor may refuse a Host it does not know, a container address, with 421)."""
    async with httpx.AsyncClient(timeout=2.0) as client:
        with trio.move_on_after(within):
            while True:
                try:
                    await client.get(url)
                    return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)
    pytest.fail(f"{url} did not answer within {within:g} s")


async def network_gateway(backend: DockerBackend, info: ContainerInfo) -> str:
    """The gateway address of the container's network: the host, as the container sees it."""
    response = await backend.engine.request("GET", f"/containers/{info.handle}/json")
    networks = response.json()["NetworkSettings"]["Networks"]
    return str(next(iter(networks.values()))["Gateway"])


async def run_probe(backend: DockerBackend, workloads: Workloads, spec: ContainerSpec,
                    targets: list[str]) -> dict[str, Any]:
    """Run the probe as `spec` (A's editor); return its verdicts."""
    probe_spec = dataclasses.replace(spec, command=("python", "-c", PROBE, json.dumps(targets)),
                                     stop_signal="SIGKILL")
    info = await workloads.run(probe_spec)
    logs = await wait_for_log(backend, info.handle, "probe: ", within=30)
    line = next(x for x in logs.splitlines() if x.startswith("probe: "))
    result: dict[str, Any] = json.loads(line.removeprefix("probe: "))
    return result


@pytest.fixture
async def isolated(make_backend: BackendFactory, deployment_ids: Callable[[str], str],
                   tmp_path: Any) -> AsyncIterator[tuple[DockerBackend, Workloads,
                                                         Callable[..., ContainerSpec]]]:
    """A backend in `internal` mode, its workloads (removed at teardown) and specs."""
    async with make_backend(deployment_ids("iso")) as backend:
        workloads = Workloads(backend)
        try:
            yield backend, workloads, kit_spec_factory(backend.deployment_id, tmp_path)
        finally:
            with trio.CancelScope(shield=True):
                await workloads.remove_all()


async def start_user(backend: DockerBackend, workloads: Workloads,
                     specs: Callable[..., ContainerSpec],
                     user: str) -> tuple[ContainerInfo, ContainerInfo]:
    """Start a user's real runtime (mrmd-python) and real editor; wait until both answer."""
    runtime = await workloads.run(specs(user, WorkloadRole.RUNTIME))
    editor = await workloads.run(specs(user, WorkloadRole.EDITOR))
    assert runtime.address and editor.address
    await wait_answering(f"http://{runtime.address}/mrp/v1/capabilities")
    await wait_answering(f"http://{editor.address}/health")
    return runtime, editor


async def test_the_daemon_reaches_both_workloads_and_nothing_is_published(
        isolated: tuple[DockerBackend, Workloads, Callable[..., ContainerSpec]]) -> None:
    backend, workloads, specs = isolated
    runtime, editor = await start_user(backend, workloads, specs, fresh_user())
    for info in (runtime, editor):
        response = await backend.engine.request("GET", f"/containers/{info.handle}/json")
        data = response.json()
        assert not any(data["NetworkSettings"].get("Ports", {}).values()), data["Name"]
        assert not any((data["HostConfig"].get("PortBindings") or {}).values())


async def test_a_users_editor_cannot_reach_another_users_workloads_by_any_address(
        isolated: tuple[DockerBackend, Workloads, Callable[..., ContainerSpec]]) -> None:
    backend, workloads, specs = isolated
    alice, bob = fresh_user(), fresh_user()
    bob_runtime, bob_editor = await start_user(backend, workloads, specs, bob)
    alice_runtime = await workloads.run(specs(alice, WorkloadRole.RUNTIME))
    assert alice_runtime.address and bob_runtime.address and bob_editor.address
    await wait_answering(f"http://{alice_runtime.address}/mrp/v1/capabilities")
    alice_gateway = await network_gateway(backend, alice_runtime)
    bob_gateway = await network_gateway(backend, bob_runtime)
    bob_ports = [a.rsplit(":", 1)[1] for a in (bob_runtime.address, bob_editor.address)]
    bob_targets = [bob_runtime.address, bob_editor.address,
                   *(f"{gateway}:{port}" for gateway in (alice_gateway, bob_gateway)
                     for port in bob_ports),
                   *(f"127.0.0.1:{port}" for port in bob_ports)]
    # A host service on loopback only (as the daemon and PostgreSQL listen by default).
    with trio.socket.socket() as loopback:
        await loopback.bind(("127.0.0.1", free_port()))
        loopback.listen()
        loopback_port = loopback.getsockname()[1]
        host_targets = [f"{alice_gateway}:{loopback_port}", f"127.0.0.1:{loopback_port}"]
        result = await run_probe(backend, workloads, specs(alice, WorkloadRole.EDITOR),
                                 [alice_runtime.address, *bob_targets, *host_targets])
    verdicts = result["verdicts"]
    assert verdicts[alice_runtime.address] == "open"  # the probe works: its own runtime answers
    for target in bob_targets:
        assert verdicts[target] != "open", f"alice reached bob at {target}: {verdicts}"
    for target in host_targets:
        assert verdicts[target] != "open", f"alice reached a host service at {target}"
    assert result["engine_sockets"] == []


async def test_in_internal_mode_the_editor_reaches_neither_metadata_nor_the_internet(
        isolated: tuple[DockerBackend, Workloads, Callable[..., ContainerSpec]],
        outside: FakeOutside) -> None:
    backend, workloads, specs = isolated
    user = fresh_user()
    runtime = await workloads.run(specs(user, WorkloadRole.RUNTIME))
    assert runtime.address
    await wait_answering(f"http://{runtime.address}/mrp/v1/capabilities")
    targets = [outside.metadata.endpoint, outside.internet.endpoint]
    result = await run_probe(backend, workloads, specs(user, WorkloadRole.EDITOR),
                             [runtime.address, *targets])
    verdicts = result["verdicts"]
    assert verdicts[runtime.address] == "open"
    for target in targets:
        assert verdicts[target] in BLOCKED, verdicts
    assert outside.answers(outside.metadata) and outside.answers(outside.internet)


@pytest.fixture
def firewall_installed() -> None:
    """Skip (fail in CI) unless markco's nftables firewall is in place (`scripts/setup-podman
    --firewall`, which `scripts/bootstrap --system` runs)."""
    problems = firewall.check()
    if problems:
        missing_system("markco's host firewall", firewall.problem_line(problems))


def install_firewall() -> None:
    """Make sure markco's firewall is installed on this host, as `scripts/setup-podman
    --firewall` does (left as it is when `check()` finds it in place: installing replaces the
    table, which would reset the counters a concurrent test reads)."""
    if os.geteuid() != 0:
        missing_system("root", "installing the host firewall needs root")
    if not firewall.check():
        return
    try:
        firewall.install()
    except firewall.FirewallError as exc:
        missing_system("nftables", f"{exc}; {firewall.SETUP_HINT}")
    assert firewall.check() == []


def link_local_drops() -> int:
    """Packets dropped so far by markco's forward rule for 169.254.0.0/16 (its counter)."""
    done = subprocess.run(["nft", "-j", "list", "chain", "inet", firewall.TABLE, "forward"],
                          capture_output=True, text=True, check=True)
    for item in json.loads(done.stdout)["nftables"]:
        expressions = item.get("rule", {}).get("expr", [])
        if "169.254.0.0" in json.dumps(expressions):
            return sum(int(e["counter"]["packets"]) for e in expressions if "counter" in e)
    raise AssertionError(f"no link-local rule in markco's forward chain: {done.stdout}")


def iptables_rules(chain: str) -> list[str]:
    """The rules of an iptables chain (of the engine's), in order."""
    done = subprocess.run(["iptables", "-S", chain], capture_output=True, text=True,
                          check=True)
    return done.stdout.splitlines()


async def network_subnet(backend: DockerBackend, info: ContainerInfo) -> str:
    """The subnet of the container's network, as `10.89.N.0/24`."""
    response = await backend.engine.request("GET", f"/containers/{info.handle}/json")
    network = next(iter(response.json()["NetworkSettings"]["Networks"]))
    details = (await backend.engine.request("GET", f"/networks/{network}")).json()
    return str(details["IPAM"]["Config"][0]["Subnet"])


@pytest.mark.usefixtures("firewall_installed")
@pytest.mark.parametrize("network", ["internal", "egress"])
async def test_with_the_firewall_host_services_on_every_address_are_out_of_reach(
        make_backend: BackendFactory, deployment_ids: Callable[[str], str], tmp_path: Any,
        network: str) -> None:
    async with make_backend(deployment_ids(network[:3]), network=network) as backend:
        workloads = Workloads(backend)
        try:
            specs = kit_spec_factory(backend.deployment_id, tmp_path)
            user = fresh_user()
            runtime = await workloads.run(specs(user, WorkloadRole.RUNTIME))
            gateway = await network_gateway(backend, runtime)
            with trio.socket.socket() as exposed:  # a host service listening on every address
                await exposed.bind(("0.0.0.0", free_port()))
                exposed.listen()
                port = exposed.getsockname()[1]
                result = await run_probe(backend, workloads, specs(user, WorkloadRole.EDITOR),
                                         [f"{gateway}:{port}"])
            assert result["verdicts"][f"{gateway}:{port}"] == "timeout"  # dropped, not refused
        finally:
            with trio.CancelScope(shield=True):
                await workloads.remove_all()


async def test_in_egress_mode_the_editor_is_published_on_loopback_only(
        make_backend: BackendFactory, deployment_ids: Callable[[str], str],
        tmp_path: Any) -> None:
    async with make_backend(deployment_ids("egress"), network="egress") as backend:
        workloads = Workloads(backend)
        try:
            specs = kit_spec_factory(backend.deployment_id, tmp_path)
            runtime, editor = await start_user(backend, workloads, specs, fresh_user())
            assert editor.address is not None and editor.address.startswith("127.0.0.1:")
            response = await backend.engine.request("GET", f"/containers/{runtime.handle}/json")
            assert not any((response.json()["HostConfig"].get("PortBindings") or {}).values())
        finally:
            with trio.CancelScope(shield=True):
                await workloads.remove_all()


@pytest.mark.usefixtures("firewall_installed")
async def test_in_egress_mode_the_firewall_rules_keep_users_apart(
        make_backend: BackendFactory, deployment_ids: Callable[[str], str],
        tmp_path: Any) -> None:
    async with make_backend(deployment_ids("egress"), network="egress") as backend:
        workloads = Workloads(backend)
        try:
            specs = kit_spec_factory(backend.deployment_id, tmp_path)
            alice, bob = fresh_user(), fresh_user()
            bob_runtime, bob_editor = await start_user(backend, workloads, specs, bob)
            assert bob_runtime.address and bob_editor.address
            alice_runtime = await workloads.run(specs(alice, WorkloadRole.RUNTIME))
            assert alice_runtime.address
            await wait_answering(f"http://{alice_runtime.address}/mrp/v1/capabilities")
            bob_ip = bob_runtime.address.rsplit(":", 1)[0]
            bob_editor_port = (await backend.engine.request(
                "GET", f"/containers/{bob_editor.handle}/json")).json()["Config"]["Labels"][
                "markco.port"]
            targets = [bob_runtime.address, f"{bob_ip}:{bob_editor_port}",
                       bob_editor.address]
            result = await run_probe(backend, workloads, specs(alice, WorkloadRole.EDITOR),
                                     [alice_runtime.address, *targets])
            verdicts = result["verdicts"]
            assert verdicts[alice_runtime.address] == "open"
            for target in targets:
                assert verdicts[target] != "open", f"alice reached {target}: {verdicts}"
        finally:
            with trio.CancelScope(shield=True):
                await workloads.remove_all()


async def test_in_egress_mode_metadata_stays_out_of_reach_after_the_engine_creates_a_network(
        make_backend: BackendFactory, deployment_ids: Callable[[str], str], tmp_path: Any,
        outside: FakeOutside) -> None:
    # The order that defeated markco's earlier iptables rules: the firewall first, THEN the
    # engine creates a network (netavark puts its own ACCEPT at the top of FORWARD).
    install_firewall()
    async with make_backend(deployment_ids("order"), network="egress") as backend:
        workloads = Workloads(backend)
        try:
            specs = kit_spec_factory(backend.deployment_id, tmp_path)
            user = fresh_user()
            runtime = await workloads.run(specs(user, WorkloadRole.RUNTIME))  # a new network
            assert runtime.address
            # The engine accepts the network's traffic in its own chain (the ACCEPT that won
            # over rules in FORWARD): markco's table must drop it all the same.
            subnet = await network_subnet(backend, runtime)
            assert any(f"-s {subnet}" in rule and "ACCEPT" in rule
                       for rule in iptables_rules("NETAVARK_FORWARD")), subnet
            await wait_answering(f"http://{runtime.address}/mrp/v1/capabilities")
            dropped_before = link_local_drops()
            result = await run_probe(backend, workloads, specs(user, WorkloadRole.EDITOR),
                                     [runtime.address, outside.metadata.endpoint,
                                      outside.internet.endpoint])
            verdicts = result["verdicts"]
            assert verdicts[runtime.address] == "open"
            # Egress works (the same namespace, behind the same veth, answers the probe)...
            assert verdicts[outside.internet.endpoint] == "open", verdicts
            # ...but not to link-local addresses: dropped, by markco's table.
            assert verdicts[outside.metadata.endpoint] == "timeout", verdicts
            assert link_local_drops() > dropped_before
            assert outside.answers(outside.metadata)  # the control: it is there
        finally:
            with trio.CancelScope(shield=True):
                await workloads.remove_all()


@pytest.mark.usefixtures("firewall_installed")
@pytest.mark.parametrize("network", ["internal", "egress"])
async def test_with_the_firewall_another_host_cannot_reach_a_runtime_at_its_address(
        make_backend: BackendFactory, deployment_ids: Callable[[str], str], tmp_path: Any,
        outside: FakeOutside, network: str) -> None:
    # The fake namespace routes through this host, as a neighbour on its network would.
    async with make_backend(deployment_ids(network[:3]), network=network) as backend:
        workloads = Workloads(backend)
        try:
            specs = kit_spec_factory(backend.deployment_id, tmp_path)
            runtime = await workloads.run(specs(fresh_user(), WorkloadRole.RUNTIME))
            assert runtime.address
            await wait_answering(f"http://{runtime.address}/mrp/v1/capabilities")  # the daemon
            host, port = runtime.address.rsplit(":", 1)
            verdict = await trio.to_thread.run_sync(outside.connect_from_inside, host, int(port))
            assert verdict == "timeout", verdict  # dropped on the way in
        finally:
            with trio.CancelScope(shield=True):
                await workloads.remove_all()
