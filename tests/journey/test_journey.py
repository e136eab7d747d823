"""The journey of issue 15 item 7, in a real browser, everything real:

Chromium (Debian's, driven by Playwright), through Caddy running the repository's Caddyfile
(TLS from its local CA), to `markco run` (the process backend, CRIU checkpoints, the editor
markco serves by default, `mrmd-python`), logging in through the fake GitHub:

log in → land on the dashboard → open the editor → open the welcome notebook → run its python
block and see its output → put the runtime to sleep from the dashboard → come back: the value
the block made is still there. Then, logged out, the editor's address leads through the login
(`/login?next=`) back to the editor.

The editor-specific steps are `editors.py`'s page objects. A screenshot of each step is kept
in `test-artifacts/journey/` (gitignored), with the daemon's and Caddy's logs and the page's
console.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from markco_trio.testing.chromium import CHROMIUM_FLAGS, chromium_binary
from markco_trio.testing.edge import Edge, running_edge
from markco_trio.testing.fake_github import FakeGitHub, running_fake_github
from markco_trio.testing.network import free_port
from markco_trio.testing.system import missing_system
from markco_trio.testing.workload_python import WorkloadPython
from tests.compute.harness import config_text, plugin_modules
from tests.compute.test_daemon_restart import DaemonProcess

from .editors import LOAD_MS, editor_on, goto

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.usefixtures("cleanup_workloads")]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "journey"
SECRET_ENV = "MARKCO_JOURNEY_GITHUB_SECRET"
WELCOME = "01-welcome.md"


def _system_or_skip() -> None:
    if os.geteuid() != 0:
        missing_system("root", "the process backend's CRIU checkpoints need root")
    if shutil.which("criu", path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin") is None:
        missing_system("criu", "run scripts/setup-criu")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing_system("playwright", "pip install -e '.[test]' (never `playwright install`)")


def _config(data_dir: Path, deployment: str, wpython: WorkloadPython, port: int, edge: Edge,
            fake: FakeGitHub) -> str:
    github = "\n".join(f'{k} = "{v}"' for k, v in fake.provider_options().items())
    text = config_text(
        data_dir, deployment, wpython, listen=f"127.0.0.1:{port}",
        modules=plugin_modules("markco_trio.builtin.auth"), start_on_login=False,
        ready_timeout=90.0, on_shutdown="stop",
        extra=('\n[auth]\nlogin_link = "never"\nadmins = ["github:octocat"]\n\n'
               '[checkpoint]\nprovider = "criu"\n\n'
               f'[oauth]\nproviders = ["github"]\n\n[oauth.github]\n{github}\n'
               f'client_secret_env = "{SECRET_ENV}"\ntimeout_seconds = 10\n'))
    return text.replace(f'public_url = "http://127.0.0.1:{port}"',
                        f'public_url = "{edge.url}"\ntrusted_proxies = ["127.0.0.1"]')


def runtime_processes(user_id: str) -> list[int]:
    """The user's mrmd-python processes still alive (by command line, as tests/lifecycle)."""
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        wrapper = argv.split(b"\0")[0].endswith((b"sh", b"unshare", b"setpriv", b"setsid"))
        if (b"mrmd-python" in argv and f"users/{user_id}".encode() in argv and not wrapper
                and state not in "ZX"):
            found.append(pid)
    return found


def log_in_with_github(page: Any, lands_on: str) -> None:
    """Click "Log in with GitHub" on the login page and land on `lands_on`. A callback that
    failed with a network change is reloaded by Chromium and then, rightly, refused (a
    login's state is single use: "Login not recognised"): the login is started again."""
    from playwright.sync_api import expect

    start = page.url
    for attempt in range(3):
        page.get_by_role("link", name="Log in with GitHub").click()
        try:
            expect(page).to_have_url(lands_on, timeout=30_000)
            return
        except AssertionError:
            if attempt == 2 or "Login not recognised" not in page.content():
                raise
            goto(page, start)


def browse(url: str, shots: Path) -> dict[str, str]:
    """The journey itself, in the browser (blocking: run in a worker thread). Returns what
    the blocks printed, for the test to check."""
    from playwright.sync_api import expect, sync_playwright

    seen: dict[str, str] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_binary(),
            args=list(CHROMIUM_FLAGS))  # the quiet flags (the network rule)
        context = browser.new_context(ignore_https_errors=True,  # Caddy's local CA
                                      viewport={"width": 1280, "height": 860})
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        step = iter(range(1, 100))

        def shot(name: str) -> None:
            page.screenshot(path=str(shots / f"{next(step):02d}-{name}.png"))

        try:
            # Log in through the fake GitHub and land on the dashboard.
            goto(page, url + "/")
            expect(page).to_have_url(re.compile(r"/login$"))
            shot("login")
            log_in_with_github(page, url + "/dashboard")
            expect(page.locator("h1")).to_have_text("Hello, The Octocat")
            shot("dashboard")

            # Open the editor (the wait page reloads itself until it answers), then the
            # welcome notebook; run its python block.
            open_editor = page.get_by_role("link", name="Open the editor")
            user_id = (open_editor.get_attribute("href") or "").strip("/").split("/")[-1]
            assert runtime_processes(user_id) == []
            open_editor.click()
            editor = editor_on(page)
            seen["editor"] = editor.name
            shot("editor")
            editor.open_notebook(WELCOME)
            shot("welcome")
            seen["first"] = editor.run_block(1)
            shot("ran")

            # The admin page sees the running runtime, its host and its memory.
            goto(page, url + "/admin")
            row = page.locator(f'tr[data-user="{user_id}"]')
            expect(row).to_contain_text("running")
            seen["admin_row"] = row.inner_text()
            shot("admin")

            # Put the runtime to sleep from the dashboard.
            goto(page, url + "/dashboard")
            page.get_by_role("button", name="Sleep").click()
            status = page.locator("text=Editor and Python runtime:")
            for _ in range(120):
                if "sleeping" in status.inner_text():
                    break
                page.wait_for_timeout(500)
                goto(page)
            expect(status).to_contain_text("sleeping")
            shot("asleep")
            seen["asleep_processes"] = str(runtime_processes(user_id))  # the archive is all

            # Come back: the editor wakes, and the value is still there.
            page.get_by_role("link", name="Open the editor").click()
            editor = editor_on(page)
            editor.open_notebook(WELCOME)
            shot("back")
            seen["after"] = editor.run_block(editor.add_block("print('after waking:', greeting)"))
            shot("value-still-there")
            goto(page, url + "/dashboard")
            expect(page.locator("text=Editor and Python runtime:")).to_contain_text(
                "running", timeout=LOAD_MS)

            # Logged out, the editor's address leads to the login and, once logged in, back.
            page.get_by_role("button", name="Log out", exact=True).click()
            expect(page).to_have_url(url + "/login")
            goto(page, f"{url}/u/{user_id}/")
            expect(page).to_have_url(re.compile(r"/login\?next=%2Fu%2F"))
            log_in_with_github(page, f"{url}/u/{user_id}/")
            editor_on(page)
            shot("back-after-login")
        except Exception:
            try:  # best effort: never hide the failure behind a page that will not draw
                page.screenshot(path=str(shots / "failed.png"), timeout=5_000)
            except Exception as exc:
                console.append(f"journey: no screenshot of the failure: {exc}")
            raise
        finally:
            (shots / "console.log").write_text("\n".join(console) + "\n")
            context.close()
            browser.close()
    return seen


async def test_the_journey_in_a_real_browser_through_caddy(
        data_dir: Path, wpython: WorkloadPython, deployment_ids: Callable[[str], str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _system_or_skip()
    chromium_binary()
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    port = free_port()
    async with running_fake_github() as fake:
        fake.add_user("octocat", email="octocat@example.com", name="The Octocat", id=583231)
        fake.consent_as("octocat")
        monkeypatch.setenv(SECRET_ENV, fake.client_secret)
        with running_edge(f"127.0.0.1:{port}", data_dir.parent / f"{data_dir.name}-caddy"
                          ) as edge:
            config = data_dir.parent / f"{data_dir.name}-journey.toml"
            deployment = deployment_ids("journey")
            config.write_text(_config(data_dir, deployment, wpython, port, edge, fake))
            daemon = DaemonProcess(config, port, ARTIFACTS / "markco.log", deployment)
            try:
                await daemon.start()
                seen = await trio.to_thread.run_sync(partial(browse, edge.url, ARTIFACTS))
            finally:
                (ARTIFACTS / "caddy.log").write_text(edge.log_text())
                if daemon.process is not None and daemon.process.returncode is None:
                    with trio.CancelScope(shield=True):
                        await daemon.kill9()
    first = re.fullmatch(r"hello from Python \d+\.\d+\.\d+", seen["first"])
    assert first, seen
    admin_row = r"running\s+local\s+\(process\)\s+\d+ MiB of \d+ MiB"
    assert re.search(admin_row, seen["admin_row"]), seen
    assert seen["asleep_processes"] == "[]", seen
    assert seen["after"] == f"after waking: {seen['first']}", seen
    assert sorted(p.name for p in ARTIFACTS.glob("*.png"))[-1].endswith("back-after-login.png")
