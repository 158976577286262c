"""NCD explanations kept for their cards' links, and service secrets shared by workers.

Revision ID: 0002_explanations
Revises: 0001_audit_core
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_explanations"
down_revision = "0001_audit_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    # Not append-only: rows are deleted once they expire (retention limit).
    op.create_table(
        "explanations",
        sa.Column("card_uuid", sa.String(64), primary_key=True),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("created", tz, nullable=False),
        sa.Column("expires", tz, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
    )
    op.create_index("ix_explanations_expires", "explanations", ["expires"])
    op.create_table(
        "service_secrets",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
        sa.Column("created", tz, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_secrets")
    op.drop_table("explanations")
