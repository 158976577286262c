"""Labelled rows for the next training round, from feedback and confirmed reads.

``tonle data from-feedback`` writes one CSV row per

- NCD card a clinician accepted (label 1) or overrode (label 0), with the inputs the
  card was computed from (``feature_*``, from its retained explanation; the card's
  measurement dates are left out), ``label_source`` ``clinician-feedback``;
- chest X-ray card with feedback, for a read made by that request (the read's
  probability of each finding), same labels;
- chest X-ray read confirmed by a later outcome (``label`` 1 bacteriologically
  positive, 0 negative; ``label_source`` ``outcome``), from ``tonle monitor outcomes``'
  join.

Provenance on every row: model name, version and sha256, card id or result id, the
feedback (or test) time and the tenant. No patient id, name or free-text comment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from serving.audit.records import AuditRecord, FeedbackRecord
from serving.imaging.results import CxrResult
from serving.monitor.outcomes import Joined

__all__ = ["COLUMNS", "feedback_rows", "outcome_rows"]

COLUMNS = (
    "kind", "label", "label_source", "service_id", "tenant", "card_id", "result_id",
    "labelled_at", "feedback_outcome", "override_reason", "model_name", "model_version",
    "model_sha256", "input_sha256", "finding", "probability", "study_uid",
    "sop_instance_uid",
)  # fmt: skip


def feedback_rows(
    feedback: Iterable[FeedbackRecord],
    row_of: Callable[[str], AuditRecord | None],
    explanation_of: Callable[[str], str | None],
    read_of: Callable[[str], CxrResult | None],
) -> Iterator[dict[str, Any]]:
    """One row per accepted/overridden card whose audit row is known.

    Args:
        feedback: the feedback entries.
        row_of: card uuid -> the audit row of the answer that carried it.
        explanation_of: card uuid -> the retained explanation JSON (NCD), if any.
        read_of: request id -> the read that request made (chest X-ray), if any.
    """
    for fb in feedback:
        row = row_of(fb.card_uuid)
        if row is None:
            continue
        reason = fb.override_reason
        base: dict[str, Any] = {
            "label": 1 if fb.outcome == "accepted" else 0,
            "label_source": "clinician-feedback",
            "service_id": fb.service_id,
            "tenant": row.caller_tenant or "",
            "card_id": fb.card_uuid,
            "labelled_at": fb.created.isoformat(),
            "feedback_outcome": fb.outcome,
            "override_reason": (reason.code or "") if reason else "",
            "model_name": row.model_name or "",
            "model_version": row.model_version or "",
            "model_sha256": row.model_sha256 or "",
            "input_sha256": row.input_sha256 or "",
        }
        content = explanation_of(fb.card_uuid)
        if content is not None:
            features = json.loads(content).get("features", {})
            yield {"kind": "ncd", **base, **{f"feature_{k}": v for k, v in features.items()}}
            continue
        read = read_of(row.request_id)
        if read is None:
            continue  # an NCD card whose explanation expired, or a card of a stored read
        for finding in read.findings:
            yield {"kind": "cxr", **base, **_read(read), "finding": finding.label,
                   "probability": finding.probability}  # fmt: skip


def outcome_rows(joined: Iterable[Joined], finding: str, tenant: str) -> Iterator[dict[str, Any]]:
    """One row per read confirmed (or refuted) by a later outcome."""
    for j in joined:
        read = j.result
        yield {
            "kind": "cxr",
            "label": int(j.outcome.positive),
            "label_source": "outcome",
            "service_id": "",
            "tenant": tenant,
            "labelled_at": j.outcome.tested.isoformat(),
            "model_name": read.model.name,
            "model_version": read.model.version,
            "model_sha256": read.model.sha256,
            "finding": finding,
            "probability": j.probability,
            **_read(read),
        }


def _read(read: CxrResult) -> dict[str, Any]:
    return {
        "result_id": read.id,
        "input_sha256": read.input_sha256,
        "study_uid": read.study.study_uid or "",
        "sop_instance_uid": read.study.sop_instance_uid or "",
    }
