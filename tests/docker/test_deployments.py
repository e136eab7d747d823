"""Two daemons (deployments) sharing one engine never touch each other's containers or
networks — not even given the other's handle or name, and not for the same user id."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from markco_docker import DockerBackend
from markco_docker.naming import network_name

from markco_trio.errors import NotFound
from markco_trio.records import WorkloadRole
from markco_trio.roles import STATUS_RUNNING
from markco_trio.testing.backend_kit import SLEEP_FOREVER, Workloads, fresh_user

pytestmark = pytest.mark.system

SpecFactory = Any


async def network_exists(backend: DockerBackend, name: str) -> bool:
    response = await backend.engine.request("GET", f"/networks/{name}")
    return response.status_code == 200


@pytest.mark.parametrize("by", ["handle", "name"])
async def test_another_deployment_cannot_see_or_touch_a_workload(
        backend: DockerBackend, other_backend: DockerBackend, spec_factory: SpecFactory,
        workloads: Workloads, by: str) -> None:
    spec = spec_factory(fresh_user(), WorkloadRole.RUNTIME, script=SLEEP_FOREVER)
    info = await workloads.run(spec)
    target = info.handle if by == "handle" else info.name
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "inspect": lambda: other_backend.inspect(target),
        "start": lambda: other_backend.start(target),
        "stop": lambda: other_backend.stop(target, timeout=0),
        "remove": lambda: other_backend.remove(target),
        "stats": lambda: other_backend.stats(target),
        "logs": lambda: other_backend.logs(target),
        "update_limits": lambda: other_backend.update_limits(target, memory_bytes=1 << 30,
                                                             cpus=2.0),
    }
    for operation, call in calls.items():
        with pytest.raises(NotFound, match="no workload") as raised:
            await call()
        assert target in str(raised.value), operation
    assert (await backend.inspect(info.handle)).status == STATUS_RUNNING
    assert (await backend.stats(info.handle)).memory_limit == spec.memory_bytes


async def test_the_same_user_has_a_network_per_deployment(
        backend: DockerBackend, other_backend: DockerBackend, spec_factory: SpecFactory,
        other_spec_factory: SpecFactory, workloads: Workloads) -> None:
    user = fresh_user()
    ours = await workloads.run(spec_factory(user, WorkloadRole.RUNTIME, script=SLEEP_FOREVER))
    theirs = await workloads.create(
        other_spec_factory(user, WorkloadRole.RUNTIME, script=SLEEP_FOREVER),
        backend=other_backend)
    ours_net = network_name(backend.deployment_id, user)
    theirs_net = network_name(other_backend.deployment_id, user)
    assert ours_net != theirs_net
    assert await network_exists(backend, ours_net) and await network_exists(backend, theirs_net)
    # Their user's last container goes, and their network with it — ours stays, and runs.
    await other_backend.remove(theirs.handle)
    assert not await network_exists(backend, theirs_net)
    assert await network_exists(backend, ours_net)
    assert (await backend.inspect(ours.handle)).status == STATUS_RUNNING


async def test_a_users_network_goes_with_their_last_workload(
        backend: DockerBackend, spec_factory: SpecFactory, workloads: Workloads) -> None:
    user = fresh_user()
    runtime = await workloads.run(spec_factory(user, WorkloadRole.RUNTIME, script=SLEEP_FOREVER))
    editor = await workloads.create(spec_factory(user, WorkloadRole.EDITOR,
                                                 script=SLEEP_FOREVER))
    network = network_name(backend.deployment_id, user)
    await backend.remove(runtime.handle)
    assert await network_exists(backend, network)  # the editor still uses it
    await backend.remove(editor.handle)
    assert not await network_exists(backend, network)


async def test_unused_networks_left_by_a_crash_are_removed(
        backend: DockerBackend, other_backend: DockerBackend, spec_factory: SpecFactory,
        other_spec_factory: SpecFactory, workloads: Workloads) -> None:
    user = fresh_user()
    await workloads.create(other_spec_factory(user, WorkloadRole.RUNTIME, script=SLEEP_FOREVER),
                           backend=other_backend)
    info = await workloads.create(spec_factory(user, WorkloadRole.RUNTIME, script=SLEEP_FOREVER))
    # A daemon that died between removing the container and removing the network:
    await backend.engine.request("DELETE", f"/containers/{info.handle}",
                                 params={"force": "true"})
    assert await backend.remove_unused_networks() == [network_name(backend.deployment_id, user)]
    assert await network_exists(other_backend, network_name(other_backend.deployment_id, user))
