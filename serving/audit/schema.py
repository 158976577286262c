"""SQLAlchemy table definitions the store queries (the DDL lives in the migrations).

Adding a table (e.g. imaging results): add it here for queries and add an Alembic
revision under ``serving/audit/migrations/versions/`` whose ``down_revision`` is the
current head (``tonle db upgrade`` and :meth:`AuditStore.open` apply it).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

__all__ = [
    "APPEND_ONLY_TABLES",
    "api_keys",
    "audit_cards",
    "audit_events",
    "explanations",
    "feedback",
    "imaging_pixels",
    "imaging_results",
    "jwt_replay",
    "metadata",
    "service_secrets",
]

metadata = MetaData()

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("hook_instance", String(128)),
    Column("service_id", String(128), nullable=False),
    Column("card_ids", JSON, nullable=False),
    Column("caller_iss", String(512)),
    Column("caller_sub", String(512)),
    Column("caller_tenant", String(128)),
    Column("model_name", String(128)),
    Column("model_version", String(64)),
    Column("model_sha256", String(64)),
    Column("input_sha256", String(64)),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(512)),
    Column("patient_ref", String(256)),
    Column("latency_ms", Float, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False, index=True),
    Column("mode", String(8), nullable=False, server_default="live"),
)

# Card uuid -> request id, so feedback (which names only the card) finds its request.
audit_cards = Table(
    "audit_cards",
    metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False, index=True),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("card_uuid", String(64), nullable=False, index=True),
    Column("request_id", String(64), index=True),
    Column("service_id", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("accepted_suggestions", JSON, nullable=False),
    Column("override_system", String(512)),
    Column("override_code", String(128)),
    Column("override_display", String(512)),
    Column("comment", Text),
    Column("outcome_timestamp", DateTime(timezone=True)),
    Column("caller_iss", String(512)),
    Column("caller_sub", String(512)),
    Column("caller_tenant", String(128)),
    Column("created", DateTime(timezone=True), nullable=False, index=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    # sha256 of the random secret: the secret has 256 bits of entropy, so a slow
    # password hash would add latency on every call without adding safety.
    Column("secret_sha256", String(64), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("revoked", DateTime(timezone=True)),
)

jwt_replay = Table(
    "jwt_replay",
    metadata,
    Column("issuer", String(512), primary_key=True),
    Column("jti", String(256), primary_key=True),
    Column("expires", DateTime(timezone=True), nullable=False, index=True),
)

# What an NCD card's explanation page shows (JSON text), until ``expires`` (then purged).
explanations = Table(
    "explanations",
    metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("service_id", String(128), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("expires", DateTime(timezone=True), nullable=False, index=True),
    Column("content", Text, nullable=False),
)

# Secrets every worker and replica must share, created once by whichever process needs
# one first and kept in the clear: only for dev mode and the demo (the link key when
# TONLE_LINK_SECRET is unset there; elsewhere the service refuses to start without it).
service_secrets = Table(
    "service_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)

# Chest X-ray reads (serving.imaging.results), each inserted in the transaction of the
# audit row that first answered with it; ``format`` versions ``result`` and ``heatmap``
# (and, from format 4, where the reader's copy is kept: ``imaging_pixels``).
imaging_results = Table(
    "imaging_results",
    metadata,
    Column("result_id", String(32), primary_key=True),
    Column("tenant", String(128), nullable=False),
    Column("patient_ref", String(256)),
    Column("sop_instance_uid", String(64)),
    Column("request_id", String(64), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("format", SmallInteger, nullable=False),
    Column("result", Text, nullable=False),
    Column("heatmap", LargeBinary, nullable=False),
)

# The reader's copy of a read's original (format 4+; 0.5-0.9 MB each), inserted with its
# read but not part of the record: the PACS holds the image. Retention empties ``data``
# (TONLE_IMAGING_PIXELS_DAYS, ``tonle db prune-pixels``) and stamps ``removed``; a
# trigger refuses any other change, so a kept copy is always the one the read was made
# with. ``created`` is the read's.
imaging_pixels = Table(
    "imaging_pixels",
    metadata,
    Column("result_id", String(32), ForeignKey("imaging_results.result_id"), primary_key=True),
    Column("created", DateTime(timezone=True), nullable=False, index=True),
    Column("data", LargeBinary),
    Column("removed", DateTime(timezone=True)),
)

# Tables the service may only INSERT into (UPDATE/DELETE refused by triggers).
APPEND_ONLY_TABLES = ("audit_events", "audit_cards", "feedback", "imaging_results")
