"""From user A's runtime on the process backend, nothing of user B's can be reached: not B's
files, not B's editor, runtime or runtime front (by any address), not B's processes, and not
B's editor with a forged identity. Each attack runs as code in A's runtime, sent through A's own
runtime front — exactly what A can do from a notebook — and reports what happened."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import trio

from markco_trio.dial import parse
from markco_trio.records import User, WorkloadRole
from markco_trio.roles import workload_name

from .conftest import Tenants


async def attack(tenants: Tenants, code: str, **values: Any) -> Any:
    """Run `code` in A's runtime with `values` bound as globals; it sets `result`, which
    comes back (JSON)."""
    prelude = "".join(f"{name} = {json.dumps(value)}\n" for name, value in values.items())
    stdout = await tenants.run_as(
        tenants.a, prelude + code + "\nimport json as _j\nprint('RESULT', _j.dumps(result))\n")
    line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def ports_of(tenants: Tenants, user: User) -> list[int]:
    """The ports B's editor and runtime listen on (inside their own namespaces)."""
    ports = []
    for role in (WorkloadRole.EDITOR, WorkloadRole.RUNTIME):
        address = tenants.harness.service.state_nowait(user.id).__getattribute__(
            role.value).address
        assert address is not None and address.startswith("netns:"), address
        ports.append(parse(address).port)
    return ports


def host_addresses() -> list[str]:
    """Every IPv4 address of the host's own interfaces (loopback included)."""
    out = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True,
                         check=True).stdout
    return sorted({a["local"] for link in json.loads(out) for a in link.get("addr_info", [])})


CONNECT = """
import socket
result = {}
for host in hosts:
    for port in ports:
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((host, port))
            result[f"{host}:{port}"] = "CONNECTED"
        except OSError as exc:
            result[f"{host}:{port}"] = type(exc).__name__
        finally:
            s.close()
"""


async def test_a_cannot_read_bs_files(tenants: Tenants) -> None:
    b_dir = str(tenants.harness.service.user_dir(tenants.b.id))
    result = await attack(tenants, """
import os
result = {}
for what, fn in [("list users/", lambda: os.listdir(os.path.dirname(b_dir))),
                 ("list B's dir", lambda: os.listdir(b_dir)),
                 ("read B's notebook", lambda: open(b_dir + "/Projects/Scratch/mrmd.md").read()),
                 ("stat B's project", lambda: os.stat(b_dir + "/Projects"))]:
    try:
        fn()
        result[what] = "ALLOWED"
    except OSError as exc:
        result[what] = type(exc).__name__
""", b_dir=b_dir)
    assert result == {what: "PermissionError" for what in result}, result


async def test_a_cannot_write_bs_files(tenants: Tenants) -> None:
    b_dir = tenants.harness.service.user_dir(tenants.b.id)
    result = await attack(tenants, """
import os
result = {}
for what, path in [("create in B's dir", b_dir + "/planted"),
                   ("create in B's project", b_dir + "/Projects/Scratch/planted.md"),
                   ("overwrite B's notebook", b_dir + "/Projects/Scratch/01-welcome.md")]:
    try:
        with open(path, "a") as f:
            f.write("pwned")
        result[what] = "ALLOWED"
    except OSError as exc:
        result[what] = type(exc).__name__
""", b_dir=str(b_dir))
    assert set(result.values()) == {"PermissionError"}, result
    assert not (b_dir / "planted").exists()
    assert "pwned" not in (b_dir / "Projects" / "Scratch" / "01-welcome.md").read_text()


async def test_a_cannot_read_the_daemons_database_or_state(tenants: Tenants) -> None:
    data_dir = tenants.harness.ctx.data_dir
    result = await attack(tenants, """
import os
result = {}
for path in paths:
    try:
        open(path, "rb").read(16) if os.path.isfile(path) else os.listdir(path)
        result[path] = "ALLOWED"
    except OSError as exc:
        result[path] = type(exc).__name__
""", paths=[str(data_dir / "markco.db"), str(data_dir / "workloads"), str(data_dir)])
    assert set(result.values()) == {"PermissionError"}, result


async def test_a_cannot_connect_to_bs_front_socket(tenants: Tenants) -> None:
    result = await attack(tenants, """
import os, socket
result = {}
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(front)
    result["connect"] = "CONNECTED"
except OSError as exc:
    result["connect"] = type(exc).__name__
try:
    os.listdir(os.path.dirname(os.path.dirname(front)))
    result["list fronts/"] = "ALLOWED"
except OSError as exc:
    result["list fronts/"] = type(exc).__name__
""", front=str(tenants.harness.service.front_path(tenants.b.id)))
    assert result == {"connect": "PermissionError", "list fronts/": "PermissionError"}


async def test_a_cannot_connect_to_bs_ports_on_loopback(tenants: Tenants) -> None:
    result = await attack(tenants, CONNECT, hosts=["127.0.0.1", "127.0.0.2", "localhost"],
                          ports=ports_of(tenants, tenants.b))
    assert "CONNECTED" not in result.values(), result


async def test_a_cannot_reach_the_hosts_addresses(tenants: Tenants) -> None:
    # The daemon's own ports and B's ports, at every address the host has.
    ports = [*ports_of(tenants, tenants.b), *ports_of(tenants, tenants.a)]
    hosts = [h for h in host_addresses() if not h.startswith("127.")]
    result = await attack(tenants, CONNECT, hosts=hosts, ports=ports)
    assert "CONNECTED" not in result.values(), result
    interfaces = await attack(tenants, "import socket\nresult = [n for _, n in "
                                       "socket.if_nameindex()]")
    assert interfaces == ["lo"]


async def test_a_cannot_even_reach_its_own_editor(tenants: Tenants) -> None:
    # The runtime and the editor of one user are in two namespaces: a notebook cannot drive
    # its editor's API (or forge identity headers to it) either.
    editor_port = ports_of(tenants, tenants.a)[0]
    result = await attack(tenants, CONNECT, hosts=["127.0.0.1"], ports=[editor_port])
    assert result == {f"127.0.0.1:{editor_port}": "ConnectionRefusedError"}


async def test_a_cannot_forge_its_way_into_bs_editor(tenants: Tenants) -> None:
    # The request the identity headers would ride on never finds B's editor.
    port = ports_of(tenants, tenants.b)[0]
    result = await attack(tenants, """
import http.client
result = {}
for host in hosts:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("POST", "/api/files", body='{"path": "forged.md"}',
                     headers={"X-Markco-User": b_id, "X-Markco-Role": "owner",
                              "Content-Type": "application/json"})
        result[host] = conn.getresponse().status
    except OSError as exc:
        result[host] = type(exc).__name__
""", hosts=["127.0.0.1", *host_addresses()], port=port, b_id=tenants.b.id)
    assert all(isinstance(v, str) for v in result.values()), result
    b_dir = tenants.harness.service.user_dir(tenants.b.id)
    assert not (b_dir / "forged.md").exists()


def b_pids(tenants: Tenants) -> list[int]:
    backend = tenants.harness.backend
    pids: list[int] = []
    for role in (WorkloadRole.EDITOR, WorkloadRole.RUNTIME):
        state = backend._load(workload_name(tenants.harness.service.deployment_id,
                                            tenants.b.id, role))
        pids.extend(backend._members(state))
    return pids


async def test_a_cannot_see_bs_processes(tenants: Tenants) -> None:
    result = await attack(tenants, """
import os
result = []
for pid in (p for p in os.listdir("/proc") if p.isdigit()):
    try:
        result.append(open(f"/proc/{pid}/cmdline", "rb").read().decode("utf-8", "replace"))
    except OSError:
        pass
""")
    assert result and not any(tenants.b.id in cmdline for cmdline in result), result


async def test_a_cannot_signal_bs_processes(tenants: Tenants) -> None:
    victims = b_pids(tenants)
    assert victims
    result = await attack(tenants, """
import os, signal
result = {}
for pid in pids:
    try:
        os.kill(pid, signal.SIGKILL)
        result[str(pid)] = "KILLED"
    except OSError as exc:
        result[str(pid)] = type(exc).__name__
""", pids=victims)
    assert set(result.values()) <= {"ProcessLookupError", "PermissionError"}, result
    state = tenants.harness.service.state_nowait(tenants.b.id)
    assert state.runtime.ready and state.editor.ready
    assert await tenants.run_as(tenants.b, "print('still here')") == "still here\n"


async def test_a_and_b_run_as_different_accounts(tenants: Tenants) -> None:
    a = await attack(tenants, "import os\nresult = [os.getuid(), os.getgid(), os.getgroups()]")
    b_out = await tenants.run_as(tenants.b, "import os\nprint(os.getuid())")
    assert a[0] != int(b_out) and a[0] >= 200000 and a[1] == a[0] and a[2] == []


async def test_a_and_b_do_not_share_temporary_directories(tenants: Tenants) -> None:
    # /var/tmp and /dev/shm are private to each workload (so is /tmp where the data
    # directory is not under it; here it is, so /tmp stays shared).
    await tenants.run_as(tenants.b, "for d in ('/var/tmp', '/dev/shm'):\n"
                                    "    open(d + '/b-was-here', 'w').write('secret')")
    result = await attack(tenants, """
import os
result = {d: sorted(os.listdir(d)) for d in ("/var/tmp", "/dev/shm")}
""")
    assert result == {"/var/tmp": [], "/dev/shm": []}, result
    assert not await trio.Path("/var/tmp/b-was-here").exists()
    assert not await trio.Path("/dev/shm/b-was-here").exists()


SHM = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmget.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
"""


async def test_a_cannot_see_bs_system_v_shared_memory(tenants: Tenants) -> None:
    made = await tenants.run_as(tenants.b, SHM + "print(libc.shmget(0x4d4b, 4096, 0o1666))")
    assert int(made) >= 0  # IPC_CREAT | 0666: anyone on a shared IPC namespace could attach
    result = await attack(tenants, SHM + """
shmid = libc.shmget(0x4d4b, 0, 0)
result = [shmid, os.strerror(ctypes.get_errno()) if shmid < 0 else ""]
""")
    assert result == [-1, "No such file or directory"], result


async def test_a_runs_with_no_capabilities_and_cannot_gain_any(tenants: Tenants) -> None:
    result = await attack(tenants, """
result = {}
for line in open("/proc/self/status"):
    name, _, value = line.partition(":")
    if name.startswith("Cap") or name == "NoNewPrivs":
        result[name] = value.strip()
""")
    assert result == {"CapInh": "0000000000000000", "CapPrm": "0000000000000000",
                      "CapEff": "0000000000000000", "CapBnd": "0000000000000000",
                      "CapAmb": "0000000000000000", "NoNewPrivs": "1"}
