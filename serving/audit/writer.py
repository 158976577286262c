"""Durable multi-table inserts on one kept connection, for the audit group commit.

Per batch, SQLAlchemy's statement machinery (pool checkout and return, compile cache,
execution context, result set-up) cost the committer thread about as much CPU as the
inserts and the commit themselves, and that thread shares the GIL with the request
handlers. Here each table's INSERT is compiled once for the dialect, every value still
goes through its column type's own bind processor (so the stored bytes are those of a
Core insert), and the batch runs on one DBAPI connection kept between batches. The
engine's connect hooks have set its durability (SQLite ``synchronous=FULL``,
PostgreSQL ``synchronous_commit=on``); SQLite writes start with ``BEGIN IMMEDIATE``
as everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from sqlalchemy import Engine, Table, insert
from sqlalchemy.exc import DBAPIError

__all__ = ["BatchWriter"]


class _Insert:
    """One table's INSERT, compiled once, with the bind processor of each column."""

    def __init__(self, table: Table, engine: Engine) -> None:
        dialect = engine.dialect
        columns = [c for c in table.columns if not (c.primary_key and c.autoincrement is True)]
        compiled = insert(table).compile(dialect=dialect, column_keys=[c.key for c in columns])
        self.sql = str(compiled)
        order = compiled.positiontup if compiled.positional else None
        by_key = {c.key: c for c in columns}
        self.keys: list[str] = list(order) if order is not None else [c.key for c in columns]
        self.positional = order is not None
        self.processors: list[Callable[[Any], Any] | None] = [
            by_key[key].type.dialect_impl(dialect).bind_processor(dialect) for key in self.keys
        ]

    def params(self, row: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        values = [
            row.get(key) if process is None else process(row.get(key))
            for key, process in zip(self.keys, self.processors, strict=True)
        ]
        return tuple(values) if self.positional else dict(zip(self.keys, values, strict=True))


class BatchWriter:
    """Inserts rows into several tables in one committed transaction.

    Used from one thread only (the group committer's). A failed batch is rolled back;
    a connection the database dropped is replaced on the next batch (and a batch that
    failed only because its kept connection had gone stale is retried once on a fresh
    one before its commit was attempted, as ``pool_pre_ping`` would have done).

    Args:
        engine: the durable engine (see :func:`serving.audit.engine.make_engine`).
        tables: the tables :meth:`write` may insert into.
    """

    def __init__(self, engine: Engine, tables: Sequence[Table]) -> None:
        self._engine = engine
        self._inserts = {table.name: _Insert(table, engine) for table in tables}
        self._connection: Any | None = None
        self._sqlite = engine.dialect.name == "sqlite"

    def write(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Insert ``rows`` (table name -> row values) and commit, all or nothing.

        Raises:
            sqlalchemy.exc.IntegrityError: a unique key is already taken (nothing written).
            sqlalchemy.exc.DBAPIError: any other database failure (nothing written).
        """
        try:
            self._write(rows)
        except _Stale:
            self._write(rows)  # on a fresh connection, which never raises _Stale

    def _write(self, rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        fresh = self._connection is None
        connection = self._connection = self._connection or self._engine.raw_connection()
        statement: str = "BEGIN"
        params: Any = ()
        committing = False
        try:
            cursor = connection.cursor()
            try:
                with self._one_round_trip(connection):
                    if self._sqlite:
                        cursor.execute("BEGIN IMMEDIATE")
                    for name, values in rows.items():
                        if values:
                            prepared = self._inserts[name]
                            statement = prepared.sql
                            params = [prepared.params(v) for v in values]
                            cursor.executemany(statement, params)
                    committing = True
                    connection.commit()
            finally:
                cursor.close()
        except self._engine.dialect.loaded_dbapi.Error as exc:
            disconnected = self._engine.dialect.is_disconnect(exc, connection, None)
            self._discard(connection, invalidate=disconnected)
            if disconnected and not fresh and not committing:
                raise _Stale from exc
            raise DBAPIError.instance(
                statement,
                params,
                exc,
                self._engine.dialect.loaded_dbapi.Error,
                hide_parameters=True,  # values may hold a patient reference
                connection_invalidated=disconnected,
            ) from exc

    def _one_round_trip(self, connection: Any) -> AbstractContextManager[Any]:
        """psycopg: the batch's statements and its commit in one pipeline, so one round
        trip to the server. Alone, each ``executemany`` is a pipeline of its own ended by
        a sync, and the commit one more: four round trips for a chest X-ray read's three
        tables, about 1 CPU-ms of the committer thread per read (``profile_cxr.py
        --postgres``). A failed statement aborts the pipeline and raises at the commit."""
        if self._engine.dialect.driver != "psycopg":
            return nullcontext()
        pipeline: AbstractContextManager[Any] = connection.driver_connection.pipeline()
        return pipeline

    def _discard(self, connection: Any, *, invalidate: bool) -> None:
        if invalidate:
            self._connection = None
            connection.invalidate()
            connection.close()
            return
        try:
            connection.rollback()
        except self._engine.dialect.loaded_dbapi.Error:
            self._connection = None
            connection.invalidate()
            connection.close()

    def close(self) -> None:
        """Return the kept connection to the engine's pool."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class _Stale(Exception):
    """The kept connection was found dropped before the commit: retry on a fresh one."""
