"""Clinician feedback, stored explanations, and which answer carried a card."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select

from serving.audit import schema
from serving.audit.records import ExplanationRecord, FeedbackRecord, OverrideReason
from serving.audit.tables import Tables, utc, utc_or_none

__all__ = ["CardShown", "FeedbackTables", "feedback_values"]


@dataclass(frozen=True)
class CardShown:
    """Which service answered a card, to whom and about whom (the card's audit row)."""

    service_id: str
    caller_iss: str | None
    caller_tenant: str | None
    patient_ref: str | None = None
    request_id: str | None = None


def feedback_values(fb: FeedbackRecord) -> dict[str, Any]:
    """The ``feedback`` table row of ``fb`` (its ``request_id`` as given)."""
    reason = fb.override_reason or OverrideReason()
    return {
        "card_uuid": fb.card_uuid,
        "request_id": fb.request_id,
        "service_id": fb.service_id,
        "outcome": fb.outcome,
        "accepted_suggestions": list(fb.accepted_suggestions),
        "override_system": reason.system,
        "override_code": reason.code,
        "override_display": reason.display,
        "comment": fb.comment,
        "outcome_timestamp": utc_or_none(fb.outcome_timestamp),
        "caller_iss": fb.caller_iss,
        "caller_sub": fb.caller_sub,
        "caller_tenant": fb.caller_tenant,
        "created": utc(fb.created),
    }


class FeedbackTables(Tables):
    """Feedback on cards and the explanations behind them (part of the audit store)."""

    def card_shown(self, card_uuid: str) -> CardShown | None:
        """The service and caller a card was answered to (None if no answer carried it)."""
        cards, events = schema.audit_cards, schema.audit_events
        query = (
            select(
                events.c.service_id,
                events.c.caller_iss,
                events.c.caller_tenant,
                events.c.patient_ref,
                events.c.request_id,
            )
            .join(cards, cards.c.request_id == events.c.request_id)
            .where(cards.c.card_uuid == card_uuid)
        )
        found = self._run(lambda c: c.execute(query).one_or_none(), read=True)
        return None if found is None else CardShown(*found)

    def explanation(self, card_uuid: str) -> ExplanationRecord | None:
        """The stored explanation of card ``card_uuid``, expired or not (None if unknown).

        Written with the card's audit row (:attr:`AuditRecord.explanation`); rows past
        ``expires`` are purged at most once a minute, from here and from the JWT checks.
        """
        self._maybe_prune()
        table = schema.explanations
        query = select(table).where(table.c.card_uuid == card_uuid)
        found = self._run(lambda c: c.execute(query).mappings().one_or_none(), read=True)
        if found is None:
            return None
        values = dict(found)
        values["created"], values["expires"] = utc(found["created"]), utc(found["expires"])
        return ExplanationRecord.model_validate(values)

    def prune_explanations(self, now: datetime | None = None) -> int:
        """Delete explanations that expired before ``now``; returns how many."""
        table = schema.explanations
        query = delete(table).where(table.c.expires < utc(now or datetime.now(UTC)))
        # Not durable on its own: a purge lost in a power cut is simply done again.
        return int(self._run(lambda c: c.execute(query).rowcount, engine=self.replay_engine))

    def feedback(
        self, *, since: datetime | None = None, card_uuid: str | None = None
    ) -> list[FeedbackRecord]:
        """Feedback entries in the order they were written, optionally filtered."""
        table = schema.feedback
        query = select(table).order_by(table.c.id)
        if since is not None:
            query = query.where(table.c.created >= utc(since))
        if card_uuid is not None:
            query = query.where(table.c.card_uuid == card_uuid)
        result = self._run(lambda c: c.execute(query).mappings().all(), read=True)
        out = []
        for found in result:
            has_reason = any(found[k] is not None for k in ("override_system", "override_code"))
            out.append(
                FeedbackRecord(
                    card_uuid=found["card_uuid"],
                    request_id=found["request_id"],
                    service_id=found["service_id"],
                    outcome=found["outcome"],
                    accepted_suggestions=list(found["accepted_suggestions"]),
                    override_reason=OverrideReason(
                        system=found["override_system"],
                        code=found["override_code"],
                        display=found["override_display"],
                    )
                    if has_reason
                    else None,
                    comment=found["comment"],
                    outcome_timestamp=utc_or_none(found["outcome_timestamp"]),
                    caller_iss=found["caller_iss"],
                    caller_sub=found["caller_sub"],
                    caller_tenant=found["caller_tenant"],
                    created=utc(found["created"]),
                )
            )
        return out

    def _prune_expired(self) -> None:
        super()._prune_expired()
        self.prune_explanations()
