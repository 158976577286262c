"""The ``cxr-triage`` CDS Hooks ``patient-view`` service.

Shows the latest stored AI read of the patient's recent chest X-rays (analysed when
the study arrived, through ``POST /v1/imaging/cxr`` or the DICOMweb route), with the
heatmap link. Nothing is computed during the hook call, so it answers well inside
the ~500 ms EHRs allow. ``cards: []`` when there is no recent read.

Patients are matched on identifier within the caller's tenant: the hook's
``context.patientId`` must equal the DICOM PatientID of the image, or the ``patient``
given when the image was posted, by a caller of the same tenant (patient ids are unique
only within one EHR).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving.cds_models import Card, CdsRequest, CdsResponse, CdsService, Link, Source
from serving.imaging.results import CxrResult, now
from serving.imaging.state import ImagingState
from serving.ui.links import LinkSigner, signer

__all__ = ["SERVICE", "SERVICE_ID", "card_for", "cxr_triage"]

logger = logging.getLogger(__name__)

SERVICE_ID = "cxr-triage"
SERVICE = CdsService(
    hook="patient-view",
    id=SERVICE_ID,
    title="Chest X-ray AI triage (advisory)",
    description=(
        "Shows the latest AI triage read of the patient's recent chest X-rays "
        "(abnormality, TB-consistent findings, nodule, consolidation, effusion) with "
        "its heatmap. AI generated, unverified."
    ),
    prefetch={},
)


def card_for(result: CxrResult, public_url: str, signer: LinkSigner, lang: str = "en") -> Card:
    """The card for one stored read, in ``lang`` (C6 catalogues, English fallback).

    The heatmap and explanation links open in a browser without credentials, so they
    are signed capability links (:mod:`serving.ui.links`). The FHIR DiagnosticReport
    (``/v1/imaging/results/{id}/fhir``) needs an API key, so it is not a card link:
    a clinician's browser would get 401.
    """
    from serving.i18n import t

    base = public_url.rstrip("/")
    flagged = [f for f in result.findings if f.flagged]
    if flagged:
        names = ", ".join(t(f"label.{f.label}", lang) for f in flagged)
        summary = t("card.cxr.summary.abnormal", lang, findings=names)
        if len(summary) > 139:
            summary = t("card.cxr.summary.abnormal", lang, findings=t("label.abnormal", lang))
        indicator = "warning"
    else:
        summary = t("card.cxr.summary.normal", lang)
        indicator = "info"
    scores = "; ".join(
        t(
            "card.cxr.score",
            lang,
            label=t(f"label.{f.label}", lang),
            score=round(f.probability, 2),
            threshold=round(f.threshold, 2),
        )
        for f in result.findings
    )
    detail = "\n\n".join(
        [
            t(
                "card.cxr.detail",
                lang,
                model=result.model.name,
                version=result.model.version,
                scores=scores,
                quality=t("ui.explain.cxr.quality_ok", lang),
            ),
            f"**{t('advisory.cxr', lang)}**",
        ]
    )
    return Card(
        uuid=str(uuid.uuid4()),
        summary=summary[:139],
        detail=detail,
        indicator=indicator,  # type: ignore[arg-type]
        source=Source(
            label=t(
                "card.source.label", lang, model=result.model.name, version=result.model.version
            )
        ),
        links=[
            Link(
                label=t("ui.explain.cxr.image", lang),
                url=f"{base}{signer.sign(result.heatmap_url)}",
                type="absolute",
            ),
            Link(
                label=t("card.link.explanation", lang),
                url=f"{base}{signer.sign(f'/ui/explain/cxr/{result.id}')}&lang={lang}",
                type="absolute",
            ),
        ],
    )


async def _caller(state: ImagingState, request: Request) -> Any | None:
    """The CDS client (JWT, C4), or None when the call must be refused with 401."""
    from serving.runtime import DevCaller

    if state.cds_auth is None:
        return DevCaller() if state.dev else None
    from serving.auth import AuthError

    try:
        return await state.cds_auth.authenticate(
            request.headers.get("authorization"),
            f"{state.public_url.rstrip('/')}/cds-services/{SERVICE_ID}",
        )
    except AuthError:
        return None


async def cxr_triage(request: Request) -> Response:
    """``POST /cds-services/cxr-triage``."""
    from serving.imaging.routes import _NotReady, audit_row, caller_tenant, imaging_state, refuse

    started = time.perf_counter()
    try:
        state = imaging_state(request)
    except _NotReady:  # no imaging configured: the service does not exist here
        return JSONResponse({"error": "unknown-service"}, status_code=404)

    caller = await _caller(state, request)
    if caller is None:
        return await refuse(state, SERVICE_ID, started, 401, {"error": "unauthorized"})
    raw = await request.body()
    if len(raw) > 1 << 20:
        return await refuse(state, SERVICE_ID, started, 413, {"error": "too-large"}, caller)
    try:
        hook = CdsRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        body = {"error": "invalid-request", "field": where}
        return await refuse(state, SERVICE_ID, started, 400, body, caller)
    if hook.hook != "patient-view":
        body = {"error": "unsupported-hook", "field": "hook"}
        return await refuse(state, SERVICE_ID, started, 400, body, caller, hook.hookInstance)
    patient = hook.context.patientId
    since = now() - timedelta(days=state.config.recent_days)
    try:
        result = await run_in_threadpool(
            state.store.latest_for_patient, patient, since, tenant=caller_tenant(caller)
        )
    except Exception:  # the audit database, which holds the reads, is unavailable
        logger.exception("audit store unavailable; no cxr-triage lookup")
        return JSONResponse({"error": "audit-unavailable"}, status_code=503)
    request_id = uuid.uuid4().hex
    from serving.i18n import negotiate

    runtime = request.app.state.runtime
    lang = negotiate(request.headers.get("accept-language"), getattr(runtime, "language", "en"))
    cards = []
    if result:
        link_signer = await run_in_threadpool(signer, runtime)
        cards = [card_for(result, state.public_url, link_signer, lang)]
    try:
        await run_in_threadpool(
            audit_row,
            state,
            request_id=request_id,
            service_id=SERVICE_ID,
            outcome="advice" if cards else "no-advice",
            started=started,
            caller=caller,
            reason=None if cards else "no-recent-read",
            result=result,
            patient_ref=f"Patient/{patient}",
            hook_instance=hook.hookInstance,
            card_ids=[c.uuid for c in cards],
        )
    except Exception:
        logger.exception("audit store unavailable; withholding cxr-triage cards")
        return JSONResponse({"error": "audit-unavailable"}, status_code=503)
    return Response(
        CdsResponse(cards=cards).model_dump_json(exclude_none=True),
        media_type="application/json",
    )
