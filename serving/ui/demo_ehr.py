"""The demo EHR and its JSON endpoints (only when the demo is enabled, 404 otherwise).

* ``GET /ui/ehr`` - the demo EHR: synthetic patients, real CDS Hooks calls.
* ``POST /ui/api/demo/prefetch`` - the demo EHR's FHIR answers to prefetch templates.
* ``POST /ui/api/demo/token`` - a short-lived JWT from the demo issuer.
* ``POST /ui/api/demo/xray`` - the demo PACS sends a patient's chest X-ray.
"""

from __future__ import annotations

import csv
import json
from datetime import date
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serving import i18n
from serving.cards import feature_label
from serving.http.audit import Exchange
from serving.http.caller import Caller
from serving.http.pipeline import record
from serving.runtime import Runtime
from serving.ui import demo
from serving.ui.render import (
    DISPLAY_UNIT,
    UI_CALLER,
    demo_enabled,
    json_error,
    language,
    message_page,
    render_page,
    runtime_of,
    script_json,
    signed_link,
)

__all__ = ["demo_prefetch", "demo_token", "demo_xray", "ehr"]


def _patient_view(p: demo.DemoPatient, lang: str) -> dict[str, Any]:
    resources = demo.fhir_resources(p)
    observations = []
    for r in resources:
        if r["resourceType"] != "Observation":
            continue
        name = r["id"].removeprefix(f"{p.id}-").replace("-", "_")
        label = feature_label(name, lang)
        if "valueQuantity" in r:
            q = r["valueQuantity"]
            decimals = 0 if float(q["value"]) == round(float(q["value"])) else 1
            unit = DISPLAY_UNIT.get(q["unit"], q["unit"])
            shown = f"{i18n.format_number(q['value'], lang, decimals)} {unit}"
        else:  # the EHR's smoking status (LOINC 72166-2), not the model's yes/no input
            shown = i18n.t(f"value.smoking.{p.obs['smoking'][0]}", lang)
            label = i18n.t("ui.ehr.smoking_status", lang)
        observations.append(
            {
                "label": label,
                "value": shown.strip(),
                "date": i18n.format_date(date.fromisoformat(r["effectiveDateTime"]), lang),
            }
        )
    conditions = [i18n.t("value.t2dm", lang) for r in resources if r["resourceType"] == "Condition"]
    return {
        "id": p.id,
        "name": p.name_km if lang == "km" else p.name,
        "age_sex": i18n.t(
            "ui.patient.age_sex", lang, age=p.age, sex=i18n.t(f"value.{p.sex}", lang)
        ),
        "born": i18n.t(
            "ui.patient.born",
            lang,
            date=date.fromisoformat(resources[0]["birthDate"]),
        ),
        "site": p.site,
        "note": p.note,
        "observations": observations,
        "conditions": conditions,
        "xray": p.xray,
    }


async def ehr(request: Request) -> Response:
    """``GET /ui/ehr``: the demo EHR (synthetic patients, real CDS Hooks calls)."""
    runtime = runtime_of(request)
    if not demo_enabled(runtime):
        return message_page(request, "ui.ehr.disabled", 404)
    lang = language(request)
    keys = [k for k in i18n.catalogue("en") if k.startswith(("ui.", "override.", "value."))]
    strings = {k: i18n.t(k, lang) for k in keys}
    view = [_patient_view(p, lang) for p in demo.patients()]
    return render_page(
        request,
        "ehr.html",
        lang=lang,
        patients=view,
        boot=script_json(
            {
                "lang": lang,
                "strings": strings,
                "patients": view,
                "publicUrl": runtime.settings.public_url,
            }
        ),
    )


async def demo_prefetch(request: Request) -> Response:
    """``POST /ui/api/demo/prefetch``: ``{"patientId", "templates"}`` -> ``{"prefetch"}``."""
    if not demo_enabled(runtime_of(request)):
        return Response(status_code=404)
    try:
        body = json.loads(await request.body())
        p = demo.patient(str(body["patientId"]))
        templates = {str(k): str(v) for k, v in dict(body["templates"]).items()}
    except (ValueError, KeyError, TypeError):
        return json_error("invalid-body")
    return JSONResponse({"prefetch": demo.prefetch(p, templates)})


async def demo_token(request: Request) -> Response:
    """``POST /ui/api/demo/token``: ``{"aud": url}`` -> a 60 s JWT from the demo issuer.

    Exists only when ``TONLE_DEMO_ISSUER_DIR`` names the demo issuer's folder (``tonle
    demo`` sets it); otherwise 404. The audience must be one of this service's CDS
    endpoints, so the token is good for nothing else.
    """
    directory = runtime_of(request).settings.demo_issuer_dir
    if directory is None:
        return Response(status_code=404)
    try:
        aud = str(json.loads(await request.body())["aud"])
    except (ValueError, KeyError, TypeError):
        return json_error("invalid-body")
    public = runtime_of(request).settings.public_url.rstrip("/")
    if not aud.startswith(f"{public}/cds-services"):
        return json_error("audience-not-this-service")
    from serving.demo_issuer import sign_token

    token = await run_in_threadpool(
        lambda: sign_token(aud, directory=directory, lifetime_s=60, sub="tonle-demo-ehr")
    )
    return JSONResponse({"access_token": token, "token_type": "Bearer"})


def _demo_xray(runtime: Runtime, patient_id: str) -> Path | None:
    """A synthetic radiograph for a demo patient, from ``tonle demo``'s generated set.

    ``tonle demo`` keeps its files under one folder: the demo issuer in
    ``<demo>/demo-issuer`` and the synthetic radiographs of :mod:`training.cxr_synthetic`
    (``labels.csv`` + DICOM) in ``<demo>/cxr-synthetic``. The image is picked
    deterministically per patient, preferring one with a finding so the demo shows a
    flagged read.
    """
    directory = runtime.settings.demo_issuer_dir
    if directory is None:
        return None
    folder = Path(directory).parent / "cxr-synthetic"
    try:
        with (folder / "labels.csv").open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return None
    rows.sort(key=lambda row: (row.get("abnormal") != "1", row.get("image", "")))
    if not rows:
        return None
    pick = rows[sum(map(ord, patient_id)) % min(len(rows), 5)]
    path = (folder / pick["image"]).resolve()
    return path if path.is_file() and path.is_relative_to(folder.resolve()) else None


async def demo_xray(request: Request) -> Response:
    """``POST /ui/api/demo/xray``: ``{"patientId"}`` - the demo PACS sends the patient's X-ray.

    Runs the synthetic radiograph through the imaging pipeline (the
    :func:`serving.imaging.routes.analyse_bytes`, as ``POST /v1/imaging/cxr`` does) for
    that patient and commits its audit row; the ``cxr-triage`` CDS service then answers
    the next ``patient-view``. Demo only (404 otherwise).
    """
    runtime = runtime_of(request)
    if not demo_enabled(runtime):
        return Response(status_code=404)
    state = runtime.imaging
    try:
        patient_id = str(json.loads(await request.body())["patientId"])
        p = demo.patient(patient_id)
    except (ValueError, KeyError, TypeError):
        return json_error("invalid-body")
    image = _demo_xray(runtime, p.id) if p.xray else None
    if state is None or image is None:
        return json_error("no-demo-xray", 404)
    from serving.imaging.analysis import CannotAssess
    from serving.imaging.exchange import new_read
    from serving.imaging.routes import analyse_bytes

    # The demo EHR's own tenant, so that its cxr-triage calls find the read.
    caller = Caller(iss=UI_CALLER, sub="demo-pacs", tenant=_demo_tenant(runtime), kind="dev")
    exchange = Exchange("cxr-triage", caller=caller, model=state.analyser.identity)
    try:
        read = await analyse_bytes(state, image.read_bytes(), "application/dicom", p.id)
    except CannotAssess as refusal:
        exchange.patient_ref = f"Patient/{p.id}"
        if not await record(runtime, exchange, "no-advice", refusal.reason):
            return json_error("audit-unavailable", 503)
        return json_error(refusal.reason, 422)
    new_read(exchange, read)  # stored with its audit row, or not at all
    if not await record(runtime, exchange, "advice"):
        return json_error("audit-unavailable", 503)
    page = signed_link(runtime, f"/ui/explain/cxr/{read.result.id}")
    return JSONResponse({"result": read.result.id, "explanation": page})


def _demo_tenant(runtime: Runtime) -> str | None:
    """The tenant the demo issuer's tokens carry (None in dev mode, without JWTs)."""
    from serving.demo_issuer import DEMO_ISSUER

    allowed = getattr(runtime.cds_auth, "issuers", None)
    issuer = allowed.issuers.get(DEMO_ISSUER) if allowed is not None else None
    return None if issuer is None else issuer.tenant
