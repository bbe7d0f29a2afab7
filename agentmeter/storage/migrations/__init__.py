"""Schema creation and upgrades (interim: replaced by Alembic revisions)."""

from __future__ import annotations

from .._deps import sqlalchemy as sa
from ..schema import EVENTS, SCHEMA, SCHEMA_VERSION, SchemaError, check_version, metadata

__all__ = ["check", "upgrade"]


def upgrade(conn: sa.Connection) -> None:
    """Create or upgrade agentmeter's tables; refuse a newer schema."""
    version = check_version(conn)
    metadata.create_all(conn, checkfirst=True)
    cols = {c["name"] for c in sa.inspect(conn).get_columns(EVENTS.name)}
    for name in ("customer_id", "tags"):
        if name not in cols:
            conn.exec_driver_sql(f"ALTER TABLE {EVENTS.name} ADD COLUMN {name} TEXT")
    for index in EVENTS.indexes:
        index.create(conn, checkfirst=True)
    if version is None:
        conn.execute(SCHEMA.insert().values(version=SCHEMA_VERSION))


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
