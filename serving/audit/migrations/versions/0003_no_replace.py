"""SQLite: append-only tables refuse ``INSERT OR REPLACE`` of a stored row.

Revision ID: 0003_no_replace
Revises: 0002_explanations
Create Date: 2026-12-06
"""

from __future__ import annotations

from serving.audit.migrations.append_only import drop_no_replace, make_no_replace

revision = "0003_no_replace"
down_revision = "0002_explanations"
branch_labels = None
depends_on = None

# Each append-only table's unique keys (a REPLACE on any of them deletes the old row).
_KEYS = {
    "audit_events": ("id", "request_id"),
    "audit_cards": ("card_uuid",),
    "feedback": ("id",),
}


def upgrade() -> None:
    for table, keys in _KEYS.items():
        make_no_replace(table, keys)


def downgrade() -> None:
    for table in _KEYS:
        drop_no_replace(table)
