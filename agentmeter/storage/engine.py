"""Database URLs and engines: a path or a SQLAlchemy URL, SQLite tuned for a sink.

``resolve_url("usage.db")`` gives ``sqlite:////abs/usage.db``; any string with
``://`` is taken as a SQLAlchemy URL as is (``postgresql+psycopg://...``); no
argument means ``$AGENTMETER_DB`` or ``./agentmeter.db``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._deps import sqlalchemy as sa
from .migrations import check as check_schema
from .migrations import is_current, upgrade
from .schema import SCHEMA_VERSION, SchemaError

__all__ = [
    "DEFAULT_DB",
    "DatabaseError",
    "ensure_current",
    "make_engine",
    "open_existing",
    "redact",
    "resolve_url",
    "sqlite_path",
]

DEFAULT_DB = "agentmeter.db"


class DatabaseError(RuntimeError):
    """A database that cannot be read: missing, corrupt, or not agentmeter's."""


def resolve_url(target: str | os.PathLike[str] | None = None) -> str:
    """A SQLAlchemy URL from a path, a URL, or ``$AGENTMETER_DB`` / ``./agentmeter.db``."""
    if target is None:
        target = os.environ.get("AGENTMETER_DB") or DEFAULT_DB
    text = os.fspath(target)
    if not text:
        raise ValueError("empty database path")
    if "://" in text:
        return text
    return "sqlite:///" + str(Path(text).expanduser().resolve())


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (``None`` for other databases and in-memory SQLite)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def make_engine(url: str, *, sqlite_timeout: float = 1.0, wal: bool = False) -> sa.Engine:
    """An engine for ``url``.

    SQLite: a short busy timeout (the sink retries on its own, so a lock held by
    another process does not block the writer for long), WAL journal when ``wal``
    (readers never block the writer), ``synchronous=NORMAL`` (committed batches
    survive a process kill). Other databases: ``pool_pre_ping`` so that connections
    broken by a server restart are replaced.
    """
    parsed = sa.make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": sqlite_timeout, "check_same_thread": False}
        engine = sa.create_engine(url, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            try:
                if wal:
                    cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            finally:
                cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _detail(exc: sa.exc.DBAPIError) -> str:
    lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def ensure_current(engine: sa.Engine, where: str) -> None:
    """Upgrade an older agentmeter database to this schema (readers do it too: a
    report over an old database just works), or raise :class:`DatabaseError` saying
    why it cannot be upgraded (e.g. no write access)."""
    with engine.connect() as conn:
        version = check_schema(conn)
        if is_current(conn):
            return
    try:
        with engine.begin() as conn:
            upgrade(conn)
    except SchemaError as exc:
        raise DatabaseError(f"{where}: {exc}") from None
    except sa.exc.DBAPIError as exc:
        raise DatabaseError(
            f"{where} has agentmeter schema version {version} and must be upgraded to "
            f"version {SCHEMA_VERSION} before it can be read; the upgrade failed "
            f"({_detail(exc)}). Open it once with write access (any SQLSink or "
            "UsageStore on it does the upgrade)."
        ) from None


def open_existing(
    target: str | os.PathLike[str] | None, *, upgrade: bool = True
) -> tuple[str, sa.Engine]:
    """Open an existing agentmeter database for reading, or raise :class:`DatabaseError`.

    Never creates a database: a missing SQLite file is an error, not a new database.
    A database of an older agentmeter schema is upgraded (``upgrade=True``, see
    :mod:`agentmeter.storage.migrations`).
    """
    url = resolve_url(target)
    path = sqlite_path(url)
    if path is not None:
        if not path.exists():
            raise DatabaseError(f"database file not found: {path}")
        if path.is_dir():
            raise DatabaseError(f"{path} is a directory, not a database file")
    try:
        engine = make_engine(url)
    except Exception as exc:
        raise DatabaseError(f"cannot open {redact(url)}: {exc}") from None
    where = str(path) if path is not None else redact(url)
    try:
        with engine.connect() as conn:
            check_schema(conn)
        if upgrade:
            ensure_current(engine, where)
    except SchemaError as exc:
        engine.dispose()
        raise DatabaseError(f"{where}: {exc}") from None
    except DatabaseError:
        engine.dispose()
        raise
    except sa.exc.DBAPIError as exc:
        engine.dispose()
        detail = _detail(exc)
        if path is None:
            raise DatabaseError(f"cannot read {where}: {detail}") from None
        raise DatabaseError(f"{where} cannot be read as a database ({detail})") from None
    return url, engine


def check_writable(target: str | os.PathLike[str] | None) -> str:
    """Check up front that a sink could write ``target``; its URL, or :class:`DatabaseError`.

    An existing database must be agentmeter's and readable; a new SQLite file needs an
    existing, writable folder; another database must accept a connection.
    """
    url = resolve_url(target)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        folder = path.parent
        if not folder.is_dir():
            raise DatabaseError(f"folder not found for the database: {folder}")
        if not os.access(folder, os.W_OK):
            raise DatabaseError(f"cannot write a database in {folder}")
        return url
    try:
        _, engine = open_existing(url)
    except DatabaseError as exc:
        if "its tables are missing" not in str(exc):
            raise
        return url  # a readable database without our tables: the sink creates them
    engine.dispose()
    return url
