"""The ``cxr-triage`` CDS Hooks ``patient-view`` service.

Shows the latest stored AI read of the patient's recent chest X-rays (analysed when
the study arrived, through ``POST /v1/imaging/cxr`` or the DICOMweb route), with the
heatmap link. Nothing is computed during the hook call, so it answers well inside
the ~500 ms EHRs allow. ``cards: []`` when there is no recent read.

Patients are matched on identifier: the hook's ``context.patientId`` must equal the
DICOM PatientID of the image, or the ``patient`` given when the image was posted.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from serving.cds_models import Card, CdsResponse, CdsService, Link, Source
from serving.http.cds import CdsCall
from serving.http.pipeline import Answer
from serving.imaging.results import CxrResult, now
from serving.imaging.state import ImagingState
from serving.ui.links import LinkSigner, signer

__all__ = ["SERVICE", "SERVICE_ID", "CxrTriage", "card_for"]

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
    local = [
        t(
            "card.cxr.threshold.site",
            lang,
            label=t(f"label.{f.label}", lang),
            source=f.threshold_chosen_on,
        )
        for f in result.findings
        if f.threshold_source == "site-override"
    ]
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
            *local,
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


class CxrTriage:
    """The ``cxr-triage`` service behind ``/cds-services/{id}``
    (:class:`serving.http.cds.CdsHandler`): the latest stored read of the patient."""

    definition = SERVICE

    def __init__(self, state: ImagingState) -> None:
        self.state = state

    async def answer(self, call: CdsCall) -> Answer:
        """One card for the latest recent read, or ``cards: []`` (``no-recent-read``)."""
        state, exchange = self.state, call.exchange
        exchange.model = state.analyser.identity
        since = now() - timedelta(days=state.config.recent_days)
        patient = call.hook.context.patientId
        result = await run_in_threadpool(state.store.latest_for_patient, patient, since)
        cards = []
        if result:
            link_signer = await run_in_threadpool(signer, call.runtime)
            cards = [card_for(result, state.public_url, link_signer, call.lang)]
            exchange.input_sha256 = result.input_sha256
            exchange.card_ids = [c.uuid for c in cards]
        body = CdsResponse(cards=cards).model_dump_json(exclude_none=True)
        response = Response(body, media_type="application/json")
        if cards:
            return Answer(response, "advice")
        return Answer(response, "no-advice", "no-recent-read")
