"""A real, throw-away PostgreSQL server for the storage / server / CLI tests.

Started once per test session (lazily, by the first test that needs it) in a
temporary data directory on a free loopback port; stopped at the end of the
session. Each test gets its own database. Tests skip with the reason when the
PostgreSQL binaries or psycopg are missing.

Import the fixtures into a test module: ``from storage_pg import db_url, pg  # noqa: F401``.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_counter = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """A PostgreSQL cluster in a temp dir; ``stop()`` / ``start()`` simulate an outage."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = found[-1] if found else shutil.which("initdb")
        if not initdb:
            raise RuntimeError("PostgreSQL binaries not found (apt-get install postgresql)")
        self.bindir = Path(initdb).parent
        self.root = Path(tempfile.mkdtemp(prefix="agentmeter-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        self.log = self.root / "server.log"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as `postgres`
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self.start()

    def _run(self, *cmd: str, timeout: float = 60) -> None:
        proc = subprocess.run(
            [*self.as_user, *cmd], capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")

    def start(self) -> None:
        opts = f"-k {self.sock} -p {self.port} -h 127.0.0.1 -F -c max_connections=200"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.log),
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(_counter)}"
        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1",
                    port=self.port,
                    user="postgres",
                    dbname="postgres",
                    autocommit=True,
                    connect_timeout=5,
                ) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                return self.url(name)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


_server: PgServer | None = None
_failure: str | None = None


def get_server(config: pytest.Config) -> PgServer:
    """The session's server (started on first use), or skip with the reason."""
    global _server, _failure
    if _server is not None:
        return _server
    if _failure is not None:
        pytest.skip(_failure)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _failure = "psycopg not installed: pip install 'agentmeter-core[postgres]'"
        pytest.skip(_failure)
    try:
        _server = PgServer()
    except Exception as exc:
        _failure = f"cannot start a PostgreSQL server: {exc}"
        pytest.skip(_failure)
    server = _server

    def _cleanup() -> None:
        global _server
        server.close()
        _server = None

    config.add_cleanup(_cleanup)
    return server


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> PgServer:
    """The running PostgreSQL server (session-wide; stopped at the end of the session)."""
    return get_server(request.config)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'usage.db'}"
    else:
        yield get_server(request.config).new_database()
