"""Plain JSON REST endpoints for hospitals without CDS Hooks (API-key auth).

``POST /v1/risk/cvd``, ``POST /v1/risk/diabetes`` and ``POST /v1/who-cvd`` are
Starlette routes on the mounted app (the fast path through BentoML, see
``benchmarks/bench_cds.py``); their typed schemas are published at
``GET /v1/openapi.json``. Callers send an API key (``X-API-Key: <key>`` or
``Authorization: ApiKey <key>``); every answer, the WHO chart's included, leaves after
its committed audit row (:mod:`serving.http.pipeline`).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from models.who_chart import ChartCell, patient_cell
from models.who_cvd import WhoCvdInputError, WhoCvdInputs, WhoCvdResult, who_cvd_risk
from serving.assess import Advice, NoAdvice, WhoSettings, assess, model_shown
from serving.body import parse_model, read_json
from serving.fhir_out import ADVISORY_NOTE, risk_assessment
from serving.http.audit import Exchange
from serving.http.identify import runtime_of
from serving.http.pipeline import Answer, Handler, endpoint, internal_error
from serving.synthetic import advisory_for

__all__ = [
    "ContributionOut",
    "ModelIdentity",
    "RiskRequest",
    "RiskResponse",
    "WhoCvdRequest",
    "openapi_document",
    "routes",
]

logger = logging.getLogger(__name__)
# The OpenAPI examples' patient: the CVD risk and WHO chart requests show the same person.
_EXAMPLE_PATIENT: dict[str, Any] = {
    "sex": "male",
    "age": 62,
    "smoking": True,
    "sbp": 165,
    "total_chol": 6.2,
    "diabetes": False,
}


class RiskRequest(BaseModel):
    """One patient's values, in the units shown (convert before sending)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{**_EXAMPLE_PATIENT, "bmi": 27.5, "measured": "2026-10-01"}]
        },
    )

    sex: Literal["female", "male"] = Field(description="Administrative sex.")
    age: float = Field(description="Age in years.", examples=[62])
    smoking: bool = Field(description="Current tobacco smoker.")
    sbp: float = Field(description="Systolic blood pressure, mm[Hg].", examples=[165])
    dbp: float | None = Field(default=None, description="Diastolic blood pressure, mm[Hg].")
    total_chol: float | None = Field(default=None, description="Total cholesterol, mmol/L.")
    hdl: float | None = Field(default=None, description="HDL cholesterol, mmol/L.")
    hba1c: float | None = Field(default=None, description="HbA1c, % (NGSP).")
    fasting_glucose: float | None = Field(default=None, description="Fasting glucose, mmol/L.")
    bmi: float | None = Field(default=None, description="Body-mass index, kg/m2.")
    diabetes: bool | None = Field(default=None, description="Known diabetes.")
    bp_treated: bool | None = Field(default=None, description="On blood-pressure drugs.")
    measured: date | None = Field(
        default=None,
        description="Date of the oldest measurement; too old gives no advice (stale-data).",
    )
    patient_ref: str | None = Field(
        default=None,
        max_length=128,
        description="Optional FHIR reference (e.g. 'Patient/123') for the RiskAssessment.",
    )


class ModelIdentity(BaseModel):
    """Which artifact answered."""

    name: str
    version: str
    sha256: str


class ContributionOut(BaseModel):
    """How much one value moves the risk compared with a reference value."""

    feature: str
    value: float
    unit: str
    delta_risk: float = Field(description="Risk change vs the reference value (fraction).")
    text: str


class RiskResponse(BaseModel):
    """Advice, or no advice with a machine-readable reason (never a guessed risk)."""

    request_id: str
    advice: bool = Field(description="False means no advice; see `reason`.")
    reason: str | None = Field(default=None, description="e.g. 'out-of-range:sbp'.")
    advisory: str = ADVISORY_NOTE
    model: ModelIdentity
    model_shown: bool = Field(
        default=True,
        description="False: the model's own estimate is withheld (see `model_withheld`) and "
        "only the WHO chart answers, as on the cards.",
    )
    model_withheld: str | None = Field(
        default=None,
        description="Why the model's estimate is withheld: 'not-validated-against-who-chart' "
        "(its recorded validation does not show it at least as good as the chart on the same "
        "patients) or 'outside-training-range:<field>'.",
    )
    risk: float | None = Field(default=None, description="10-year risk, fraction 0-1.")
    percent: int | None = None
    band: str | None = Field(default=None, description="WHO band of the risk, e.g. '10-<20%'.")
    contributions: list[ContributionOut] = Field(default_factory=list)
    who: WhoCvdResult | None = Field(
        default=None,
        description="WHO 2019 risk equation at the patient's exact values (CVD); can differ "
        "from `who_chart`, the printed chart cell.",
    )
    who_chart: ChartCell | None = Field(
        default=None,
        description="The printed WHO 2019 chart cell the patient falls in (its number and "
        "risk category, computed at the middle of its ranges): what cards call 'WHO chart'.",
    )
    who_note: str | None = Field(default=None, description="Why the WHO chart was not used.")
    missing: dict[str, float | None] = Field(
        default_factory=dict,
        description="Optional inputs not given -> the value the model scored them as "
        "(null: filled in by the model, no single value). Show these to the clinician.",
    )
    risk_assessment: dict[str, Any] | None = Field(
        default=None, description="The same result as a FHIR R4 RiskAssessment."
    )


class WhoCvdRequest(WhoCvdInputs):
    """WHO 2019 chart inputs plus which chart and recalibration to use."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{**_EXAMPLE_PATIENT, "model": "lab", "country": "KHM"}]},
    )

    model: Literal["lab", "nonlab"] = Field(description="Laboratory or non-laboratory chart.")
    region: str | None = Field(default=None, description="GBD region code, e.g. A05GBDR_014_SEA.")
    country: str | None = Field(default=None, description="ISO alpha-3 country, e.g. KHM.")


class WhoCvdResponse(WhoCvdResult):
    """The WHO 2019 equation at the given values, and the printed chart cell they fall in."""

    chart: ChartCell | None = Field(
        default=None,
        description="The printed WHO 2019 chart cell of these values (its number and risk "
        "category, computed at the middle of its ranges): what a clinician reads off the "
        "paper chart; can differ from `risk`, the equation at the exact values. Null "
        "outside the chart (e.g. a sex the charts do not print).",
    )


def _values(body: RiskRequest) -> dict[str, float | str]:
    raw = body.model_dump(exclude={"measured", "patient_ref"}, exclude_none=True)
    return {k: (v if isinstance(v, str) else float(v)) for k, v in raw.items()}


def _risk_handler(outcome: str) -> Handler:
    service_id = f"ncd-{outcome}-risk"

    async def handle(request: Request, exchange: Exchange) -> Answer:
        runtime = runtime_of(request)
        predictor = runtime.ncd.get(service_id)
        if predictor is None:
            missing = JSONResponse({"error": "model-unavailable", "field": None}, status_code=404)
            return Answer(missing, "refused", "model-unavailable")
        meta = exchange.model = predictor.metadata
        identity = ModelIdentity(name=meta.name, version=meta.version, sha256=meta.sha256)
        body = parse_model(RiskRequest, await read_json(request))
        values = _values(body)
        dates = dict.fromkeys(values, body.measured) if body.measured else {}
        try:
            advice = assess(
                predictor,
                values,
                dates={k: v for k, v in dates.items() if v is not None},
                today=datetime.now(UTC).date(),
                max_age_days=runtime.config.max_data_age_days,
                who=WhoSettings(runtime.config.who_region, runtime.config.who_country)
                if outcome == "cvd"
                else None,
            )
        except NoAdvice as exc:
            status = 422 if exc.reason in {"out-of-range", "insufficient-data"} else 200
            no = RiskResponse(
                request_id=exchange.request_id,
                advice=False,
                reason=exc.code,
                model=identity,
                advisory=advisory_for(meta, ADVISORY_NOTE),
            )
            payload = no.model_dump(mode="json", exclude_none=True)
            payload["field"] = exc.field
            return Answer(JSONResponse(payload, status_code=status), "no-advice", exc.code)
        exchange.input_sha256 = advice.input_sha256
        patient = (body.patient_ref or "Patient/unknown").removeprefix("Patient/")
        shown = model_shown(advice)
        answer = RiskResponse(
            request_id=exchange.request_id,
            advice=True,
            advisory=advisory_for(meta, ADVISORY_NOTE),
            model=identity,
            model_shown=shown,
            model_withheld=None if shown else _withheld(advice),
            risk=advice.risk if shown else None,
            percent=advice.percent if shown else None,
            band=advice.band if shown else None,
            contributions=[ContributionOut(**c.model_dump()) for c in advice.contributions]
            if shown
            else [],
            who=advice.who,
            who_chart=advice.who_cell,
            who_note=advice.who_note,
            missing=advice.missing,
            risk_assessment=risk_assessment(
                advice, resource_id=str(uuid.uuid4()), patient_id=patient[:64]
            ),
        )
        response = Response(
            answer.model_dump_json(exclude_none=True), media_type="application/json"
        )
        return Answer(response, "advice")

    return handle


def _withheld(advice: Advice) -> str:
    """Why the model's estimate is not shown (:func:`serving.assess.model_shown`)."""
    if advice.outside_support:
        return f"outside-training-range:{advice.outside_support[0].feature}"
    return "not-validated-against-who-chart"


def _error_without_input(exchange: Exchange) -> Answer:
    exchange.input_sha256 = None
    return internal_error(exchange)


async def _who_cvd(request: Request, exchange: Exchange) -> Answer:
    runtime = runtime_of(request)
    body = parse_model(WhoCvdRequest, await read_json(request))
    exchange.input_sha256 = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    region = body.region or (None if body.country else runtime.config.who_region)
    country = body.country or (None if body.region else runtime.config.who_country)
    inputs = WhoCvdInputs(**body.model_dump(exclude={"model", "region", "country"}))
    try:
        result = who_cvd_risk(inputs, body.model, region=region, country=country)
    except WhoCvdInputError as exc:
        bad = {"error": "out-of-range", "field": exc.field, "message": exc.rule}
        return Answer(JSONResponse(bad, status_code=422), "no-advice", f"out-of-range:{exc.field}")
    chart = patient_cell(result, region=region, country=country)
    answer = WhoCvdResponse(**result.model_dump(), chart=chart)
    return Answer(Response(answer.model_dump_json(), media_type="application/json"), "advice")


# POST /v1/risk/cvd: 10-year CVD risk from the site's model and the WHO chart.
risk_cvd = endpoint(
    "api-key", "rest:ncd-cvd-risk", _risk_handler("cvd"), on_error=_error_without_input
)
# POST /v1/risk/diabetes: 10-year diabetes risk.
risk_diabetes = endpoint(
    "api-key", "rest:ncd-diabetes-risk", _risk_handler("diabetes"), on_error=_error_without_input
)
# POST /v1/who-cvd: the WHO 2019 equation at the given values and their chart cell.
who_cvd = endpoint("api-key", "rest:who-cvd", _who_cvd)


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for the REST routes, generated from the pydantic models."""
    schemas: dict[str, Any] = {}
    for model in (RiskRequest, RiskResponse, WhoCvdRequest, WhoCvdResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema

    def op(summary: str, req: str, res: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "security": [{"apiKey": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{req}"}}
                    },
                },
                "responses": {
                    "200": {
                        "description": "Result (advisory).",
                        "content": {
                            "application/json": {"schema": {"$ref": f"#/components/schemas/{res}"}}
                        },
                    },
                    "400": {"description": "Invalid JSON or field (names the field)."},
                    "401": {"description": "Missing or invalid API key."},
                    "413": {"description": "Body too large."},
                    "422": {"description": "Value outside the validated range (names the field)."},
                    "503": {"description": "Audit store unavailable; no advice given."},
                },
            }
        }

    return {
        "openapi": "3.1.0",
        "info": {"title": "Tonle REST API", "version": "1", "description": ADVISORY_NOTE},
        "paths": {
            "/v1/risk/cvd": op("10-year cardiovascular risk", "RiskRequest", "RiskResponse"),
            "/v1/risk/diabetes": op("10-year diabetes risk", "RiskRequest", "RiskResponse"),
            "/v1/who-cvd": op(
                "WHO 2019 CVD risk equation at the given values, and their printed chart cell",
                "WhoCvdRequest",
                "WhoCvdResponse",
            ),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }


async def openapi(request: Request) -> JSONResponse:
    """``GET /v1/openapi.json``."""
    return JSONResponse(openapi_document())


def routes() -> list[BaseRoute]:
    """The REST routes."""
    return [
        Route("/v1/risk/cvd", risk_cvd, methods=["POST"]),
        Route("/v1/risk/diabetes", risk_diabetes, methods=["POST"]),
        Route("/v1/who-cvd", who_cvd, methods=["POST"]),
        Route("/v1/openapi.json", openapi, methods=["GET"]),
    ]
