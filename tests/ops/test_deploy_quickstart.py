"""The README's quick start, followed as written (minus the browser, which
tests/journey does): `markco run --config config/local.toml` — the file itself, only its port and
data directory changed so the test cannot collide with anything — prints a one-time login link;
following it lands on the dashboard; its "Open the editor" link leads, after the wait page, to
the editor; Ctrl-C (SIGINT) stops the daemon with exit status 0, the runtime put to sleep."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from dataplane.conftest import NAVIGATE
from dataplane.real_compute import kill_leftovers, remove_cgroups

from markco_trio.testing.network import free_port

pytestmark = [pytest.mark.system, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"^\s+(http://127\.0\.0\.1:\d+/auth/link/\S+)$", re.MULTILINE)


def wait_for(predicate: object, what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} within {within} s")


def test_the_quick_start_ends_in_the_editor() -> None:
    # Under /tmp, 0711: as root the workloads run as accounts of their own that must reach it.
    root = Path(tempfile.mkdtemp(prefix="mk-qs-", dir="/tmp"))
    os.chmod(root, 0o711)
    port = free_port()
    text = (ROOT / "config" / "local.toml").read_text()
    text, listens = re.subn(r'127\.0\.0\.1:3000', f"127.0.0.1:{port}", text)
    text, dirs = re.subn(r'^data_dir = "\.\./data".*$', f'data_dir = "{root / "data"}"', text,
                         flags=re.MULTILINE)
    assert listens == 2 and dirs == 1, "config/local.toml changed shape: update this test"
    # A deployment id of its own, so its cgroups can be removed afterwards.
    deployment = f"qs-{os.urandom(3).hex()}"
    text = text.replace("[server]\n", f'[server]\ndeployment_id = "{deployment}"\n', 1)
    config = root / "local.toml"
    config.write_text(text)
    log = root / "daemon.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen([str(Path(sys.executable).parent / "markco"), "run",
                                   "--config", str(config)], stdout=out,
                                  stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_for(lambda: LINK.search(log.read_text()), "the login link is printed", 60)
        match = LINK.search(log.read_text())
        assert match is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          trust_env=False) as browser:
            landed = browser.get(match.group(1), headers=NAVIGATE, follow_redirects=True)
            assert landed.status_code == 200 and str(landed.url).endswith("/dashboard")
            editor = re.search(r'<a class="button" href="(/u/[0-9a-f]+/)">Open the editor</a>',
                               landed.text)
            assert editor is not None, landed.text

            def editor_page() -> bool:
                page = browser.get(editor.group(1), headers=NAVIGATE)
                assert page.status_code in (200, 503), page.text
                return page.status_code == 200 and "<html" in page.text.lower()

            wait_for(editor_page, "the editor opens", 90)
        daemon.send_signal(signal.SIGINT)  # Ctrl-C
        assert daemon.wait(timeout=120) == 0, log.read_text()[-3000:]
        assert "asleep in" in log.read_text()  # on_shutdown = "sleep": nothing left running
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        kill_leftovers(root)
        remove_cgroups(deployment)
        subprocess.run(["rm", "-rf", str(root)], check=False)
