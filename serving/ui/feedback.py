"""``POST /ui/api/feedback``: agree / disagree from an explanation page.

An endpoint of the one request pipeline (:func:`serving.http.pipeline.endpoint`, scheme
``page-link``): the body carries the ``exp`` and ``sig`` of the signed page link it is
sent from (403 / 410 otherwise, before anything is looked up), is parsed strictly, and
the feedback is stored in the transaction of the call's audit row (outcome
``feedback``, service ``ui-feedback``): a 503 when that commit fails, and nothing
stored. The feedback rows are those of CDS Hooks feedback, with
``caller_iss = "tonle-ui"``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from serving import i18n
from serving.audit.feedback import CardShown
from serving.audit.records import FeedbackRecord, OverrideReason
from serving.body import BadRequest, parse_model, read_json
from serving.cards import OVERRIDE_SYSTEM
from serving.http.audit import Exchange
from serving.http.caller import link_caller
from serving.http.pipeline import Answer, endpoint
from serving.runtime import Runtime
from serving.ui.pages import cxr_store, stored_explanation
from serving.ui.render import CARD_ID, UI_CALLER, json_error, runtime_of

__all__ = ["PageFeedback", "feedback"]

SERVICE_ID = "ui-feedback"  # the service id of the calls' audit rows


class PageFeedback(BaseModel):
    """The body the explanation page's feedback form sends."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    card: str = Field(pattern=CARD_ID.pattern)
    agree: StrictBool
    reason: str = Field(default="", max_length=2000)
    kind: Literal["ncd", "cxr"] = "ncd"
    exp: str = Field(max_length=16)  # checked by the pipeline (the page's signed link)
    sig: str = Field(max_length=64)


def _unknown() -> Answer:
    return Answer(json_error("unknown-card", 404), "refused", "unknown-card")


async def _card(runtime: Runtime, body: PageFeedback) -> tuple[str, str | None] | None:
    """The service that answered the card the page explains and the tenant it answered
    (None: no such card, or its explanation is purged)."""
    if body.kind == "cxr":
        store = cxr_store(runtime)
        if store is None:
            return None
        try:  # the signed page link names the read, whoever made it
            found = await run_in_threadpool(store.by_link, body.card)
        except KeyError:
            return None
        return "cxr-triage", found.tenant or None
    ex = await run_in_threadpool(stored_explanation, runtime, body.card)
    return None if ex is None else (ex.service_id, None)


async def _feedback(request: Request, exchange: Exchange) -> Answer:
    """``POST /ui/api/feedback``: agree / disagree with a card, from its explanation page.

    Body: :class:`PageFeedback`; a disagreement needs a reason (400 ``reason-required``),
    an unknown or purged card is 404 ``unknown-card``.
    """
    runtime = runtime_of(request)
    body = parse_model(PageFeedback, await read_json(request))
    reason = body.reason.strip()
    if not body.agree and not reason:
        raise BadRequest("reason-required", "a disagreement needs a reason", "reason")
    card = await _card(runtime, body)
    if card is None:
        return _unknown()
    service_id, tenant = card
    lookup = getattr(runtime.audit, "card_shown", None)
    shown: CardShown | None = (
        await run_in_threadpool(lookup, body.card) if lookup is not None else None
    )
    # The link's holder is audited under the tenant the card was answered to.
    exchange.caller = link_caller(tenant or (shown.caller_tenant if shown else None))
    exchange.patient_ref = shown.patient_ref if shown else None
    exchange.feedback.append(
        FeedbackRecord(
            card_uuid=body.card,
            request_id=shown.request_id if shown else None,
            service_id=service_id,
            outcome="accepted" if body.agree else "overridden",
            override_reason=None
            if body.agree
            else OverrideReason(
                system=OVERRIDE_SYSTEM,
                code="disagree",
                display=i18n.t("override.disagree", "en"),
            ),
            comment=reason or None,
            outcome_timestamp=datetime.now(UTC),
            caller_iss=UI_CALLER,
        )
    )
    return Answer(JSONResponse({"stored": True}), "feedback")


def _unavailable(exchange: Exchange) -> Answer:
    """503: the card could not be looked up; nothing is stored."""
    return Answer(json_error("audit-unavailable", 503), "error", "store-unavailable")


feedback = endpoint("page-link", SERVICE_ID, _feedback, on_error=_unavailable)
