"""Chest X-ray reads, committed with their audit row and scoped to the caller's tenant.

Revision ID: 0005_imaging_results
Revises: 0004_audit_mode
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from serving.audit.migrations.append_only import drop_append_only, make_append_only

revision = "0005_imaging_results"
down_revision = "0004_audit_mode"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imaging_results",
        sa.Column("result_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("patient_ref", sa.String(256)),
        sa.Column("sop_instance_uid", sa.String(64)),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("format", sa.SmallInteger, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("heatmap", sa.LargeBinary, nullable=False),
    )
    # Patient ids and DICOM instances are unique only within one tenant (one EHR, one PACS).
    op.create_index(
        "ix_imaging_results_patient", "imaging_results", ["tenant", "patient_ref", "created"]
    )
    op.create_index(
        "ix_imaging_results_instance", "imaging_results", ["tenant", "sop_instance_uid", "created"]
    )
    make_append_only("imaging_results", ("result_id",))


def downgrade() -> None:
    drop_append_only("imaging_results")
    op.drop_table("imaging_results")
