"""Database engines with the durability settings the audit promise needs, and migrations.

SQLite: WAL journal, ``synchronous=FULL`` and a busy timeout on *every* connection,
and write transactions opened with ``BEGIN IMMEDIATE`` so concurrent writers queue
instead of failing on a lock upgrade. PostgreSQL: ``synchronous_commit=on`` on every
connection, so a commit has reached the WAL on disk before it returns.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import time
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
    "current_revisions",
    "grant_service_role",
    "head_revisions",
    "make_engine",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_SQLITE_BUSY_MS = 10_000
# Execution option marking read-only work (SQLite then opens a deferred transaction).
READ_ONLY = "tonle_read_only"
# Serialises concurrent `upgrade` calls (several workers starting at once) on PostgreSQL.
_PG_MIGRATION_LOCK = 0x746F6E6C65


def make_engine(database_url: str, *, durable: bool = True, **kwargs: Any) -> Engine:
    """An engine for ``database_url`` with the commit durability set on every connection.

    Args:
        database_url: ``sqlite:///path.db`` or ``postgresql+psycopg://user@host/db``.
        durable: True (audit rows): every commit is on disk before it returns
            (SQLite ``synchronous=FULL``; PostgreSQL ``synchronous_commit=on``). False
            (the JWT replay store only): commits survive a process crash but reach
            disk with the next durable commit on the same database, which every call
            answering with advice or stored feedback makes after its token's (see
            :meth:`serving.audit.AuditStore.open` for why that is enough).
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
        sync = "FULL" if durable else "NORMAL"
        event.listen(engine, "connect", functools.partial(_sqlite_on_connect, sync))
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_engine(url, **kwargs)
        commit = "on" if durable else "off"
        event.listen(engine, "connect", functools.partial(_postgres_on_connect, commit))
        return engine
    raise ValueError(
        f"database URL scheme {url.drivername!r} is not supported: use sqlite:/// or "
        "postgresql+psycopg://"
    )


def _sqlite_on_connect(sync: str, dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's implicit BEGIN
    # is deferred, which makes concurrent writers fail instead of waiting).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_MS}")
        _sqlite_wal(cursor)
        cursor.execute(f"PRAGMA synchronous = {sync}")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_wal(cursor: Any) -> None:
    """Put the database in WAL mode (kept in the file: a no-op once done).

    Switching a new database to WAL needs its exclusive lock and SQLite answers "database
    is locked" at once, without the busy handler, when another connection opening the
    same new file holds a lock; so retry for as long as the busy timeout would wait.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _sqlite_on_begin(connection: Connection) -> None:
    # Writers take the write lock up front; read-only work asks for a deferred BEGIN.
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _postgres_on_connect(commit: str, dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"SET synchronous_commit = {commit}")
    finally:
        cursor.close()
    dbapi_connection.commit()


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revisions() -> tuple[str, ...]:
    """The newest shipped migration revision(s), sorted (several if teams branched)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return tuple(sorted(ScriptDirectory.from_config(config).get_heads()))


def current_revisions(engine: Engine) -> tuple[str, ...]:
    """The revision(s) the database is at, sorted (empty for an empty database)."""
    with engine.connect() as connection:
        return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Apply the shipped migrations up to ``revision``, safely from several processes.

    ``heads`` (the default) also applies revisions that two teams added in parallel on
    the same parent (e.g. an imaging table next to another new table).

    On PostgreSQL, when a migration was applied, every service role (granted by
    :func:`grant_service_role`) is granted the service's rights again in the same
    transaction, so it has them on the tables the migration added: the running service
    needs no new grant after an upgrade.
    """
    with engine.begin() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        # SQLite: BEGIN IMMEDIATE (see _sqlite_on_begin) already holds the write lock.
        before = MigrationContext.configure(connection).get_current_heads()
        command.upgrade(_alembic_config(connection), revision)
        # Only after a change: the service role itself, starting on a database already
        # at head, runs this too and may not grant anything.
        if postgres and MigrationContext.configure(connection).get_current_heads() != before:
            for role in _service_roles(connection):
                _grant(connection, role)


# What the service's own PostgreSQL role may do: append to the audit tables, read keys,
# and keep the replay store. Migrations and `tonle apikey` run as the owner role.
_SERVICE_GRANTS = (
    (
        "SELECT, INSERT",
        ("audit_events", "audit_cards", "feedback", "imaging_results", "service_secrets"),
    ),
    ("SELECT, INSERT, DELETE", ("jwt_replay", "explanations")),
    # Retention empties a reader's copy (a trigger refuses any other UPDATE or DELETE).
    ("SELECT, INSERT, UPDATE", ("imaging_pixels",)),
    ("SELECT", ("api_keys", "alembic_version")),
)
_SERVICE_SEQUENCES = ("audit_events_id_seq", "feedback_id_seq")
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def grant_service_role(engine: Engine, role: str) -> None:
    """Give an existing PostgreSQL role exactly the rights the running service needs.

    The role can INSERT and SELECT audit and feedback rows but never UPDATE, DELETE or
    TRUNCATE them (and, not owning the tables, cannot disable the append-only triggers).

    Raises:
        ValueError: not PostgreSQL, or ``role`` is not a plain lower-case identifier.
    """
    if engine.dialect.name != "postgresql":
        raise ValueError("service-role grants apply to PostgreSQL; SQLite relies on triggers")
    if not _ROLE_NAME.fullmatch(role):
        raise ValueError(f"role {role!r}: use a lower-case identifier like 'tonle_service'")
    with engine.begin() as connection:
        _grant(connection, role)


def _grant(connection: Connection, role: str) -> None:
    """Grant ``role`` the service's rights on those of its tables the schema has."""
    quote = connection.dialect.identifier_preparer.quote
    quoted = quote(role)
    schema = quote(connection.exec_driver_sql("SELECT current_schema()").scalar_one())
    connection.exec_driver_sql(f"GRANT USAGE ON SCHEMA {schema} TO {quoted}")
    for rights, tables in _SERVICE_GRANTS:
        present = _present(connection, tables)
        if present:
            connection.exec_driver_sql(f"GRANT {rights} ON {', '.join(present)} TO {quoted}")
    sequences = _present(connection, _SERVICE_SEQUENCES)
    if sequences:
        connection.exec_driver_sql(
            f"GRANT USAGE, SELECT ON SEQUENCE {', '.join(sequences)} TO {quoted}"
        )


def _present(connection: Connection, names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` (tables or sequences) in the schema (an older revision lacks some)."""
    found = connection.execute(
        text(
            "SELECT name FROM unnest(CAST(:names AS text[])) AS name "
            "WHERE to_regclass(name) IS NOT NULL"
        ),
        {"names": list(names)},
    )
    return [name for (name,) in found]


def _service_roles(connection: Connection) -> list[str]:
    """The roles granted the service's rights: INSERT on ``audit_events`` without owning it.

    Read from the table's own privileges (not ``has_table_privilege``), so superusers and
    members of such a role are not counted: exactly the roles someone granted.
    """
    found = connection.execute(
        text(
            "SELECT DISTINCT r.rolname FROM pg_class c "
            "CROSS JOIN LATERAL aclexplode(c.relacl) AS a "
            "JOIN pg_roles r ON r.oid = a.grantee "
            "WHERE c.oid = to_regclass('audit_events') AND a.privilege_type = 'INSERT' "
            "AND a.grantee <> c.relowner ORDER BY r.rolname"
        )
    )
    return [name for (name,) in found]
