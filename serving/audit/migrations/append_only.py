"""Triggers that make a table append-only (UPDATE, DELETE and TRUNCATE refused).

Later migrations that add audit-like tables (imaging results) call
:func:`make_append_only` on them, naming the table's unique keys.

On SQLite, ``INSERT OR REPLACE`` (and ``REPLACE``) resolves a key conflict by deleting
the old row without firing DELETE triggers (unless ``recursive_triggers`` is on), so a
BEFORE INSERT trigger refuses any row whose key already exists: the insert fails like a
unique-key violation and the stored row stays as it was.
"""

from __future__ import annotations

from alembic import op

__all__ = ["drop_append_only", "drop_no_replace", "make_append_only", "make_no_replace"]

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION tonle_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def make_no_replace(table: str, keys: tuple[str, ...]) -> None:
    """SQLite: refuse an INSERT whose ``keys`` (each a unique column) match a stored row.

    A no-op on PostgreSQL, which has no REPLACE (its upsert fires the UPDATE trigger).
    """
    if op.get_bind().dialect.name != "sqlite" or not keys:
        return
    clash = " OR ".join(f"{key} = NEW.{key}" for key in keys)
    # Table and column names come from the migrations, never from input.
    when = f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {clash})"  # noqa: S608
    trigger = (
        f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} {when} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: key exists'); END"
    )
    op.execute(trigger)


def drop_no_replace(table: str) -> None:
    """Remove the trigger :func:`make_no_replace` installed on ``table``."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_replace")


def make_append_only(table: str, keys: tuple[str, ...] = ()) -> None:
    """Install triggers refusing UPDATE/DELETE (and TRUNCATE on PostgreSQL) on ``table``,
    and, on SQLite, an INSERT that would replace a row with the same ``keys``."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION tonle_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tonle_append_only()"
        )
    elif dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
        make_no_replace(table, keys)
    else:
        raise NotImplementedError(f"append-only triggers for database {dialect!r}")


def drop_append_only(table: str) -> None:
    """Remove the triggers :func:`make_append_only` installed on ``table``."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
    else:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
        drop_no_replace(table)
