"""The reader's copy of a chest X-ray leaves the append-only read for its own table.

Reads stored in format 4 keep the copy (:data:`serving.audit.schema.imaging_pixels`)
beside the read, so a site can keep it for a limited time (the PACS holds the image)
while the read itself, its scores and its maps stay. Rows stored before (formats 1-3)
are not rewritten: ``imaging_results`` is append-only, so a format-3 read keeps its copy
inside the read and is read as before.

The copy may only be emptied: ``data`` set to NULL with ``removed`` stamped, nothing
else updated and nothing deleted (so the reader can say when and why it is gone, and a
kept copy is always the one the read was made with).

Revision ID: 0006_imaging_pixels
Revises: 0005_imaging_results
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from serving.audit.migrations.append_only import drop_no_replace, make_no_replace

revision = "0006_imaging_pixels"
down_revision = "0005_imaging_results"
branch_labels = None
depends_on = None

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION tonle_pixels_empty_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.data IS NULL AND NEW.removed IS NOT NULL
            AND NEW.result_id = OLD.result_id AND NEW.created = OLD.created THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'imaging_pixels may only be emptied'
        USING ERRCODE = 'insufficient_privilege';
END;
$$
"""
_SQLITE_CHANGE = (
    "NEW.data IS NOT NULL OR NEW.removed IS NULL OR NEW.result_id IS NOT OLD.result_id "
    "OR NEW.created IS NOT OLD.created"
)


def upgrade() -> None:
    op.create_table(
        "imaging_pixels",
        sa.Column(
            "result_id",
            sa.String(32),
            sa.ForeignKey("imaging_results.result_id"),
            primary_key=True,
        ),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.LargeBinary),
        sa.Column("removed", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_imaging_pixels_created", "imaging_pixels", ["created"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER imaging_pixels_empty_only BEFORE UPDATE OR DELETE ON imaging_pixels "
            "FOR EACH ROW EXECUTE FUNCTION tonle_pixels_empty_only()"
        )
        op.execute(
            "CREATE TRIGGER imaging_pixels_no_truncate BEFORE TRUNCATE ON imaging_pixels "
            "FOR EACH STATEMENT EXECUTE FUNCTION tonle_append_only()"
        )
    else:
        op.execute(
            f"CREATE TRIGGER imaging_pixels_empty_only BEFORE UPDATE ON imaging_pixels "
            f"WHEN {_SQLITE_CHANGE} "
            "BEGIN SELECT RAISE(ABORT, 'imaging_pixels may only be emptied'); END"
        )
        op.execute(
            "CREATE TRIGGER imaging_pixels_no_delete BEFORE DELETE ON imaging_pixels "
            "BEGIN SELECT RAISE(ABORT, 'imaging_pixels may only be emptied'); END"
        )
        make_no_replace("imaging_pixels", ("result_id",))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS imaging_pixels_empty_only ON imaging_pixels")
        op.execute("DROP TRIGGER IF EXISTS imaging_pixels_no_truncate ON imaging_pixels")
        op.execute("DROP FUNCTION IF EXISTS tonle_pixels_empty_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS imaging_pixels_empty_only")
        op.execute("DROP TRIGGER IF EXISTS imaging_pixels_no_delete")
        drop_no_replace("imaging_pixels")
    op.drop_table("imaging_pixels")
