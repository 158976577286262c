"""Database engines with the durability settings the audit promise needs, and migrations.

SQLite: WAL journal, ``synchronous=FULL`` and a busy timeout on *every* connection,
and write transactions opened with ``BEGIN IMMEDIATE`` so concurrent writers queue
instead of failing on a lock upgrade. PostgreSQL: ``synchronous_commit=on`` on every
connection, so a commit has reached the WAL on disk before it returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import Connection

__all__ = [
    "MIGRATIONS_DIR",
    "READ_ONLY",
    "current_revision",
    "head_revision",
    "make_engine",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_SQLITE_BUSY_MS = 10_000
# Execution option marking read-only work (SQLite then opens a deferred transaction).
READ_ONLY = "tonle_read_only"
# Serialises concurrent `upgrade` calls (several workers starting at once) on PostgreSQL.
_PG_MIGRATION_LOCK = 0x746F6E6C65


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """An engine for ``database_url`` with durable commits configured per connection.

    Args:
        database_url: ``sqlite:///path.db`` or ``postgresql+psycopg://user@host/db``.
        **kwargs: passed to :func:`sqlalchemy.create_engine` (pool sizes, ...).

    Raises:
        ValueError: the URL names a database other than SQLite or PostgreSQL.
    """
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _postgres_on_connect)
        return engine
    raise ValueError(
        f"database URL scheme {url.drivername!r} is not supported: use sqlite:/// or "
        "postgresql+psycopg://"
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN
    # is deferred, which makes concurrent writers fail instead of waiting).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # Writers take the write lock up front; read-only work asks for a deferred BEGIN.
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _postgres_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET synchronous_commit = on")
    finally:
        cursor.close()
    dbapi_connection.commit()


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest migration revision shipped with this code."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the shipped migrations up to ``revision``, safely from several processes."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        # SQLite: BEGIN IMMEDIATE (see _sqlite_on_begin) already holds the write lock.
        command.upgrade(_alembic_config(connection), revision)
