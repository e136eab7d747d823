"""The console login link: the embedded default's way in, the one token ever in a URL."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import trio

from markco_trio.builtin.auth.login_links import issue_login_link

from .conftest import ROOT, StartMarkco, free_port, markco_command, set_cookies, subprocess_env

LINK = re.compile(rb"(http://127\.0\.0\.1:\d+/auth/link/[A-Za-z0-9_-]{43})")


async def test_a_login_link_logs_in_once(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    user = await markco.user("admin", admin=True)
    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=10)
    browser = markco.client()
    first = await browser.get(link)
    assert first.status_code == 303
    assert first.headers["location"] == f"{markco.url}/dashboard"  # the token leaves the URL
    assert first.headers["referrer-policy"] == "no-referrer"
    assert first.headers["cache-control"] == "no-store"
    assert "markco_session" in set_cookies(first)
    assert "@admin" in (await browser.get("/dashboard")).text
    second = await markco.client().get(link)
    assert second.status_code == 410
    assert "used already" in second.text
    assert "markco_session" not in set_cookies(second)


async def test_an_expired_login_link_is_refused(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    user = await markco.user("admin", admin=True)
    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=10)
    markco.clock.advance(10 * 60 + 1)
    assert (await markco.client().get(link)).status_code == 410


async def test_two_concurrent_clicks_log_in_once(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    user = await markco.user("admin", admin=True)
    link = await issue_login_link(markco.storage, markco.clock, user, public_url=markco.url,
                                  minutes=10)
    statuses: list[int] = []

    async def click() -> None:
        statuses.append((await markco.client().get(link)).status_code)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(click)
    assert sorted(statuses) == [303, 410, 410, 410, 410]


async def test_markco_login_link_prints_a_link_for_a_user(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    await markco.user("alice")
    result = await trio.run_process(
        markco_command("login-link", "alice", "--config", str(markco.config_path)),
        env=subprocess_env(), capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    match = LINK.search(result.stdout)
    assert match is not None, result.stdout
    browser = markco.client()
    assert (await browser.get(match.group(1).decode())).status_code == 303
    assert (await browser.get("/api/v1/me")).json()["user"]["username"] == "alice"


async def test_markco_login_link_refuses_an_unknown_user(start_markco: StartMarkco) -> None:
    markco = await start_markco()
    result = await trio.run_process(
        markco_command("login-link", "nobody", "--config", str(markco.config_path)),
        env=subprocess_env(), capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 1
    assert b"no user named 'nobody'" in result.stderr


async def test_markco_run_with_local_toml_prints_a_link_that_logs_the_admin_in_once(
        tmp_path: Path) -> None:
    """`markco run --config config/local.toml` as a person runs it: a real process, a copy
    of the shipped config on a free port, the link read from its stdout."""
    port = free_port()
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    text = (ROOT / "config" / "local.toml").read_text()
    text = text.replace('"127.0.0.1:3000"', f'"127.0.0.1:{port}"')
    text = text.replace('"http://127.0.0.1:3000"', f'"http://127.0.0.1:{port}"')
    assert f":{port}" in text
    config = config_dir / "local.toml"
    config.write_text(text)
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
    log = (tmp_path / "stderr.log").open("wb")  # a file: a full pipe would block the daemon
    process = await trio.lowlevel.open_process(
        markco_command("run", "--config", str(config)), env=subprocess_env(),
        stdout=subprocess.PIPE, stderr=log)
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(30):
            while (match := LINK.search(output)) is None:
                chunk = await process.stdout.receive_some()
                assert chunk, (f"markco run exited before printing a link: {output!r}\n"
                               f"{(tmp_path / 'stderr.log').read_text()}")
                output += chunk
        link = match.group(1).decode()
        assert link.startswith(f"http://127.0.0.1:{port}/auth/link/")
        async with httpx.AsyncClient(timeout=10) as browser:
            first = await browser.get(link)
            assert first.status_code == 303
            dashboard = await browser.get(first.headers["location"])
            assert dashboard.status_code == 200 and "@admin" in dashboard.text
            assert "administrator" in dashboard.text
        async with httpx.AsyncClient(timeout=10) as other:
            assert (await other.get(link)).status_code == 410
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(15):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
    assert process.returncode == 0
