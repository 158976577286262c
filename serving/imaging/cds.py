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
from datetime import UTC, datetime, timedelta

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from serving.cds_models import CdsResponse, CdsService
from serving.http.cds import CdsCall
from serving.http.pipeline import Answer
from serving.imaging.card import cxr_card, patient_age
from serving.imaging.results import now
from serving.imaging.state import ImagingState
from serving.synthetic import trained_on_synthetic
from serving.ui.links import signer

__all__ = ["SERVICE", "SERVICE_ID", "CxrTriage"]

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
    # The patient's birth date: WHO recommends CAD for TB screening from age 15.
    prefetch={"patient": "Patient/{{context.patientId}}"},
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
        # Patient ids are unique only within one EHR: look up within the caller's tenant.
        result = await run_in_threadpool(
            state.store.latest_for_patient, patient, since, tenant=call.caller.tenant
        )
        cards = []
        if result:
            link_signer = await run_in_threadpool(signer, call.runtime)
            age = patient_age(call.hook.prefetch.get("patient"), datetime.now(UTC).date())
            cards = [
                cxr_card(
                    result,
                    public_url=state.public_url,
                    signer=link_signer,
                    lang=call.lang,
                    patient_id=patient,
                    age=age,
                    # The loaded model made this read and records synthetic training data.
                    demo=result.model.sha256 == state.analyser.identity.sha256
                    and trained_on_synthetic(state.analyser.stored.metadata),
                )
            ]
            exchange.model = result.model  # the model that made the read shown
            exchange.input_sha256 = result.input_sha256
            exchange.card_ids = [c.uuid for c in cards]
        body = CdsResponse(cards=cards).model_dump_json(exclude_none=True)
        response = Response(body, media_type="application/json")
        if cards:
            return Answer(response, "advice")
        return Answer(response, "no-advice", "no-recent-read")
