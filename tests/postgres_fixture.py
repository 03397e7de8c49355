"""A real PostgreSQL for the tests, in this order:

1. ``POSTGRES_DSN`` from the environment (an existing server; tests create their own databases);
2. the machine's PostgreSQL binaries (``initdb``/``postgres`` on PATH, in /usr/local/bin or
   /usr/lib/postgresql/<version>/bin, as Debian's ``postgresql`` package installs them): a
   throw-away cluster in a temporary folder, on a free loopback port, with its unix socket in that
   folder, stopped (and the folder removed) at the end of the session. PostgreSQL refuses to run
   as root, so as root the cluster belongs to an unprivileged user (``postgres`` if it exists,
   else ``nobody``) and the server runs under it via ``setpriv``;
3. testcontainers (``postgres:16-alpine``) when a Docker engine answers.

One server per test session, shared by every conftest that imports :func:`postgres_server`;
each test gets a fresh database from :func:`fresh_database`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg

from broker.devtools.devkafka import free_port
from tests.kafka_fixture import docker_engine_answers

_SUPERUSER = "postgres"


class PostgresUnavailableError(RuntimeError):
    """No way to get a PostgreSQL server; the message says what to install."""


def find_pg_bin(name: str) -> str | None:
    """Path of a PostgreSQL server binary (newest version first), or None."""
    found = shutil.which(name)
    if found:
        return found
    versioned = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
        reverse=True,
    )
    candidates = [f"/usr/local/bin/{name}", *versioned]
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return None


def _run_as() -> tuple[list[str], int | None, int | None]:
    """argv prefix to drop root privileges, and the uid/gid that must own the cluster folder."""
    if os.geteuid() != 0:
        return [], None, None
    for user in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(user)
            prefix = [
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--clear-groups",
                "--",
            ]
            return prefix, entry.pw_uid, entry.pw_gid
    raise PostgresUnavailableError("running as root and no 'postgres' or 'nobody' user exists")


async def _ready(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return False
    await conn.close()
    return True


def _ready_sync(dsn: str) -> bool:
    """Connect test in a thread of its own (the caller may be inside a running event loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _ready(dsn)).result()


@contextlib.contextmanager
def _local_cluster(initdb: str, postgres: str) -> Iterator[str]:
    prefix, uid, gid = _run_as()
    root = Path(tempfile.mkdtemp(prefix="mdm-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if uid is not None and gid is not None:
        for path in (root, sockets):
            os.chown(path, uid, gid)
    proc: subprocess.Popen[bytes] | None = None
    log_file = root / "postgres.log"
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(data), "-U", _SUPERUSER, "--auth=trust", "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            cwd=root, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        port = free_port()
        with open(log_file, "wb") as log:
            proc = subprocess.Popen(
                [*prefix, postgres, "-D", str(data), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}",
                 "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200",
                 "-c", "shared_buffers=64MB"],
                cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        dsn = f"postgresql://{_SUPERUSER}@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 60
        while not _ready_sync(dsn):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise PostgresUnavailableError(
                    f"postgres did not start: {log_file.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.2)
        yield dsn
    except subprocess.CalledProcessError as exc:
        raise PostgresUnavailableError(
            f"initdb failed: {exc.stderr.decode(errors='replace')[-2000:]}"
        ) from exc
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _testcontainers_postgres() -> Iterator[str]:
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as container:
        yield str(container.get_connection_url())


@contextlib.contextmanager
def _start_server() -> Iterator[str]:
    external = os.environ.get("POSTGRES_DSN")
    if external:
        yield external
        return
    initdb, postgres = find_pg_bin("initdb"), find_pg_bin("postgres")
    if initdb and postgres:
        with _local_cluster(initdb, postgres) as dsn:
            yield dsn
    elif docker_engine_answers():
        with _testcontainers_postgres() as dsn:
            yield dsn
    else:
        raise PostgresUnavailableError(
            "no PostgreSQL: set POSTGRES_DSN, install Debian's postgresql package "
            "(initdb/postgres), or run a Docker engine"
        )


class _Shared:
    """Reference-counted session server, so several conftests share one process."""

    lock = threading.Lock()
    users = 0
    stack: contextlib.ExitStack | None = None
    dsn = ""


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Admin DSN of the session's PostgreSQL server (started on first use, stopped on last)."""
    with _Shared.lock:
        if _Shared.users == 0:
            stack = contextlib.ExitStack()
            _Shared.dsn = stack.enter_context(_start_server())
            _Shared.stack = stack
        _Shared.users += 1
    try:
        yield _Shared.dsn
    finally:
        with _Shared.lock:
            _Shared.users -= 1
            if _Shared.users == 0 and _Shared.stack is not None:
                stack, _Shared.stack = _Shared.stack, None
                stack.close()


def with_database(admin_dsn: str, database: str) -> str:
    """``admin_dsn`` pointing at ``database`` instead."""
    head, sep, query = admin_dsn.partition("?")
    base = head.rpartition("/")[0]
    return f"{base}/{database}{sep}{query}"


@contextlib.asynccontextmanager
async def fresh_database(admin_dsn: str) -> AsyncIterator[str]:
    """A new empty database on the server (dropped afterwards, even if still in use)."""
    name = f"t{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield with_database(admin_dsn, name)
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
