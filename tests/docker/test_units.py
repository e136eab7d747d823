"""The docker backend's pure parts, without an engine: options, names, the create request,
version negotiation, log frames, timestamps, cgroup files, kernel log records, the ledger, the
plugin's registration, and the error of an engine that does not answer."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Any

import pytest
from markco_docker import DockerBackend, DockerOptions
from markco_docker.cgroups import container_memory
from markco_docker.engine import describe_engine, negotiate
from markco_docker.ledger import Ledger, Remembered
from markco_docker.localimage import rootfs_tar
from markco_docker.multiplex import demultiplex
from markco_docker.naming import BRIDGE_PREFIX, bridge_name, network_name
from markco_docker.oom import oom_killed_in
from markco_docker.translation import container_address, create_body, parse_time

from markco_trio.config import load_config
from markco_trio.errors import BackendError, ConfigError
from markco_trio.records import WorkloadRole
from markco_trio.roles import LABEL_DEPLOYMENT, LABEL_ROLE, LABEL_USER, ContainerSpec

CID = "0123456789abcdef" * 4


def spec(role: WorkloadRole = WorkloadRole.RUNTIME, **changes: Any) -> ContainerSpec:
    base = ContainerSpec(
        name=f"markco-dep-alice-{role.value}", user_id="alice", role=role,
        command=("mrmd-python", "--host", "{host}", "--port", "{port}", "--cwd", "{user_dir}"),
        env={"MARKCO_USER_DIR": "{user_dir}"}, user_dir="/srv/markco/users/alice",
        memory_bytes=256 << 20, cpus=0.5, labels={LABEL_USER: "alice"})
    return dataclasses.replace(base, **changes)


def body(options: DockerOptions | None = None, **changes: Any) -> dict[str, Any]:
    return create_body(spec(**changes), options or DockerOptions(), deployment_id="dep",
                       network="markco-dep-alice", podman=True)


# ------------------------------------------------------------------------------ options


@pytest.mark.parametrize(("key", "value", "message"), [
    ("engine_url", "/run/podman/podman.sock", "expected unix://"),
    ("engine_url", "tcp://host", "expected tcp://HOST:PORT"),
    ("user", "0:0", "never run as root"),
    ("user", "markco", "numeric UID:GID"),
    ("cap_add", ["SYS_ADMIN"], "SYS_ADMIN never is"),
    ("mounts", ["relative:/x"], "absolute paths"),
    ("network", "host", None),
    ("api_version", "2", "1.N"),
    ("tls_ca_file", "/ca.pem", "https://"),
])
def test_bad_options_are_refused_naming_the_key(key: str, value: Any,
                                                message: str | None, tmp_path: Path) -> None:
    config = tmp_path / "markco.toml"
    rendered = f'"{value}"' if isinstance(value, str) else \
        "[" + ", ".join(f'"{v}"' for v in value) + "]"
    config.write_text(f'[compute]\nbackend = "docker"\n\n[compute.docker]\n{key} = {rendered}\n')
    with pytest.raises(ConfigError, match=key) as raised:
        load_config(config)
    if message is not None:
        assert message in str(raised.value)


def test_mounts_are_read_only_unless_they_say_rw() -> None:
    options = DockerOptions(mounts=["/usr", "/opt/venv:/venv", "/data:/data:rw"])
    assert options.host_mounts == [("/usr", "/usr", True), ("/opt/venv", "/venv", True),
                                   ("/data", "/data", False)]


def test_the_plugin_registers_the_docker_backend_through_its_entry_point(
        tmp_path: Path) -> None:
    config_path = tmp_path / "markco.toml"
    config_path.write_text('[server]\ndeployment_id = "blue"\n\n[compute]\nbackend = "docker"\n'
                           '\n[compute.docker]\nengine_url = "unix:///nowhere.sock"\n')
    config, plugins = load_config(config_path)
    choice = config.roles["compute"]
    assert choice.names == ("docker",)
    assert choice.options["docker"].engine_url == "unix:///nowhere.sock"
    from markco_trio.context import PluginContext
    made = choice.make("docker", PluginContext(config=config, plugins=plugins))
    assert isinstance(made, DockerBackend)  # built without touching the engine
    assert made.deployment_id == "blue"
    assert made.workload_owner("anyone") == (65532, 65532)


# ------------------------------------------------------------------------------- naming


def test_network_and_bridge_names_are_deterministic_and_fit_linux() -> None:
    name = network_name("dep", "alice")
    assert name == "markco-dep-alice"
    assert bridge_name(name) == bridge_name(name)
    assert bridge_name(name).startswith(BRIDGE_PREFIX) and len(bridge_name(name)) <= 15
    assert bridge_name(name) != bridge_name(network_name("other", "alice"))


# ------------------------------------------------------------------ the create request


def test_placeholders_become_the_containers_view() -> None:
    created = body()
    assert created["Cmd"] == ["mrmd-python", "--host", "0.0.0.0", "--port", "8888", "--cwd",
                              "/workspace"]
    assert "MARKCO_USER_DIR=/workspace" in created["Env"]
    assert "HOME=/tmp" in created["Env"]  # the only writable place but the workspace


def test_the_user_directory_is_mounted_read_write_at_the_workspace() -> None:
    mounts = body(DockerOptions(mounts=["/usr"]))["HostConfig"]["Mounts"]
    assert mounts[0] == {"Type": "bind", "Source": "/srv/markco/users/alice",
                         "Target": "/workspace", "ReadOnly": False}
    assert mounts[1] == {"Type": "bind", "Source": "/usr", "Target": "/usr", "ReadOnly": True}


def test_nothing_is_privileged() -> None:
    host = body()["HostConfig"]
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == []
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True
    assert host["PidsLimit"] == 512
    assert host["RestartPolicy"] == {"Name": "no"}
    assert body()["User"] == "65532:65532"  # not 1000, the first host account


def test_the_editor_has_an_init_and_the_checkpointed_runtime_none() -> None:
    # Podman's init is a bind-mounted host file CRIU 4.1 cannot restore.
    assert body(role=WorkloadRole.EDITOR)["HostConfig"]["Init"] is True
    assert body(role=WorkloadRole.RUNTIME)["HostConfig"]["Init"] is False


def test_limits_come_from_the_spec_without_swap() -> None:
    host = body(memory_bytes=512 << 20, cpus=1.5)["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 512 << 20
    assert host["NanoCpus"] == 1_500_000_000


def test_a_runtime_never_publishes_a_port() -> None:
    for network in ("internal", "egress"):
        created = body(DockerOptions(network=network))
        assert "PortBindings" not in created["HostConfig"]


def test_an_editor_publishes_on_loopback_only_in_egress_mode() -> None:
    egress = body(DockerOptions(network="egress"), role=WorkloadRole.EDITOR)
    assert egress["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    internal = body(role=WorkloadRole.EDITOR)
    assert "PortBindings" not in internal["HostConfig"]


def test_the_backend_stamps_deployment_user_and_role() -> None:
    labels = body(labels={LABEL_DEPLOYMENT: "someone-else", LABEL_USER: "mallory"})["Labels"]
    assert labels[LABEL_DEPLOYMENT] == "dep"
    assert labels[LABEL_USER] == "alice"
    assert labels[LABEL_ROLE] == "runtime"


def test_the_address_is_the_published_port_or_the_container_address() -> None:
    labels = {"markco.port": "8080", "markco.network": "net"}
    published = {"Config": {"Labels": labels}, "NetworkSettings": {
        "Ports": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "45001"}]},
        "Networks": {"net": {"IPAddress": "10.89.0.2"}}}}
    assert container_address(published, running=True) == "127.0.0.1:45001"
    internal = {"Config": {"Labels": labels},
                "NetworkSettings": {"Ports": {}, "Networks": {"net": {"IPAddress": "10.89.0.2"}}}}
    assert container_address(internal, running=True) == "10.89.0.2:8080"
    assert container_address(internal, running=False) is None


# ------------------------------------------------------------------- engine protocol


def test_the_version_is_negotiated_from_the_ping_headers() -> None:
    podman = negotiate(describe_engine({"api-version": "1.41", "libpod-api-version": "4.3.1",
                                        "server": "Libpod/4.3.1 (linux)"}), None, "unix:///s")
    assert (podman.product, podman.version, podman.api_version) == ("podman", "4.3.1", "1.41")
    docker = negotiate(describe_engine({"api-version": "1.47", "server": "Docker/27.3.1 (linux)"}),
                       None, "unix:///s")
    assert (docker.product, docker.version, docker.api_version) == ("docker", "27.3.1", "1.45")


def test_an_engine_older_than_docker_20_10_is_refused() -> None:
    with pytest.raises(BackendError, match="older than 1.41"):
        negotiate({"ApiVersion": "1.40"}, None, "tcp://old:2375")


def test_a_pinned_version_outside_the_engines_range_is_refused() -> None:
    with pytest.raises(BackendError, match="not the pinned 1.43"):
        negotiate({"ApiVersion": "1.41", "MinAPIVersion": "1.24"}, "1.43", "unix:///s")


def frame(stream: int, text: str) -> bytes:
    data = text.encode()
    return struct.pack(">BxxxL", stream, len(data)) + data


def test_log_frames_are_joined_in_order() -> None:
    stream = frame(1, "out 1\n") + frame(2, "err\n") + frame(1, "out 2\n")
    assert demultiplex(stream) == "out 1\nerr\nout 2\n"


def test_a_truncated_log_frame_keeps_what_arrived() -> None:
    assert demultiplex(frame(1, "whole\n") + frame(1, "cut off\n")[:-4]) == "whole\ncut "


def test_raw_tty_logs_pass_through() -> None:
    assert demultiplex(b"plain text\n") == "plain text\n"


def test_engine_times_are_read_with_nanoseconds_and_zero_means_never() -> None:
    assert parse_time("2026-11-27T22:05:49.043935499Z") == pytest.approx(1795817149.043935)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("") is None


async def test_an_engine_that_does_not_answer_is_named_with_what_to_do(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/nothing-here.sock"
    backend = DockerBackend(DockerOptions(engine_url=url), deployment_id="dep",
                            state_dir=tmp_path / "state")
    with pytest.raises(BackendError) as raised:
        async with backend:
            pass  # pragma: no cover
    message = str(raised.value)
    assert url in message and "does not answer" in message
    assert "podman system service" in message and "engine_url" in message


# ------------------------------------------------------------- what the host says


def test_working_set_comes_from_the_cgroup_named_for_the_container(tmp_path: Path) -> None:
    (tmp_path / "proc/42").mkdir(parents=True)
    (tmp_path / "proc/42/cgroup").write_text(
        f"12:pids:/libpod_parent/libpod-{CID}\n5:memory:/libpod_parent/libpod-{CID}\n0::/\n")
    memcg = tmp_path / f"sys/fs/cgroup/memory/libpod_parent/libpod-{CID}"
    memcg.mkdir(parents=True)
    (memcg / "memory.usage_in_bytes").write_text("90000000\n")
    (memcg / "memory.limit_in_bytes").write_text("268435456\n")
    (memcg / "memory.stat").write_text("cache 83906560\ntotal_inactive_file 82837504\n")
    measured = container_memory(42, CID, root=tmp_path)
    assert measured is not None
    assert measured.working_set == 90000000 - 82837504
    assert measured.limit == 268435456
    assert container_memory(42, "f" * 64, root=tmp_path) is None  # another container's pid


def test_an_oom_kill_is_found_in_kernel_log_records() -> None:
    records = [
        "6,1,1;some other line",
        f"4,2,2;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=libpod-{CID},"
        f"mems_allowed=0,oom_memcg=/libpod_parent/libpod-{CID},task_memcg=/libpod_parent/"
        f"libpod-{CID},task=python3,pid=16532,uid=1000",
    ]
    assert oom_killed_in(records, CID)
    assert not oom_killed_in(records, "f" * 64)


def test_the_ledger_remembers_stops_and_limits(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger")
    assert ledger.get(CID) == Remembered()
    ledger.put(CID, Remembered(stopped_run="2026-11-27T22:05:49Z", memory_bytes=1, cpus=0.5))
    assert Ledger(tmp_path / "ledger").get(CID).stopped_run == "2026-11-27T22:05:49Z"
    ledger.forget(CID)
    assert ledger.get(CID) == Remembered()
    with pytest.raises(ValueError):
        ledger.get("../../etc/passwd")


def test_the_local_rootfs_is_reproducible() -> None:
    assert rootfs_tar() == rootfs_tar()
    assert rootfs_tar(uid=1000) != rootfs_tar(uid=2000)
