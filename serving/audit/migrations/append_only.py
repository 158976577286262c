"""Triggers that make a table append-only (UPDATE, DELETE and TRUNCATE refused).

Later migrations that add audit-like tables (imaging results) call
:func:`make_append_only` on them.
"""

from __future__ import annotations

from alembic import op

__all__ = ["drop_append_only", "make_append_only"]

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION tonle_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""


def make_append_only(table: str) -> None:
    """Install triggers refusing UPDATE/DELETE (and TRUNCATE on PostgreSQL) on ``table``."""
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
