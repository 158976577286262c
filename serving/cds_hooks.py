"""CDS Hooks 2.0 routes: discovery, the NCD ``patient-view`` services and feedback.

Every call is authenticated (401 with one identical body), and every call that gets
past routing leaves exactly one committed audit row before its response is sent:
``advice``, ``no-advice`` (with a reason code), ``refused`` or ``error``.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from models.metadata import ModelMetadata
from serving.assess import Advice, NoAdvice, WhoSettings, assess
from serving.audit.records import AuditRecord, ExplanationRecord, FeedbackRecord, Outcome
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
from serving.fhir_in import PrefetchError, extract
from serving.i18n import negotiate
from serving.metrics import count_outcome
from serving.no_advice_card import actionable, no_advice_card
from serving.prefetch import TEMPLATES, PrefetchUnavailable, complete_prefetch, keys_for
from serving.runtime import DevCaller, Runtime
from serving.ui.explanations import explanation_record
from serving.ui.links import signer

__all__ = ["UNAUTHORIZED_BODY", "AuthDown", "discovery_document", "routes"]

logger = logging.getLogger(__name__)

UNAUTHORIZED_BODY = b'{"error":"unauthorized"}'
_USAGE = (
    "Needs Patient, latest observations (BP, cholesterol, HbA1c, BMI, smoking), Conditions "
    "and active medications."
)


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _unauthorized() -> Response:
    return Response(
        UNAUTHORIZED_BODY,
        status_code=401,
        media_type="application/json",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def _caller(runtime: Runtime, request: Request) -> Any | None:
    """The authenticated caller, or None when the token is refused."""
    if runtime.cds_auth is None:
        if not runtime.settings.dev:
            return None
        return DevCaller()
    from serving.auth import AuthError, AuthUnavailable

    endpoint = runtime.settings.public_url.rstrip("/") + request.url.path
    try:
        return await runtime.cds_auth.authenticate(request.headers.get("authorization"), endpoint)
    except AuthUnavailable as exc:
        raise AuthDown from exc
    except AuthError:
        return None


class AuthDown(Exception):
    """The replay/key store behind authentication is unreachable: answer 503, no advice."""


def _auth_down() -> Response:
    return JSONResponse({"error": "auth-unavailable"}, status_code=503)


def discovery_document(runtime: Runtime) -> Discovery:
    """The services this deployment offers, with their prefetch templates."""
    services: list[CdsService] = []
    for service_id, service in runtime.config.ncd_services.items():
        predictor = runtime.ncd.get(service_id)
        if predictor is None:
            continue
        services.append(
            CdsService(
                hook="patient-view",
                id=service_id,
                title=service.title,
                description=service.description or predictor.metadata.description,
                # All templates: an EHR prefetches once for every service; each
                # service requires only the keys its model and chart need.
                prefetch=dict(TEMPLATES),
                usageRequirements=_USAGE,
            )
        )
    for extra in runtime.extras.get("cds_services", []):
        services.append(extra)
    return Discovery(services=services)


async def discovery(request: Request) -> Response:
    """``GET /cds-services``."""
    runtime = _runtime(request)
    try:
        if await _caller(runtime, request) is None:
            return _unauthorized()
    except AuthDown:
        return _auth_down()
    return Response(
        discovery_document(runtime).model_dump_json(exclude_none=True),
        media_type="application/json",
    )


class _Call:
    """The audit facts gathered while one call is handled."""

    def __init__(self, service_id: str) -> None:
        self.started = time.perf_counter()
        self.request_id = uuid.uuid4().hex
        self.service_id = service_id
        self.hook_instance: str | None = None
        self.caller: Any | None = None
        self.patient_ref: str | None = None
        self.advice: Advice | None = None
        self.card_ids: list[str] = []
        self.model: Any | None = None
        self.explanation: ExplanationRecord | None = None

    def record(self, outcome: Outcome, reason: str | None) -> AuditRecord:
        meta = self.advice.metadata if self.advice else self.model
        caller = self.caller
        return AuditRecord(
            request_id=self.request_id,
            hook_instance=self.hook_instance,
            service_id=self.service_id,
            card_ids=self.card_ids,
            caller_iss=getattr(caller, "iss", None),
            caller_sub=getattr(caller, "sub", None),
            caller_tenant=getattr(caller, "tenant", None),
            model_name=meta.name if meta else None,
            model_version=meta.version if meta else None,
            model_sha256=meta.sha256 if meta else None,
            input_sha256=self.advice.input_sha256 if self.advice else None,
            outcome=outcome,
            reason=reason,
            patient_ref=self.patient_ref,
            latency_ms=(time.perf_counter() - self.started) * 1000.0,
            explanation=self.explanation if outcome == "advice" else None,
        )


async def _commit(runtime: Runtime, row: AuditRecord) -> bool:
    """Commit the audit row; False when the store is unavailable (answer 503)."""
    if runtime.audit is None:
        return False
    try:
        await runtime.audit.record_async(row)
    except Exception:  # any storage failure: no response may leave without its row
        logger.exception("audit store unavailable; refusing to answer request %s", row.request_id)
        return False
    return True


async def _finish(
    runtime: Runtime, call: _Call, response: Response, outcome: Outcome, reason: str | None
) -> Response:
    if not await _commit(runtime, call.record(outcome, reason)):
        count_outcome(call.service_id, "error", "audit-unavailable")
        return JSONResponse({"error": "audit-unavailable"}, status_code=503)
    count_outcome(call.service_id, outcome, reason)
    response.headers["X-Request-Id"] = call.request_id
    return response


def _no_cards() -> Response:
    return Response(b'{"cards":[]}', media_type="application/json")


def _model_page(base: str, meta: ModelMetadata, lang: str) -> str:
    """The model card page (a clinician's browser opens it), not the JSON list."""
    return f"{base}/ui/models/{quote(meta.name)}/{quote(meta.version)}?lang={lang}"


def _no_advice(
    runtime: Runtime, call: _Call, exc: NoAdvice, meta: ModelMetadata, lang: str
) -> Response:
    """``cards: []``, or (site option ``no_advice_card``) one ``info`` card saying why
    when the reason is one the chart can fix (:mod:`serving.no_advice_card`)."""
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
        logger.exception("request %s: no-advice card failed; answering no cards", call.request_id)
        return _no_cards()
    call.card_ids = [card.uuid]
    return Response(response_body([card]), media_type="application/json")


async def ncd_service(request: Request) -> Response:
    """``POST /cds-services/{id}`` for an NCD risk service (``patient-view``)."""
    runtime = _runtime(request)
    service_id = request.path_params["service_id"]
    predictor = runtime.ncd.get(service_id)
    if predictor is None:
        return JSONResponse({"error": "unknown-service", "field": "id"}, status_code=404)
    call = _Call(service_id)
    call.model = predictor.metadata
    lang = negotiate(request.headers.get("accept-language"), runtime.language)
    try:
        call.caller = await _caller(runtime, request)
    except AuthDown:
        return await _finish(runtime, call, _auth_down(), "error", "auth-unavailable")
    if call.caller is None:
        return await _finish(runtime, call, _unauthorized(), "refused", "unauthorized")
    try:
        cds = parse_model(CdsRequest, await read_json(request))
        call.hook_instance = cds.hookInstance
        call.patient_ref = f"Patient/{cds.context.patientId}"
        if cds.hook != "patient-view":
            raise BadRequest(
                "wrong-hook", f"{service_id} answers patient-view, not {cds.hook[:40]}", "hook"
            )
        outcome = predictor.metadata.extra.get("outcome")
        who = (
            WhoSettings(runtime.config.who_region, runtime.config.who_country)
            if outcome == "cvd"
            else None
        )
        keys = keys_for(predictor.feature_names, with_who=outcome == "cvd", outcome=outcome)
        auth = runtime.cds_auth
        caller = call.caller
        prefetch = await complete_prefetch(
            cds,
            keys,
            server_allowed=lambda server: (
                auth is not None and auth.fhir_server_allowed(caller, server)
            ),
            timeout_s=runtime.config.fetch_timeout_s,
            transport=runtime.extras.get("fhir_transport"),
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
        )
        call.advice = advice
        base = runtime.settings.public_url.rstrip("/")
        card = ncd_card(
            advice,
            lang=lang,
            indicators=runtime.config.indicators,
            patient_id=cds.context.patientId,
            encounter_id=cds.context.encounterId,
            explain_url="",
            region=_region_name(advice, runtime),
            source_url=_model_page(base, advice.metadata, lang),
            diabetes_warning_percent=runtime.config.diabetes_scale.warning_percent,
            today=today,
        )
        page = signer(runtime).sign(f"/ui/explain/{card.uuid}")
        card.links[0].url = f"{base}{page}&lang={lang}"
        call.card_ids = [card.uuid]
        # Stored with the audit row, in its commit: the link works on any worker.
        call.explanation = explanation_record(
            advice,
            card_uuid=card.uuid,
            service_id=service_id,
            who_settings=who,
            retention=timedelta(days=runtime.settings.explanation_retention_days),
        )
        return await _finish(
            runtime,
            call,
            Response(response_body([card]), media_type="application/json"),
            "advice",
            None,
        )
    except BadRequest as exc:
        return await _finish(runtime, call, exc.response(), "refused", exc.reason)
    except PrefetchError as exc:
        bad = BadRequest("invalid-prefetch", str(exc), f"prefetch.{exc.key}")
        return await _finish(runtime, call, bad.response(), "refused", "invalid-prefetch")
    except PrefetchUnavailable as exc:
        missing = {"error": exc.reason, "field": "prefetch", "keys": exc.keys}
        return await _finish(
            runtime, call, JSONResponse(missing, status_code=412), "refused", exc.reason
        )
    except NoAdvice as exc:
        response = _no_advice(runtime, call, exc, predictor.metadata, lang)
        return await _finish(runtime, call, response, "no-advice", exc.code)
    except Exception:
        logger.exception("request %s failed; answering no advice", call.request_id)
        call.advice = None
        return await _finish(runtime, call, _no_cards(), "error", "internal-error")


def response_body(cards: list[Card]) -> bytes:
    """The JSON body of a CDS Hooks response carrying ``cards``."""
    return CdsResponse(cards=cards).model_dump_json(exclude_none=True).encode()


def _region_name(advice: Advice, runtime: Runtime) -> str:
    if advice.who is None:
        return ""
    return advice.who.country_code or advice.who.region_name


def _timestamp(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


async def feedback(request: Request) -> Response:
    """``POST /cds-services/{id}/feedback``: each entry stored, linked to its card."""
    runtime = _runtime(request)
    service_id = request.path_params["service_id"]
    if service_id not in runtime.ncd and service_id not in runtime.extras.get("feedback_ids", ()):
        return JSONResponse({"error": "unknown-service", "field": "id"}, status_code=404)
    try:
        caller = await _caller(runtime, request)
    except AuthDown:
        return _auth_down()
    if caller is None:
        return _unauthorized()
    try:
        parsed = parse_model(FeedbackRequest, await read_json(request))
    except BadRequest as exc:
        return exc.response()
    if runtime.audit is None:
        return JSONResponse({"error": "audit-unavailable"}, status_code=503)
    for item in parsed.feedback:
        reason = item.overrideReason.reason if item.overrideReason else None
        record = FeedbackRecord(
            card_uuid=item.card,
            service_id=service_id,
            outcome=item.outcome,
            accepted_suggestions=[s.id for s in item.acceptedSuggestions],
            override_reason=AuditOverride(
                system=str(reason.get("system"))[:512] if reason.get("system") else None,
                code=str(reason.get("code"))[:128] if reason.get("code") else None,
                display=str(reason.get("display"))[:512] if reason.get("display") else None,
            )
            if reason
            else None,
            comment=item.overrideReason.userComment if item.overrideReason else None,
            outcome_timestamp=_timestamp(item.outcomeTimestamp),
            caller_iss=getattr(caller, "iss", None),
            caller_sub=getattr(caller, "sub", None),
            caller_tenant=getattr(caller, "tenant", None),
        )
        try:
            await run_in_threadpool(runtime.audit.record_feedback, record)
        except Exception:
            logger.exception("feedback store unavailable")
            return JSONResponse({"error": "audit-unavailable"}, status_code=503)
    return Response(b"{}", media_type="application/json")


def routes() -> list[BaseRoute]:
    """The CDS Hooks routes."""
    return [
        Route("/cds-services", discovery, methods=["GET"]),
        Route("/cds-services/{service_id}/feedback", feedback, methods=["POST"]),
        Route("/cds-services/{service_id}", ncd_service, methods=["POST"]),
    ]
