"""CDS Hooks 2.0 routes: discovery, every CDS service and feedback.

Every service (the NCD ``patient-view`` services and, with imaging, ``cxr-triage``)
implements :class:`~serving.http.cds.CdsHandler` and answers behind the one route
``POST /cds-services/{id}``, built with :func:`serving.http.pipeline.endpoint`: the
caller is authenticated first (one 401 body; an unknown id is answered 404 only after
that), the hook request is parsed strictly (:mod:`serving.body`), and every answer leaves
after its committed audit row: ``advice``, ``no-advice`` (with a reason code),
``refused`` or ``error``. Discovery (``GET /cds-services``) is an endpoint of the same
pipeline: its audit row (service ``cds-discovery``, outcome ``discovery``) is committed
before the document leaves. Feedback (``POST /cds-services/{id}/feedback``) is an
endpoint of the same pipeline, accepted only for a card this caller's tenant was shown
by that service and stored in the transaction of its call's row (outcome ``feedback``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote

from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from models.metadata import ModelMetadata
from serving.assess import Advice, NoAdvice, WhoSettings, assess
from serving.audit.feedback import CardShown
from serving.audit.records import FeedbackRecord
from serving.audit.records import OverrideReason as AuditOverride
from serving.body import BadRequest, parse_model, read_json
from serving.cards import ncd_card
from serving.cds_models import (
    Card,
    CdsRequest,
    CdsResponse,
    CdsService,
    Discovery,
    FeedbackRequest,
)
from serving.config import NcdServiceConfig
from serving.fhir_in import PrefetchError, extract
from serving.http.audit import Exchange
from serving.http.caller import Caller
from serving.http.cds import CdsCall
from serving.http.identify import runtime_of
from serving.http.pipeline import Answer, endpoint
from serving.i18n import negotiate
from serving.metrics import observe_features
from serving.no_advice_card import actionable, no_advice_card
from serving.prefetch import TEMPLATES, PrefetchUnavailable, complete_prefetch, keys_for
from serving.ui.explanations import explanation_record
from serving.ui.links import signer

if TYPE_CHECKING:
    from serving.runtime import Runtime

__all__ = ["NcdService", "discovery_document", "response_body", "routes"]

logger = logging.getLogger(__name__)

UNKNOWN_SERVICE = "unknown-service"
DISCOVERY = "cds-discovery"  # the service id of discovery's audit rows
_USAGE = (
    "Needs Patient, latest observations (BP, cholesterol, HbA1c, BMI, smoking), Conditions "
    "and active medications."
)


def discovery_document(runtime: Runtime) -> Discovery:
    """The services this deployment offers, with their prefetch templates."""
    return Discovery(services=[s.definition for s in runtime.cds_services.values()])


async def _discovery(request: Request, exchange: Exchange) -> Answer:
    """``GET /cds-services``: audited (outcome ``discovery``) like every answer."""
    document = discovery_document(runtime_of(request)).model_dump_json(exclude_none=True)
    return Answer(Response(document, media_type="application/json"), "discovery")


discovery = endpoint("jwt", DISCOVERY, _discovery)


def _no_cards() -> Response:
    return Response(b'{"cards":[]}', media_type="application/json")


def _model_page(base: str, meta: ModelMetadata, lang: str) -> str:
    """The model card page (a clinician's browser opens it), not the JSON list."""
    return f"{base}/ui/models/{quote(meta.name)}/{quote(meta.version)}?lang={lang}"


class NcdService:
    """An NCD risk service (``patient-view``): the site's model and the WHO chart.

    Args:
        service_id: the id under ``ncd_services`` in the serving config.
        config: its configuration.
        runtime: the running service (its predictor, settings and site options).
    """

    def __init__(self, service_id: str, config: NcdServiceConfig, runtime: Runtime) -> None:
        self.service_id = service_id
        self._runtime = runtime
        predictor = runtime.ncd[service_id]
        self.definition = CdsService(
            hook="patient-view",
            id=service_id,
            title=config.title,
            description=config.description or predictor.metadata.description,
            # All templates: an EHR prefetches once for every service; each service
            # requires only the keys its model and chart need.
            prefetch=dict(TEMPLATES),
            usageRequirements=_USAGE,
        )

    async def answer(self, call: CdsCall) -> Answer:
        """The risk card, a no-advice answer with its reason, or a refusal."""
        runtime, exchange, cds, lang = call.runtime, call.exchange, call.hook, call.lang
        predictor = runtime.ncd[self.service_id]
        exchange.model = predictor.metadata
        outcome = predictor.metadata.ncd.outcome
        who = (
            WhoSettings(runtime.config.who_region, runtime.config.who_country)
            if outcome == "cvd"
            else None
        )
        keys = keys_for(predictor.feature_names, with_who=outcome == "cvd", outcome=outcome)
        auth, caller = runtime.cds_auth, call.caller
        try:
            prefetch = await complete_prefetch(
                cds,
                keys,
                server_allowed=lambda server: (
                    auth is not None and auth.fhir_server_allowed(caller, server)
                ),
                timeout_s=runtime.config.fetch_timeout_s,
                transport=runtime.fhir_transport,
            )
            today = datetime.now(UTC).date()
            found = extract(prefetch, today)
            advice = assess(
                predictor,
                found.values,
                units=found.units,
                dates=found.dates,
                sources=found.sources,
                today=today,
                max_age_days=runtime.config.max_data_age_days,
                who=who,
                prior=found.prior,
                unreadable=found.problems,
                protocol=runtime.config.protocol.load(),
                history=found.history,
                top=len(predictor.metadata.features),  # every factor on the page; card: top 3
            )
        except PrefetchError as exc:
            raise BadRequest("invalid-prefetch", str(exc), f"prefetch.{exc.key}") from None
        except PrefetchUnavailable as exc:
            missing = {"error": exc.reason, "field": "prefetch", "keys": exc.keys}
            return Answer(JSONResponse(missing, status_code=412), "refused", exc.reason)
        except NoAdvice as exc:
            response = self._no_advice(exchange, exc, predictor.metadata, lang)
            return Answer(response, "no-advice", exc.code)
        exchange.model = advice.metadata
        exchange.input_sha256 = advice.input_sha256
        observe_features(self.service_id, advice.metadata, advice.features)
        base = runtime.settings.public_url.rstrip("/")
        card = ncd_card(
            advice,
            lang=lang,
            indicators=runtime.config.indicators,
            patient_id=cds.context.patientId,
            encounter_id=cds.context.encounterId,
            explain_url="",
            region=_region_name(advice),
            source_url=_model_page(base, advice.metadata, lang),
            diabetes_warning_percent=runtime.config.diabetes_scale.warning_percent,
            today=today,
        )
        page = signer(runtime).sign(f"/ui/explain/{card.uuid}")
        card.links[0].url = f"{base}{page}&lang={lang}"
        exchange.card_ids = [card.uuid]
        # Stored with the audit row, in its commit: the link works on any worker.
        exchange.explanation = explanation_record(
            advice,
            card_uuid=card.uuid,
            service_id=self.service_id,
            who_settings=who,
            retention=timedelta(days=runtime.settings.explanation_retention_days),
        )
        return Answer(Response(response_body([card]), media_type="application/json"), "advice")

    def _no_advice(
        self, exchange: Exchange, exc: NoAdvice, meta: ModelMetadata, lang: str
    ) -> Response:
        """``cards: []``, or (site option ``no_advice_card``) one ``info`` card saying why
        when the reason is one the chart can fix (:mod:`serving.no_advice_card`)."""
        runtime = self._runtime
        if not (runtime.config.no_advice_card and actionable(exc)):
            return _no_cards()
        try:
            card = no_advice_card(
                exc,
                meta,
                lang=lang,
                max_age_days=runtime.config.max_data_age_days,
                source_url=_model_page(runtime.settings.public_url.rstrip("/"), meta, lang),
            )
        except Exception:  # the explanation must never turn no-advice into a failure
            logger.exception("request %s: no-advice card failed; no cards", exchange.request_id)
            return _no_cards()
        exchange.card_ids = [card.uuid]
        return Response(response_body([card]), media_type="application/json")


def _service_id(request: Request) -> str:
    """The audited service id: the one called, or ``unknown-service`` (bounded)."""
    service_id = str(request.path_params["service_id"])
    return service_id if service_id in runtime_of(request).cds_services else UNKNOWN_SERVICE


async def _cds_call(request: Request, exchange: Exchange) -> Answer:
    runtime = runtime_of(request)
    service = runtime.cds_services.get(exchange.service_id)
    if service is None:
        unknown = JSONResponse({"error": UNKNOWN_SERVICE, "field": "id"}, status_code=404)
        return Answer(unknown, "refused", UNKNOWN_SERVICE)
    cds = parse_model(CdsRequest, await read_json(request))
    exchange.hook_instance = cds.hookInstance
    exchange.patient_ref = f"Patient/{cds.context.patientId}"
    hook = service.definition.hook
    if cds.hook != hook:
        raise BadRequest(
            "wrong-hook", f"{exchange.service_id} answers {hook}, not {cds.hook[:40]}", "hook"
        )
    assert exchange.caller is not None
    lang = negotiate(request.headers.get("accept-language"), runtime.language)
    answer = await service.answer(CdsCall(cds, exchange.caller, lang, exchange, runtime, request))
    if answer.outcome in ("advice", "no-advice") and runtime.silent(exchange.service_id):
        exchange.mode = "silent"  # the cards stay stored (card_ids, explanation), unsent
        answer.response = _no_cards()
    return answer


def _no_advice_on_error(exchange: Exchange) -> Answer:
    """A defect answers no cards (an EHR shows nothing), audited as an error."""
    exchange.card_ids = []
    exchange.explanation = None
    exchange.input_sha256 = None
    return Answer(_no_cards(), "error", "internal-error")


cds_service = endpoint("jwt", _service_id, _cds_call, on_error=_no_advice_on_error)


_RESPONSE = TypeAdapter(CdsResponse)


def response_body(cards: list[Card]) -> bytes:
    """The JSON body of a CDS Hooks response carrying ``cards``."""
    # Bytes straight from the serializer (model_dump_json decodes them to a str first).
    return _RESPONSE.dump_json(CdsResponse(cards=cards), exclude_none=True)


def _region_name(advice: Advice) -> str:
    """The region as recorded (the card names the country itself, in its language)."""
    return "" if advice.who is None else advice.who.region_name


def _timestamp(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _override(reason: dict[str, object] | None) -> AuditOverride | None:
    if not reason:
        return None
    system, code, display = (reason.get(k) for k in ("system", "code", "display"))
    return AuditOverride(
        system=str(system)[:512] if system else None,
        code=str(code)[:128] if code else None,
        display=str(display)[:512] if display else None,
    )


async def _feedback(request: Request, exchange: Exchange) -> Answer:
    """``POST /cds-services/{id}/feedback``: each entry stored, linked to its card, in
    the transaction of the call's audit row (outcome ``feedback``, service
    ``feedback:<id>``).

    Every card named must be one this service showed to the caller's tenant (else 404
    ``unknown-card``, the same answer for a card of another hospital and for one that
    never existed, audited as refused, and nothing of the request is stored).
    """
    runtime = runtime_of(request)
    service_id = _service_id(request)
    if service_id == UNKNOWN_SERVICE:
        unknown = JSONResponse({"error": UNKNOWN_SERVICE, "field": "id"}, status_code=404)
        return Answer(unknown, "refused", UNKNOWN_SERVICE)
    parsed = parse_model(FeedbackRequest, await read_json(request))
    caller = exchange.caller
    assert caller is not None  # authenticated by the pipeline
    patients: set[str | None] = set()
    for i, item in enumerate(parsed.feedback):
        shown = await run_in_threadpool(_shown_to, runtime, item.card, service_id, caller)
        if shown is None:
            body = {"error": "unknown-card", "field": f"feedback.{i}.card"}
            return Answer(JSONResponse(body, status_code=404), "refused", "unknown-card")
        override = item.overrideReason
        exchange.feedback.append(
            FeedbackRecord(
                card_uuid=item.card,
                request_id=shown.request_id,
                service_id=service_id,
                outcome=item.outcome,
                accepted_suggestions=[s.id for s in item.acceptedSuggestions],
                override_reason=_override(override.reason if override else None),
                comment=override.userComment if override else None,
                outcome_timestamp=_timestamp(item.outcomeTimestamp),
                caller_iss=caller.iss,
                caller_sub=caller.sub,
                caller_tenant=caller.tenant,
            )
        )
        patients.add(shown.patient_ref)
    if len(patients) == 1:  # the audit row names the patient when the cards name one
        exchange.patient_ref = patients.pop()
    return Answer(Response(b"{}", media_type="application/json"), "feedback")


def _shown_to(runtime: Runtime, card: str, service_id: str, caller: Caller) -> CardShown | None:
    """The answer that carried ``card``, if ``service_id`` gave it to ``caller``'s tenant."""
    lookup = getattr(runtime.audit, "card_shown", None)
    shown: CardShown | None = lookup(card) if lookup is not None else None
    if shown is None or shown.service_id != service_id:
        return None
    return shown if caller.owns(shown.caller_iss, shown.caller_tenant) else None


def _feedback_unavailable(exchange: Exchange) -> Answer:
    """503: the cards named could not be looked up; nothing is stored."""
    exchange.feedback.clear()
    unavailable = JSONResponse({"error": "audit-unavailable"}, status_code=503)
    return Answer(unavailable, "error", "store-unavailable")


def _feedback_service_id(request: Request) -> str:
    """The audited service id of a feedback call: ``feedback:<service>``, kept apart
    from the service's own answers (its answer counts and refusal rate)."""
    return f"feedback:{_service_id(request)}"


feedback = endpoint("jwt", _feedback_service_id, _feedback, on_error=_feedback_unavailable)


def routes() -> list[BaseRoute]:
    """The CDS Hooks routes."""
    return [
        Route("/cds-services", discovery, methods=["GET"]),
        Route("/cds-services/{service_id}/feedback", feedback, methods=["POST"]),
        Route("/cds-services/{service_id}", cds_service, methods=["POST"]),
    ]
