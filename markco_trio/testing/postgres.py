"""Throw-away PostgreSQL clusters for tests: no server to install, configure or clean up.

`running_postgres()` runs `initdb` into a temporary directory, starts the cluster on a free
port of 127.0.0.1 (its unix socket also in that directory), yields a DSN and removes it all at
the end. `fresh_database(dsn)` makes a database per test (CREATE DATABASE takes milliseconds),
so tests never see each other's rows. For pytest, in a conftest.py:

    from markco_trio.testing.postgres import postgres_database_fixture, postgres_server_fixture

    postgres_server = postgres_server_fixture()      # one cluster per test session
    postgres_dsn = postgres_database_fixture()       # one fresh database per test

Without PostgreSQL binaries the tests that use them are skipped, saying how to install them —
or fail, when the environment sets MARKCO_REQUIRE_SYSTEM=1 (CI, see `testing.system`).
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .system import missing_system

SERVER_USER = "postgres"  # the OS user that runs the cluster when the tests run as root
INSTALL_HINT = ("install the PostgreSQL server (Debian/Ubuntu: `apt-get install postgresql`, "
                "whose binaries land in /usr/lib/postgresql/<version>/bin) or put `initdb` and "
                "`pg_ctl` on PATH")

# Durability is pointless for a cluster that is deleted after the tests: trade it for speed.
_SERVER_SETTINGS = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                    "-c max_connections=200")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be run here: the message says what is missing and how to fix it."""


def find_postgres_bindir() -> Path:
    """The directory holding `initdb`, `pg_ctl` and `postgres`: from PATH, else the newest
    /usr/lib/postgresql/*/bin. Raises `PostgresUnavailable` when there is none."""
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb:
        # Resolved: PATH often holds symlinks, and pg_ctl looks for `postgres` next to itself.
        candidates.append(Path(initdb).resolve().parent)

    def version(bindir: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailable(f"PostgreSQL's initdb was not found on PATH or in "
                              f"/usr/lib/postgresql/*/bin: {INSTALL_HINT}")


def _server_account() -> pwd.struct_passwd | None:
    """Who runs the cluster: None for the current user; the `postgres` user when we are root
    (the server refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"the tests run as root, and PostgreSQL must run as another user, but there is no "
            f"`{SERVER_USER}` user: {INSTALL_HINT} (it creates the user), or "
            f"`adduser --system --group {SERVER_USER}`") from None


def _check_reachable(path: Path, account: pwd.struct_passwd) -> None:
    # The server opens its data dir by absolute path: every parent must let it through.
    for directory in [path, *path.parents]:
        info = directory.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == account.pw_gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise ValueError(
                f"the `{account.pw_name}` user cannot enter {directory}, so a cluster cannot "
                f"live under it: pass another tmp_dir (pytest's tmp_path is private to root)")


def _run(command: list[str], account: pwd.struct_passwd | None, cwd: Path) -> None:
    if account is not None:
        if shutil.which("runuser"):
            command = ["runuser", "-u", account.pw_name, "--", *command]
        else:
            command = ["su", account.pw_name, "-s", "/bin/sh", "-c", shlex.join(command)]
    # cwd: the server user may not be allowed into ours, and initdb/pg_ctl complain about it.
    result = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed ({result.returncode}):\n"
                           f"{result.stdout}{result.stderr}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_postgres(tmp_dir: Path | None = None) -> Iterator[str]:
    """Run a throw-away PostgreSQL cluster; yield the DSN of its `postgres` database (trust
    authentication, superuser `postgres`, 127.0.0.1 only). The cluster lives in a new
    directory under `tmp_dir` (default: the system temp dir), removed at the end.

    Raises `PostgresUnavailable` when PostgreSQL cannot run here, and ValueError when the
    server's OS user (`postgres`, when we are root) cannot enter `tmp_dir`.
    """
    bindir = find_postgres_bindir()
    account = _server_account()
    base = Path(tempfile.mkdtemp(prefix="markco-pg-", dir=tmp_dir))
    data = base / "data"
    try:
        if account is not None:
            os.chown(base, account.pw_uid, account.pw_gid)
            _check_reachable(base, account)
        _run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
              "-E", "UTF8", "--locale=C", "--no-sync"], account, cwd=base)
        dsn = _start(bindir, data, base, account)
        try:
            yield dsn
        finally:
            _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                 account, cwd=base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _start(bindir: Path, data: Path, base: Path, account: pwd.struct_passwd | None) -> str:
    last_error: Exception | None = None
    for _ in range(3):  # a free port can be taken by someone else before the server binds it
        port = _free_port()
        socket_dir = shlex.quote(str(base))  # pg_ctl hands the options to a shell
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {socket_dir} {_SERVER_SETTINGS}"
        try:
            # -w: return once the server accepts connections.
            _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"),
                  "-o", options, "-w", "-t", "60", "start"], account, cwd=base)
        except RuntimeError as exc:
            log = base / "server.log"
            last_error = RuntimeError(f"{exc}\n{log.read_text() if log.exists() else ''}")
            continue
        return f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    assert last_error is not None
    raise last_error


@contextmanager
def fresh_database(server_dsn: str) -> Iterator[str]:
    """Create an empty database on the cluster of `server_dsn`, yield its DSN, drop it."""
    import psycopg  # here, not at the top: markco itself does not depend on psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    name = f"markco_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_dsn, dbname=name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            # FORCE: a test that failed may have left connections behind.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))


def postgres_server_fixture(name: str = "postgres_server") -> Callable[..., Any]:
    """A session-scoped pytest fixture called `name`: the DSN of a throw-away cluster.

    Skips the tests that use it when PostgreSQL cannot run here (fails instead when
    MARKCO_REQUIRE_SYSTEM is set: see `markco_trio.testing.system`).
    """

    @pytest.fixture(scope="session", name=name)
    def postgres_server() -> Iterator[str]:
        try:
            find_postgres_bindir()
            _server_account()
        except PostgresUnavailable as exc:
            missing_system("PostgreSQL", str(exc))
        with running_postgres() as dsn:
            yield dsn

    return postgres_server


def postgres_database_fixture(name: str = "postgres_dsn",
                              server: str = "postgres_server") -> Callable[..., Any]:
    """A pytest fixture called `name`: the DSN of a fresh, empty database for one test, on
    the cluster of the fixture called `server`."""

    @pytest.fixture(name=name)
    def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
        with fresh_database(request.getfixturevalue(server)) as dsn:
            yield dsn

    return postgres_database
