"""Audit trail and the small stores auth needs (SQLite or PostgreSQL, via Alembic)."""

from __future__ import annotations

from serving.audit.records import ApiKeyInfo, AuditRecord, FeedbackRecord, Outcome, OverrideReason
from serving.audit.store import AuditStore, AuditUnavailable, DuplicateRequest

__all__ = [
    "ApiKeyInfo",
    "AuditRecord",
    "AuditStore",
    "AuditUnavailable",
    "DuplicateRequest",
    "FeedbackRecord",
    "Outcome",
    "OverrideReason",
]
