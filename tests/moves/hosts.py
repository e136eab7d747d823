"""Two container hosts on one machine, for the move tests: two rootful `podman system
service`s, each with its own storage root, run root, network configuration and socket — what
two machines' engines are to markco, minus the wire between them (the daemon streams the
archive from one engine's API into the other's exactly as it would across machines)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from markco_docker import localimage
from markco_docker.testing import INSTALL_HINT, START_TIMEOUT, PodmanUnavailable, _ping

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def second_podman_host() -> Iterator[str]:
    """A podman service with storage of its own (the local images copied in); its URL."""
    podman = shutil.which("podman")
    if podman is None or os.geteuid() != 0:
        raise PodmanUnavailable(f"two rootful podman services are needed: {INSTALL_HINT}")
    base = Path(tempfile.mkdtemp(prefix="markco-host-b-"))
    flags = [f"--root={base / 'root'}", f"--runroot={base / 'run'}",
             f"--network-config-dir={base / 'networks'}"]
    (base / "networks").mkdir()
    # Its networks from a pool of their own: two machines never share a bridge, two engines
    # on one machine must not pick the same subnet for networks not yet up.
    conf = base / "containers.conf"
    conf.write_text((ROOT / "config" / "containers.conf").read_text() + textwrap.dedent("""
        [network]
        default_subnet_pools = [{"base" = "10.211.0.0/16", "size" = 24}]
        """))
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    for tag in (localimage.RUNTIME_TAG, localimage.EDITOR_TAG):
        saved = subprocess.run([podman, "save", "--format", "docker-archive", tag],
                               capture_output=True, check=True).stdout
        subprocess.run([podman, *flags, "load"], input=saved, capture_output=True, check=True,
                       env=env)
    socket_path = base / "podman.sock"
    log = (base / "service.log").open("wb")
    process = subprocess.Popen([podman, *flags, "system", "service", "--time=0",
                                f"unix://{socket_path}"], stdin=subprocess.DEVNULL,
                               stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True, cwd=base)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (socket_path.exists() and _ping(socket_path)):
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise PodmanUnavailable("the second podman service did not answer: " +
                                        (base / "service.log").read_text(errors="replace"))
            time.sleep(0.05)
        yield f"unix://{socket_path}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        subprocess.run([podman, *flags, "rm", "--all", "--force"], capture_output=True)
        subprocess.run([podman, *flags, "network", "prune", "--force"], capture_output=True)
        subprocess.run(["umount", "-R", str(base / "root" / "overlay")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
