"""Audit rows say which mode answered: ``live`` or ``silent`` (cards kept from the EHR).

Revision ID: 0004_audit_mode
Revises: 0003_no_replace
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_audit_mode"
down_revision = "0003_no_replace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before this revision were all answered live.
    op.add_column(
        "audit_events",
        sa.Column("mode", sa.String(8), nullable=False, server_default="live"),
    )


def downgrade() -> None:
    # ALTER TABLE DROP COLUMN in place (SQLite >= 3.35): a batch copy of the table would
    # drop its append-only triggers.
    op.drop_column("audit_events", "mode")
