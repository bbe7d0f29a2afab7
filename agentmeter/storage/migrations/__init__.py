"""Schema creation and upgrades, with Alembic, run programmatically on open.

Every :class:`~agentmeter.storage.SQLSink` and :class:`~agentmeter.storage.UsageStore`
brings the database to the current schema (:data:`~agentmeter.storage.SCHEMA_VERSION`)
when it opens it -- no ``alembic.ini``, no command to run:

- a new database gets every revision (``versions/``) in order;
- a version-1 database written by agentmeter 0.1 (no Alembic version table) is
  stamped at revision ``0001`` and upgraded: the new columns and indexes are
  added and the rollup tables are filled from the existing events, in one
  transaction -- every stored event counted once, nothing lost. On a large
  database this takes a while (a few ``GROUP BY`` over the events table), once;
- a database of a newer agentmeter is refused with
  :class:`~agentmeter.storage.SchemaError` ("upgrade agentmeter-core").

Many processes opening the same database at once is safe: the upgrade runs under
a lock -- ``BEGIN IMMEDIATE`` on SQLite (others wait, up to 10 minutes), a
transaction-scoped advisory lock on PostgreSQL -- and whoever comes second finds
the work done. An already current database is recognised without taking any lock
(two small reads). Alembic's revision is kept in ``agentmeter_alembic_version``,
not ``alembic_version``, so an application's own Alembic history in the same
database is left alone.

Writers of an older agentmeter still running against a database upgraded under
them would add events without rollups: stop them before upgrading (they refuse
to start on a version-2 database).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .._deps import sqlalchemy as sa
from ..schema import EVENTS, ROLLUP_TABLES, SCHEMA, SCHEMA_VERSION, SchemaError, check_version

__all__ = ["HEAD", "VERSION_TABLE", "check", "is_current", "upgrade"]

logger = logging.getLogger("agentmeter.storage")

VERSION_TABLE = "agentmeter_alembic_version"
HEAD = "0004"  # the latest revision (of SCHEMA_VERSION)
V1_REVISION = "0001"
_HERE = Path(__file__).resolve().parent
_PG_LOCK = 0x61676D74_73636D61  # "agmtscma": the advisory lock of schema upgrades
_SQLITE_WAIT_MS = 600_000


def _revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar()


def is_current(conn: sa.Connection) -> bool:
    """True when the database is at this agentmeter's schema (reads only).

    Raises:
        SchemaError: for a database of a newer agentmeter.
    """
    version = check_version(conn)
    return version == SCHEMA_VERSION and _revision(conn) == HEAD and _complete(conn)


def _complete(conn: sa.Connection) -> bool:
    """Every table of the schema is there (development databases of the 0.2 cycle,
    at revision 0002 before the daily rollups existed, are not). ``ROLLUP_TABLES``
    includes the per-session tables."""
    names = set(sa.inspect(conn).get_table_names())
    return all(t.name in names for t in ROLLUP_TABLES)


def _lock(conn: sa.Connection) -> Any:
    """Take the upgrade lock inside the connection's transaction; returns an undo."""
    if conn.dialect.name == "sqlite":
        before = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {_SQLITE_WAIT_MS}")
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(before or 0)}")
    elif conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK})")


def upgrade(conn: sa.Connection) -> None:
    """Create or upgrade agentmeter's tables on ``conn`` (inside its transaction,
    which the caller commits); refuse a newer schema.

    Raises:
        SchemaError: a newer schema, or an Alembic revision this agentmeter does not know.
    """
    if is_current(conn):
        return
    _lock(conn)
    version = check_version(conn)  # again, under the lock: another process may be done
    revision = _revision(conn)
    if version == SCHEMA_VERSION and revision == HEAD:
        if _complete(conn):
            return
        revision = None  # incomplete: run 0002 again (it rebuilds the rollups)
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    cfg.attributes["connection"] = conn
    known = {s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()}
    if revision is not None and revision not in known:
        raise SchemaError(
            f"the database is at agentmeter schema revision {revision!r}, unknown to this "
            f"agentmeter (schema version {SCHEMA_VERSION}): upgrade agentmeter-core"
        )
    names = set(sa.inspect(conn).get_table_names())
    if revision is None and EVENTS.name in names and _revision(conn) is not None:
        command.stamp(cfg, V1_REVISION, purge=True)
    elif revision is None and EVENTS.name in names:
        # Written by agentmeter 0.1 (schema version 1), before Alembic managed it.
        if SCHEMA.name not in names:
            raise SchemaError(
                f"{EVENTS.name} exists without {SCHEMA.name}: not an agentmeter database"
            )
        command.stamp(cfg, V1_REVISION)
        events = conn.execute(sa.select(sa.func.count()).select_from(EVENTS)).scalar()
        logger.warning(
            "agentmeter: upgrading the database from schema version %s to %d "
            "(%s stored events; the rollups are built from them once)",
            version,
            SCHEMA_VERSION,
            f"{events:,}",
        )
    command.upgrade(cfg, "head")


def check(conn: sa.Connection) -> int:
    """The schema version of an existing database (for readers; creates nothing).

    Raises:
        SchemaError: if the agentmeter tables are missing or the version is newer.
    """
    names = set(sa.inspect(conn).get_table_names())
    if EVENTS.name not in names or SCHEMA.name not in names:
        raise SchemaError("not an agentmeter database (its tables are missing)")
    version = check_version(conn)
    if version is None:
        raise SchemaError("not an agentmeter database (no schema version)")
    return version
