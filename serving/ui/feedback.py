"""``POST /ui/api/feedback``: agree / disagree from an explanation page.

Stored with :meth:`AuditStore.record_feedback` like CDS Hooks feedback.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving import i18n
from serving.audit.records import FeedbackRecord, OverrideReason
from serving.cards import OVERRIDE_SYSTEM
from serving.metrics import count_feedback
from serving.ui import links
from serving.ui.pages import cxr_store, stored_explanation
from serving.ui.render import CARD_ID, UI_CALLER, json_error, runtime_of

__all__ = ["feedback"]

logger = logging.getLogger(__name__)


async def feedback(request: Request) -> Response:
    """``POST /ui/api/feedback``: agree / disagree with a card, from its explanation page.

    Body: ``{"card": uuid, "agree": bool, "reason": str, "kind": "ncd"|"cxr", "exp": str,
    "sig": str}``: ``exp`` and ``sig`` are those of the signed page link the feedback
    comes from (the capability; 403 / 410 otherwise). The row goes to the same store as
    CDS Hooks feedback, with ``caller_iss = "tonle-ui"``.
    """
    runtime = runtime_of(request)
    try:
        body = json.loads(await request.body())
        card = str(body["card"])
        agree = body["agree"]
        reason = str(body.get("reason") or "").strip()[:2000]
        kind = str(body.get("kind") or "ncd")
        link = {"exp": str(body.get("exp") or ""), "sig": str(body.get("sig") or "")}
    except (ValueError, KeyError, TypeError, AttributeError):
        return json_error("invalid-body")
    if not isinstance(agree, bool) or not CARD_ID.match(card) or kind not in ("ncd", "cxr"):
        return json_error("invalid-body")
    page = f"/ui/explain/cxr/{card}" if kind == "cxr" else f"/ui/explain/{card}"
    verdict = await run_in_threadpool(lambda: links.signer(runtime).check(page, link))
    if verdict != "ok":
        return links.refusal(verdict)
    if not agree and not reason:
        return json_error("reason-required")
    if kind == "cxr":
        store = cxr_store(runtime)
        try:
            if store is None:
                raise KeyError(card)
            await run_in_threadpool(store.by_link, card)  # the signed page link names it
        except KeyError:
            return json_error("unknown-card", 404)
        service_id = "cxr-triage"
    else:
        ex = await run_in_threadpool(stored_explanation, runtime, card)
        if ex is None:
            return json_error("unknown-card", 404)
        service_id = ex.service_id
    if runtime.audit is None:
        return json_error("audit-unavailable", 503)
    request_for_card = getattr(runtime.audit, "request_for_card", None)
    request_id = await run_in_threadpool(request_for_card, card) if request_for_card else None
    record = FeedbackRecord(
        card_uuid=card,
        request_id=request_id,
        service_id=service_id,
        outcome="accepted" if agree else "overridden",
        override_reason=None
        if agree
        else OverrideReason(
            system=OVERRIDE_SYSTEM,
            code="disagree",
            display=i18n.t("override.disagree", "en"),
        ),
        comment=reason or None,
        outcome_timestamp=datetime.now(UTC),
        caller_iss=UI_CALLER,
    )
    try:
        await run_in_threadpool(runtime.audit.record_feedback, record)
    except Exception:
        logger.exception("feedback from the explanation page could not be stored")
        return json_error("audit-unavailable", 503)
    count_feedback(record)
    return JSONResponse({"stored": True})
