"""Alembic environment of agentmeter's schema.

agentmeter runs it programmatically (see :mod:`agentmeter.storage.migrations`),
handing over a connection already inside the transaction that holds the
migration lock. For maintainers writing a new revision with the ``alembic``
command line::

    alembic -c /dev/null -x url=sqlite:///scratch.db revision -m "..."  # from this folder
"""

from __future__ import annotations

from alembic import context

from agentmeter.storage.migrations import VERSION_TABLE

config = context.config
connection = config.attributes.get("connection")


def _run(conn: object) -> None:
    context.configure(connection=conn, version_table=VERSION_TABLE)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:  # pragma: no cover - maintainers' command line only
    import sqlalchemy as sa

    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database: alembic -x url=sqlite:///path.db ...")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _run(conn)
