"""Several hosts without engines: the configuration, the choice of a host, the reservation
ledger under concurrent starts (real SQLite), what the admin page offers.

The ledger tests hand `placement.reserve` a two-attribute stand-in for the compute service
(its storage and clock are all the ledger uses); the backend is never entered (no engine is
contacted by placement)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from markco_docker.hosts import HostDown, MultiHostBackend, NoRoom
from markco_docker.options import DockerOptions

from markco_trio.builtin.auth import pages
from markco_trio.builtin.compute import moves, placement
from markco_trio.builtin.compute.options import WorkloadsOptions
from markco_trio.errors import ConfigError
from markco_trio.options import parse_options
from markco_trio.records import RuntimeState, WorkloadRole
from markco_trio.storage.sqlite import SqliteStorage

MIB = 1 << 20


def options(**extra: Any) -> DockerOptions:
    table = {"engine_url": "unix:///run/a.sock", "host_name": "a", "memory_budget_mb": 1024,
             "hosts": [{"name": "b", "engine_url": "unix:///run/b.sock",
                        "memory_budget_mb": 2048},
                       {"name": "g", "engine_url": "https://198.51.100.9:2376",
                        "tls_cert_file": "/etc/markco/c.pem", "tls_key_file": "/etc/markco/k.pem",
                        "labels": ["gpu"], "memory_budget_mb": 512}], **extra}
    return parse_options(DockerOptions, table, "[compute.docker]")


def backend(tmp_path: Path, **extra: Any) -> MultiHostBackend:
    return MultiHostBackend(options(**extra), deployment_id="d", state_dir=tmp_path)


def test_one_engine_url_is_still_one_host_named_local() -> None:
    parsed = parse_options(DockerOptions, {"engine_url": "unix:///run/a.sock"}, "x")
    assert parsed.host_name == "local" and parsed.hosts == []


def test_hosts_are_parsed_with_labels_and_budgets(tmp_path: Path) -> None:
    multi = backend(tmp_path)
    assert multi.host_names() == ["a", "b", "g"]
    assert multi.host_options["g"].labels == ["gpu"]
    assert multi.host_options["b"].memory_budget_bytes == 2048 * MIB
    # Engines other than the first name their bridges apart (two engines on one machine).
    assert multi.backends["a"].bridge_salt == "" and multi.backends["b"].bridge_salt == "@b"


@pytest.mark.parametrize(("hosts", "says"), [
    ([{"name": "a", "engine_url": "unix:///run/x.sock"}], "name of its own"),
    ([{"name": "B!", "engine_url": "unix:///run/x.sock"}], "a-z, 0-9"),
    ([{"name": "s", "engine_url": "ssh://root@198.51.100.2"}], "ssh -L"),
    ([{"name": "s", "engine_url": "unix:///run/x.sock", "labels": ["GPU"]}], "label"),
    ([{"name": "s", "engine_url": "unix:///run/x.sock", "memory_budget_mb": -1}], "no limit"),
    ([{"name": "s", "engine_url": "tcp://198.51.100.2:2375"}], "without authentication"),
    ([{"name": "s", "engine_url": "https://198.51.100.2:2376"}], "tls_cert_file and"),
    ([{"name": "s", "engine_url": "unix:///run/x.sock", "tls_ca_file": "/ca.pem"}],
     "only for an https"),
])
def test_a_bad_host_is_refused_naming_what_to_fix(hosts: list[dict[str, Any]],
                                                  says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_options(DockerOptions, {"engine_url": "unix:///run/a.sock", "host_name": "a",
                                      "hosts": hosts}, "[compute.docker]")


def test_the_host_with_most_room_is_chosen_and_labels_must_match(tmp_path: Path) -> None:
    multi = backend(tmp_path)
    assert multi.choose(256 * MIB, (), used={}) == "b"
    assert multi.choose(256 * MIB, (), used={"b": 1900 * MIB}) == "a"
    assert multi.choose(256 * MIB, ("gpu",), used={}) == "g"
    with pytest.raises(NoRoom, match="labels gpu"):
        multi.choose(600 * MIB, ("gpu",), used={})


def test_nothing_is_placed_on_a_host_that_is_down_or_draining(tmp_path: Path) -> None:
    multi = backend(tmp_path)
    multi.mark_down("b", "connection refused")
    assert multi.choose(600 * MIB, (), used={}) == "a"
    multi.draining.add("a")
    with pytest.raises(NoRoom, match=r"down: b"):
        multi.choose(600 * MIB, (), used={})
    multi.mark_up("b")
    assert multi.choose(600 * MIB, (), used={}) == "b"


@dataclass
class Service:
    """The two things the ledger uses of the compute service."""

    storage: SqliteStorage

    def now(self) -> float:
        return 1.0


async def test_concurrent_starts_never_overbook_a_host(tmp_path: Path) -> None:
    multi = backend(tmp_path)
    async with SqliteStorage(tmp_path / "markco.db") as storage:
        await storage.upgrade()
        svc: Any = Service(storage)
        placed: dict[str, str] = {}
        refused: list[str] = []

        async def start(user: str) -> None:
            try:
                placed[user] = await placement.reserve(svc, multi, user, 400 * MIB)
            except NoRoom:
                refused.append(user)

        async with trio.open_nursery() as nursery:
            for n in range(12):
                nursery.start_soon(start, f"u{n}")
        reserved = await placement.reservations(svc)
    # a: 1024 MiB → 2 of 400; b: 2048 → 5; g (gpu, 512) is a candidate too → 1.
    assert sorted(placed.values()).count("a") == 2
    assert sorted(placed.values()).count("b") == 5
    assert sorted(placed.values()).count("g") == 1
    assert len(refused) == 4
    for host, users in reserved.items():
        budget = multi.host_options[host].memory_budget_bytes
        assert budget is not None and sum(users.values()) <= budget


async def test_a_user_keeps_their_host_and_a_move_carries_the_reservation(
        tmp_path: Path) -> None:
    multi = backend(tmp_path)
    async with SqliteStorage(tmp_path / "markco.db") as storage:
        await storage.upgrade()
        svc: Any = Service(storage)
        first = await placement.reserve(svc, multi, "ada", 300 * MIB)
        assert await placement.reserve(svc, multi, "ada", 300 * MIB) == first
        await placement.move_reservation(svc, "ada", "a", 300 * MIB)
        assert await placement.reservations(svc) == {"a": {"ada": 300 * MIB}}
        await placement.release(svc, "ada")
        assert await placement.reservations(svc) == {}


def test_the_admin_page_offers_a_move_only_with_several_hosts() -> None:
    runtime = pages.AdminRuntime(user_id="u1", username="ada", state="running", host="a",
                                 backend="docker", memory_bytes=None, memory_limit=None,
                                 last_activity=None, roles="runtime")
    one = pages.admin_runtimes_section([runtime], form_token="t")
    assert "disabled" in one and "/move" not in one
    several = pages.admin_runtimes_section([runtime], form_token="t",
                                           move_hosts=["a", "b", "g"])
    assert 'action="/admin/runtimes/u1/move"' in several
    assert '<option value="b">' in several and '<option value="a">' not in several
    assert 'name="csrf" value="t"' in several


@dataclass
class Context:
    backend: MultiHostBackend


@dataclass
class ServiceWithHosts(Service):
    """The ledger's stand-in, with the backend (what `placement.hosts_of` reads) and the
    plans (their labels)."""

    ctx: Context | None = None
    options: WorkloadsOptions = field(default_factory=WorkloadsOptions)


async def test_a_gpu_hint_finds_a_gpu_host_with_room_unless_already_on_one(
        tmp_path: Path) -> None:
    multi = backend(tmp_path)
    async with SqliteStorage(tmp_path / "markco.db") as storage:
        await storage.upgrade()
        svc: Any = ServiceWithHosts(storage, Context(multi))
        ada = await storage.create_user(username="ada", email=None, name=None,
                                        avatar_url=None, now=1.0)
        record = await storage.create_runtime(
            user_id=ada.id, role=WorkloadRole.RUNTIME, backend="docker", host="a",
            state=RuntimeState.RUNNING, limits={"memory_bytes": 256 * MIB}, now=1.0)
        assert await moves.labelled_host(svc, ada.id, "gpu") == "g"
        assert await moves.labelled_host(svc, ada.id, "tpu") is None  # no such host
        await storage.update_runtime(record.id, now=2.0, host="g")
        assert await moves.labelled_host(svc, ada.id, "gpu") is None  # already there
        await storage.update_runtime(record.id, now=3.0, host="a",
                                     limits={"memory_bytes": 600 * MIB})
        assert await moves.labelled_host(svc, ada.id, "gpu") is None  # g has 512 MiB


async def test_a_host_that_does_not_answer_is_marked_down_and_its_workloads_unavailable(
        tmp_path: Path) -> None:
    dead = tmp_path / "nothing-listens.sock"
    multi = backend(tmp_path, hosts=[{"name": "b", "engine_url": f"unix://{dead}"}])
    found = await multi.check_hosts()
    assert found["b"] is not None and "b" in multi.down
    multi.remember("h-ada", "b")
    with pytest.raises(HostDown, match="unavailable") as raised:
        await multi.inspect("h-ada")
    assert raised.value.host_down  # compute shows the user unavailable, not failed
    assert "a" in multi.down  # its socket does not exist either
    with pytest.raises(NoRoom, match="down: a, b"):
        multi.choose(1, (), used={})


def test_the_admin_page_lists_moves_with_their_phases_escaped() -> None:
    from markco_trio.builtin.compute.hosts_api import moves_section

    assert "No runtime has moved" in moves_section([])
    html = moves_section([{"started_at": "2026-12-04T22:00:00Z", "user_id": "u1",
                           "from_host": "a", "to_host": "b", "status": "rolled_back",
                           "checkpoint_ms": 400, "transfer_ms": 90, "restore_ms": None,
                           "switch_ms": None, "bytes": 36 << 20,
                           "error": "<script>alert(1)</script>"}])
    assert "<td>a → b</td><td>rolled_back</td><td>400</td><td>90</td><td></td>" in html
    assert "<td>36.0</td>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
