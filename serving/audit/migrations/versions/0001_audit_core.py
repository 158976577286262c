"""Audit events, card index, feedback, API keys, JWT replay store; append-only triggers.

Revision ID: 0001_audit_core
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from serving.audit.migrations.append_only import drop_append_only, make_append_only

revision = "0001_audit_core"
down_revision = None
branch_labels = None
depends_on = None

_APPEND_ONLY = ("audit_events", "audit_cards", "feedback")


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False, unique=True),
        sa.Column("hook_instance", sa.String(128)),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("card_ids", sa.JSON, nullable=False),
        sa.Column("caller_iss", sa.String(512)),
        sa.Column("caller_sub", sa.String(512)),
        sa.Column("caller_tenant", sa.String(128)),
        sa.Column("model_name", sa.String(128)),
        sa.Column("model_version", sa.String(64)),
        sa.Column("model_sha256", sa.String(64)),
        sa.Column("input_sha256", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(512)),
        sa.Column("patient_ref", sa.String(256)),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("created", tz, nullable=False),
    )
    op.create_index("ix_audit_events_created", "audit_events", ["created"])
    op.create_table(
        "audit_cards",
        sa.Column("card_uuid", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_cards_request_id", "audit_cards", ["request_id"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("card_uuid", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64)),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("accepted_suggestions", sa.JSON, nullable=False),
        sa.Column("override_system", sa.String(512)),
        sa.Column("override_code", sa.String(128)),
        sa.Column("override_display", sa.String(512)),
        sa.Column("comment", sa.Text),
        sa.Column("outcome_timestamp", tz),
        sa.Column("caller_iss", sa.String(512)),
        sa.Column("caller_sub", sa.String(512)),
        sa.Column("caller_tenant", sa.String(128)),
        sa.Column("created", tz, nullable=False),
    )
    op.create_index("ix_feedback_card_uuid", "feedback", ["card_uuid"])
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])
    op.create_index("ix_feedback_created", "feedback", ["created"])
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created", tz, nullable=False),
        sa.Column("revoked", tz),
    )
    op.create_table(
        "jwt_replay",
        sa.Column("issuer", sa.String(512), primary_key=True),
        sa.Column("jti", sa.String(256), primary_key=True),
        sa.Column("expires", tz, nullable=False),
    )
    op.create_index("ix_jwt_replay_expires", "jwt_replay", ["expires"])
    for table in _APPEND_ONLY:
        make_append_only(table)


def downgrade() -> None:
    for table in _APPEND_ONLY:
        drop_append_only(table)
    for table in ("jwt_replay", "api_keys", "feedback", "audit_cards", "audit_events"):
        op.drop_table(table)
