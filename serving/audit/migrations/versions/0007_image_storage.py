"""PostgreSQL stores a read's images as they are, without trying to compress them.

PostgreSQL compresses every value over about 2 kB before moving it out of line (pglz,
the column's default ``EXTENDED`` storage). The reader's copy (0.5-0.9 MB of 12-16-bit
values) and a read's heatmap source (the model's 8-bit image and float16 maps) hardly
compress, yet trying cost the database 11.6 CPU-ms per 0.5 MB copy against 1.5 stored
as they are (``EXTERNAL``: out of line, uncompressed), 100 inserts on this machine's
PostgreSQL 15; the size on disk was the same. Only rows written from now on are stored
the new way; SQLite has no such setting.

Revision ID: 0007_image_storage
Revises: 0006_imaging_pixels
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0007_image_storage"
down_revision = "0006_imaging_pixels"
branch_labels = None
depends_on = None

_COLUMNS = (("imaging_pixels", "data"), ("imaging_results", "heatmap"))


def _storage(kind: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in _COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET STORAGE {kind}")


def upgrade() -> None:
    _storage("EXTERNAL")


def downgrade() -> None:
    _storage("EXTENDED")
