"""Clinician feedback stored as the service stores it, for tests that need some."""

from __future__ import annotations

from serving.audit import AuditStore, FeedbackRecord
from serving.http.audit import Exchange
from serving.http.caller import Caller


def store_feedback(store: AuditStore, *entries: FeedbackRecord) -> str:
    """Store ``entries`` as one feedback call of their service does
    (``POST /cds-services/{id}/feedback``): each linked to the answer that carried its
    card (none for a card no answer carried), in the transaction of the call's audit
    row (service ``feedback:<id>``, outcome ``feedback``). Returns that row's request id.
    """
    first = entries[0]
    exchange = Exchange(f"feedback:{first.service_id}")
    exchange.caller = Caller(
        iss=first.caller_iss or "https://ehr.example.org",
        sub=first.caller_sub,
        tenant=first.caller_tenant,
        kind="jwt",
    )
    for fb in entries:
        shown = store.card_shown(fb.card_uuid)
        exchange.feedback.append(
            fb.model_copy(update={"request_id": shown.request_id if shown else None})
        )
    store.record(exchange.row("feedback", None))
    return exchange.request_id
