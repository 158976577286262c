"""The web pages Tonle serves itself (contract C5): explanations and the demo EHR.

Pages (language from ``?lang=``, else ``Accept-Language``, else the site default):

* ``GET /ui/explain/{card uuid}`` - why an NCD card says what it says.
* ``GET /ui/explain/cxr/{result id}`` - a chest X-ray result with its heatmap.
* ``GET /ui/models/{name}/{version}`` - the model card of a loaded model.
* ``GET /ui/ehr`` - the demo EHR (only when the demo is enabled).
* ``GET /ui/launch?iss=...&launch=...`` - minimal SMART app launch (see :func:`launch`).

The explanation pages and their images are opened from cards in a browser without
credentials: their links are signed (:mod:`serving.ui.links`, ``?exp=&sig=``; 403 /
410 otherwise, before any lookup). An NCD explanation is read from the service
database, where the CDS call stored it with its audit row, so any worker shows it.

JSON used by the pages:

* ``POST /ui/api/feedback`` - agree / disagree from an explanation page, stored with
  :meth:`AuditStore.record_feedback` like CDS Hooks feedback.
* ``POST /ui/api/demo/prefetch`` - the demo EHR's FHIR answers to prefetch templates.
* ``POST /ui/api/demo/token`` - a short-lived JWT from the demo issuer (demo only).

Everything (CSS, JS, the Khmer font) is served from ``/ui/static``: no CDN, works
offline. HTML is rendered by Jinja2 with autoescaping; card markdown is rendered by
the browser's own small escaping renderer (``static/markdown.js``).
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
import uuid
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from serving import i18n
from serving.audit.records import FeedbackRecord, OverrideReason
from serving.runtime import Runtime
from serving.ui import demo, links
from serving.ui.explanations import NcdExplanation, headline_metrics
from serving.ui.who_chart import ChartGrid, grid

__all__ = ["UI_CALLER", "demo_enabled", "language", "routes"]

logger = logging.getLogger(__name__)

UI_CALLER = "tonle-ui"
OVERRIDE_SYSTEM = "https://tonle.dev/fhir/CodeSystem/override-reason"
_STATIC = Path(__file__).parent / "static"
_CARD_ID = re.compile(r"^[0-9A-Za-z-]{8,64}$")
_DISPLAY_UNIT = {"mm[Hg]": "mmHg", "kg/m2": "kg/m²", "a": "", "1": ""}
_FLAGS = frozenset({"smoking", "diabetes", "bp_treated"})
_HTML_HEADERS = {
    # Pages only load what Tonle itself serves: no CDN, no inline scripts.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _site_language(runtime: Runtime) -> str:
    language = getattr(runtime, "language", None)
    return str(language) if language else runtime.settings.language


def language(request: Request) -> str:
    """The page language: ``?lang=`` if available, else ``Accept-Language``, else the site's."""
    asked = request.query_params.get("lang")
    if asked in i18n.available_languages():
        return asked
    return i18n.negotiate(request.headers.get("accept-language"), _site_language(_runtime(request)))


def demo_enabled(runtime: Runtime) -> bool:
    """Whether the demo EHR and its token endpoint exist (``TONLE_DEMO_ISSUER_DIR`` set)."""
    return runtime.settings.demo_issuer_dir is not None


@cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("serving.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    lang = context.pop("lang", None) or language(request)
    query = context.pop("query", None)
    if query is None:
        query = {k: v for k, v in request.query_params.items() if k != "lang"}
    meta = i18n.language_meta(lang)

    def tr(key: str, **params: object) -> str:
        return i18n.t(key, lang, **params)

    def num(value: float, decimals: int = 0) -> str:
        return i18n.format_number(value, lang, decimals)

    def when(value: date | datetime | None) -> str:
        return i18n.format_date(value, lang) if value is not None else ""

    languages = [(code, i18n.language_meta(code).name) for code in i18n.available_languages()]
    html = (
        _env()
        .get_template(template)
        .render(
            t=tr,
            num=num,
            when=when,
            lang=lang,
            meta=meta,
            languages=languages,
            path=request.url.path,
            query=query,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status, headers=_HTML_HEADERS)


def _message(request: Request, key: str, status: int) -> HTMLResponse:
    return _page(request, "message.html", status=status, message_key=key)


async def _link_refused(request: Request) -> HTMLResponse | None:
    """The refusal of a page link that is not validly signed (403 / 410, one body)."""
    verdict = await run_in_threadpool(links.verdict, request)
    if verdict == "ok":
        return None
    # One body for every refusal: the request's own query is not echoed.
    status = 410 if verdict == "expired" else 403
    return _page(request, "message.html", status=status, message_key="ui.link.refused", query={})


def _signed(runtime: Runtime, path: str) -> str:
    return links.signer(runtime).sign(path)


# --- NCD explanation -------------------------------------------------------------------


def _explanation(runtime: Runtime, card_id: str) -> NcdExplanation | None:
    """The stored explanation of a card; None if unknown, purged or past its retention."""
    lookup = getattr(runtime.audit, "explanation", None)
    found = lookup(card_id) if lookup is not None and _CARD_ID.match(card_id) else None
    if found is None or found.expires <= datetime.now(UTC):
        return None
    return NcdExplanation.model_validate_json(found.content)


def _value_text(name: str, value: float | str, unit: str, lang: str) -> str:
    if name == "sex":
        return i18n.t(f"value.{value}", lang)
    if name in _FLAGS or unit == "1":
        return i18n.t("value.yes" if float(value) >= 0.5 else "value.no", lang)
    decimals = 0 if float(value) == round(float(value)) or abs(float(value)) >= 50 else 1
    shown = i18n.format_number(float(value), lang, decimals)
    suffix = i18n.t("unit.years", lang) if unit == "a" else _DISPLAY_UNIT.get(unit, unit)
    return f"{shown} {suffix}".strip()


def _feature_label(name: str, lang: str) -> str:
    try:
        return i18n.t(f"feature.{name}", lang)
    except KeyError:
        return name


def _who_grid(ex: NcdExplanation, runtime: Runtime) -> ChartGrid | None:
    who = ex.who
    if who is None:
        return None
    used = who.inputs_used
    col = used.get("total_chol") if who.model == "lab" else used.get("bmi")
    sex = str(used.get("sex"))
    if sex not in ("female", "male"):
        return None
    return grid(
        who.model,
        sex="male" if sex == "male" else "female",
        smoking=bool(used.get("smoking")),
        diabetes=bool(used.get("diabetes")) if who.model == "lab" else None,
        region=ex.who_region,
        country=ex.who_country,
        age=float(used["age"]),  # type: ignore[arg-type]
        sbp=float(used["sbp"]),  # type: ignore[arg-type]
        col_value=float(col) if col is not None else None,  # type: ignore[arg-type]
    )


async def explain_ncd(request: Request) -> Response:
    """``GET /ui/explain/{card_id}``: the NCD explanation page."""
    runtime = _runtime(request)
    refused = await _link_refused(request)
    if refused is not None:
        return refused
    ex = await run_in_threadpool(_explanation, runtime, request.path_params["card_id"])
    if ex is None:
        return _message(request, "ui.explain.not_found", 404)
    lang = language(request)
    units = (
        {spec.name: spec.unit for spec in runtime.ncd[ex.service_id].metadata.features}
        if (ex.service_id in runtime.ncd)
        else {}
    )
    top = max((abs(c.delta_risk) for c in ex.contributions), default=0.0) or 1.0
    factors = [
        {
            "label": _feature_label(c.feature, lang),
            "value": _value_text(
                c.feature, ex.features.get(c.feature, c.value), units.get(c.feature, c.unit), lang
            ),
            "date": ex.dates.get(c.feature),
            "points": abs(c.delta_risk) * 100.0,
            "raises": c.delta_risk >= 0,
            "width": max(2, round(100 * abs(c.delta_risk) / top)),
        }
        for c in ex.contributions
    ]
    data_rows: list[dict[str, Any]] = [
        {
            "label": _feature_label(name, lang),
            "value": _value_text(name, value, units.get(name, ex.units.get(name, "")), lang),
            "date": ex.dates.get(name),
        }
        for name, value in ex.features.items()
    ]
    # Inputs not recorded: shown, with what the model scored them as (never hidden).
    for name, scored_as in ex.missing.items():
        unit = units.get(name, "1")
        text = (
            i18n.t("card.ncd.missing.filled", lang)
            if scored_as is None
            else i18n.t(
                "card.ncd.missing.scored_as", lang, value=_value_text(name, scored_as, unit, lang)
            )
        )
        data_rows.append(
            {"label": _feature_label(name, lang), "value": text, "date": None, "missing": True}
        )
    missing_note = (
        i18n.t(
            "card.ncd.missing.note",
            lang,
            fields=", ".join(_feature_label(name, lang) for name in ex.missing),
        )
        if ex.missing
        else ""
    )
    chart = await run_in_threadpool(_who_grid, ex, runtime)
    return _page(
        request,
        "explain_ncd.html",
        lang=lang,
        ex=ex,
        what_ifs=await run_in_threadpool(ex.what_ifs),
        factors=factors,
        data_rows=data_rows,
        missing_note=missing_note,
        chart=chart,
        link=request.query_params,
        metrics=ex.model.metrics,
        title_key={"cvd": "ui.explain.ncd.title", "diabetes": "ui.explain.diabetes.title"}.get(
            ex.outcome, "ui.explain.title"
        ),
    )


# --- chest X-ray explanation -----------------------------------------------------------


def _cxr_store(runtime: Runtime) -> Any | None:
    """IMG-C's result store (``runtime.extras["imaging"].store``), if imaging is on."""
    return getattr(runtime.extras.get("imaging"), "store", None)


async def explain_cxr(request: Request) -> Response:
    """``GET /ui/explain/cxr/{result_id}``: a chest X-ray result with its heatmap."""
    runtime = _runtime(request)
    refused = await _link_refused(request)
    if refused is not None:
        return refused
    store = _cxr_store(runtime)
    result_id = request.path_params["result_id"]
    try:
        if store is None:
            raise KeyError(result_id)
        result = await run_in_threadpool(store.get, result_id)
    except KeyError:
        return _message(request, "ui.explain.not_found", 404)
    return _page(
        request,
        "explain_cxr.html",
        result=result,
        heatmap=_signed(runtime, f"/ui/explain/cxr/{result.id}/heatmap.png"),
        # The plain image under the overlay, when the result store kept one.
        base_image=_signed(runtime, f"/ui/explain/cxr/{result.id}/image.png")
        if await run_in_threadpool(_has_image, store, result.id)
        else None,
        link=request.query_params,
    )


def _has_image(store: Any, result_id: str) -> bool:
    try:
        return bool(store.image(result_id))
    except (AttributeError, KeyError):
        return False


async def cxr_png(request: Request) -> Response:
    """The overlay (``heatmap.png``) or plain (``image.png``) PNG of a stored result."""
    verdict = await run_in_threadpool(links.verdict, request)
    if verdict != "ok":
        return links.refusal(verdict)
    store = _cxr_store(_runtime(request))
    which = "heatmap" if request.url.path.endswith("/heatmap.png") else "image"
    read = getattr(store, which, None)
    try:
        if read is None:
            raise KeyError(which)
        png = await run_in_threadpool(read, request.path_params["result_id"])
    except KeyError:
        return Response(status_code=404)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


# --- model card --------------------------------------------------------------------------


async def model_card(request: Request) -> Response:
    """``GET /ui/models/{name}/{version}``: the card of a model this service loaded."""
    runtime = _runtime(request)
    name, version = request.path_params["name"], request.path_params["version"]
    stored = next(
        (
            s
            for s in runtime.models.values()
            if s.metadata.name == name and s.metadata.version == version
        ),
        None,
    )
    if stored is None:
        return _message(request, "ui.explain.not_found", 404)
    cards = [stored.card_dir / n for n in ("model-card.md", "README.md")]
    found = next((c for c in cards if c.is_file()), None)
    text = found.read_text(encoding="utf-8") if found else ""
    return _page(
        request,
        "model_card.html",
        meta_=stored.metadata,
        card_json=_script_json(text),
        metrics=headline_metrics(stored.metadata.metrics, limit=50),
    )


def _script_json(value: object) -> Markup:
    """JSON safe to place inside ``<script type="application/json">``."""
    text = json.dumps(value, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 - every markup character is escaped above


# --- feedback ------------------------------------------------------------------------------


def _bad(reason: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status)


async def feedback(request: Request) -> Response:
    """``POST /ui/api/feedback``: agree / disagree with a card, from its explanation page.

    Body: ``{"card": uuid, "agree": bool, "reason": str, "kind": "ncd"|"cxr", "exp": str,
    "sig": str}``: ``exp`` and ``sig`` are those of the signed page link the feedback
    comes from (the capability; 403 / 410 otherwise). The row goes to the same store as
    CDS Hooks feedback, with ``caller_iss = "tonle-ui"``.
    """
    runtime = _runtime(request)
    try:
        body = json.loads(await request.body())
        card = str(body["card"])
        agree = body["agree"]
        reason = str(body.get("reason") or "").strip()[:2000]
        kind = str(body.get("kind") or "ncd")
        link = {"exp": str(body.get("exp") or ""), "sig": str(body.get("sig") or "")}
    except (ValueError, KeyError, TypeError, AttributeError):
        return _bad("invalid-body")
    if not isinstance(agree, bool) or not _CARD_ID.match(card) or kind not in ("ncd", "cxr"):
        return _bad("invalid-body")
    page = f"/ui/explain/cxr/{card}" if kind == "cxr" else f"/ui/explain/{card}"
    verdict = await run_in_threadpool(lambda: links.signer(runtime).check(page, link))
    if verdict != "ok":
        return links.refusal(verdict)
    if not agree and not reason:
        return _bad("reason-required")
    if kind == "cxr":
        store = _cxr_store(runtime)
        try:
            if store is None:
                raise KeyError(card)
            await run_in_threadpool(store.get, card)
        except KeyError:
            return _bad("unknown-card", 404)
        service_id = "cxr-triage"
    else:
        ex = await run_in_threadpool(_explanation, runtime, card)
        if ex is None:
            return _bad("unknown-card", 404)
        service_id = ex.service_id
    if runtime.audit is None:
        return _bad("audit-unavailable", 503)
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
        return _bad("audit-unavailable", 503)
    return JSONResponse({"stored": True})


# --- demo EHR --------------------------------------------------------------------------


def _patient_view(p: demo.DemoPatient, lang: str) -> dict[str, Any]:
    resources = demo.fhir_resources(p)
    observations = []
    for r in resources:
        if r["resourceType"] != "Observation":
            continue
        name = r["id"].removeprefix(f"{p.id}-")
        if "valueQuantity" in r:
            q = r["valueQuantity"]
            decimals = 0 if float(q["value"]) == round(float(q["value"])) else 1
            unit = _DISPLAY_UNIT.get(q["unit"], q["unit"])
            shown = f"{i18n.format_number(q['value'], lang, decimals)} {unit}"
        else:  # smoking status, shown in the page's language
            shown = i18n.t(f"value.smoking.{p.obs['smoking'][0]}", lang)
        observations.append(
            {
                "label": _feature_label(name, lang),
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
    runtime = _runtime(request)
    if not demo_enabled(runtime):
        return _message(request, "ui.ehr.disabled", 404)
    lang = language(request)
    keys = [k for k in i18n.catalogue("en") if k.startswith(("ui.", "override.", "value."))]
    strings = {k: i18n.t(k, lang) for k in keys}
    view = [_patient_view(p, lang) for p in demo.patients()]
    return _page(
        request,
        "ehr.html",
        lang=lang,
        patients=view,
        boot=_script_json(
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
    if not demo_enabled(_runtime(request)):
        return Response(status_code=404)
    try:
        body = json.loads(await request.body())
        p = demo.patient(str(body["patientId"]))
        templates = {str(k): str(v) for k, v in dict(body["templates"]).items()}
    except (ValueError, KeyError, TypeError):
        return _bad("invalid-body")
    return JSONResponse({"prefetch": demo.prefetch(p, templates)})


async def demo_token(request: Request) -> Response:
    """``POST /ui/api/demo/token``: ``{"aud": url}`` -> a 60 s JWT from the demo issuer.

    Exists only when ``TONLE_DEMO_ISSUER_DIR`` names the demo issuer's folder (``tonle
    demo`` sets it); otherwise 404. The audience must be one of this service's CDS
    endpoints, so the token is good for nothing else.
    """
    directory = _runtime(request).settings.demo_issuer_dir
    if directory is None:
        return Response(status_code=404)
    try:
        aud = str(json.loads(await request.body())["aud"])
    except (ValueError, KeyError, TypeError):
        return _bad("invalid-body")
    public = _runtime(request).settings.public_url.rstrip("/")
    if not aud.startswith(f"{public}/cds-services"):
        return _bad("audience-not-this-service")
    from serving.demo_issuer import sign_token

    token = await run_in_threadpool(
        lambda: sign_token(aud, directory=directory, lifetime_s=60, sub="tonle-demo-ehr")
    )
    return JSONResponse({"access_token": token, "token_type": "Bearer"})


def _demo_xray(runtime: Runtime, patient_id: str) -> Path | None:
    """A synthetic radiograph for a demo patient, from ``tonle demo``'s generated set.

    ``tonle demo`` keeps its files under one folder: the demo issuer in
    ``<demo>/demo-issuer`` and IMG-A's synthetic radiographs (``labels.csv`` + DICOM)
    in ``<demo>/cxr-synthetic``. The image is picked deterministically per patient,
    preferring one with a finding so the demo shows a flagged read.
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

    Runs the synthetic radiograph through the imaging pipeline (IMG-C's
    :func:`serving.imaging.routes.analyse_bytes`, as ``POST /v1/imaging/cxr`` does) for
    that patient and commits its audit row; the ``cxr-triage`` CDS service then answers
    the next ``patient-view``. Demo only (404 otherwise).
    """
    runtime = _runtime(request)
    if not demo_enabled(runtime):
        return Response(status_code=404)
    state = runtime.extras.get("imaging")
    try:
        patient_id = str(json.loads(await request.body())["patientId"])
        p = demo.patient(patient_id)
    except (ValueError, KeyError, TypeError):
        return _bad("invalid-body")
    image = _demo_xray(runtime, p.id) if p.xray else None
    if state is None or image is None:
        return _bad("no-demo-xray", 404)
    from serving.imaging.analysis import CannotAssess
    from serving.imaging.routes import analyse_bytes, audit_row

    started = time.perf_counter()
    request_id = uuid.uuid4().hex
    caller = SimpleNamespace(iss=UI_CALLER, sub="demo-pacs", tenant=None)
    try:
        result = await analyse_bytes(state, image.read_bytes(), "application/dicom", p.id)
    except CannotAssess as refusal:
        reason = refusal.reason
        await run_in_threadpool(
            lambda: audit_row(
                state,
                request_id=request_id,
                service_id="cxr-triage",
                outcome="no-advice",
                started=started,
                caller=caller,
                reason=reason,
                patient_ref=f"Patient/{p.id}",
            )
        )
        return _bad(reason, 422)
    await run_in_threadpool(
        lambda: audit_row(
            state,
            request_id=request_id,
            service_id="cxr-triage",
            outcome="advice",
            started=started,
            caller=caller,
            result=result,
        )
    )
    page = _signed(runtime, f"/ui/explain/cxr/{result.id}")
    return JSONResponse({"result": result.id, "explanation": page})


# --- SMART launch ------------------------------------------------------------------------


async def launch(request: Request) -> Response:
    """``GET /ui/launch?iss=&launch=``: minimal SMART app launch.

    The EHR opens this with its FHIR base (``iss``) and an opaque ``launch`` context.
    Tonle checks that ``iss`` is a FHIR server it trusts for some caller, then opens
    the explanation named by ``card`` with the ``exp`` and ``sig`` of the card's signed
    link (passed through by the EHR's launch URL; the page checks them) or the demo EHR.
    A full OAuth 2 authorisation-code exchange is not done: Tonle reads no
    FHIR data from the launch, it only shows what it already computed.
    """
    runtime = _runtime(request)
    iss = request.query_params.get("iss")
    token = request.query_params.get("launch")
    if not iss or not token:
        return _message(request, "ui.launch.missing", 400)
    allowed = runtime.extras.get("smart_fhir_servers")
    if allowed is not None and iss not in allowed:
        return _message(request, "ui.launch.untrusted", 403)
    lang = language(request)
    card = request.query_params.get("card")
    if card and _CARD_ID.match(card):
        signed = {k: v for k in ("exp", "sig") if (v := request.query_params.get(k))}
        query = urlencode({**signed, "lang": lang})
        return RedirectResponse(f"/ui/explain/{card}?{query}", status_code=303)
    return RedirectResponse(f"/ui/ehr?lang={lang}", status_code=303)


async def index(request: Request) -> Response:
    """``/ui`` opens the demo EHR."""
    return RedirectResponse("/ui/ehr", status_code=307)


def routes() -> list[BaseRoute]:
    """The ``/ui`` routes and static files."""
    return [
        Route("/ui", index, methods=["GET"]),
        Route("/ui/", index, methods=["GET"]),
        Route("/ui/ehr", ehr, methods=["GET"]),
        Route("/ui/launch", launch, methods=["GET"]),
        Route("/ui/explain/cxr/{result_id}", explain_cxr, methods=["GET"]),
        Route("/ui/explain/cxr/{result_id}/heatmap.png", cxr_png, methods=["GET"]),
        Route("/ui/explain/cxr/{result_id}/image.png", cxr_png, methods=["GET"]),
        Route("/ui/explain/{card_id}", explain_ncd, methods=["GET"]),
        Route("/ui/models/{name}/{version}", model_card, methods=["GET"]),
        Route("/ui/api/feedback", feedback, methods=["POST"]),
        Route("/ui/api/demo/prefetch", demo_prefetch, methods=["POST"]),
        Route("/ui/api/demo/token", demo_token, methods=["POST"]),
        Route("/ui/api/demo/xray", demo_xray, methods=["POST"]),
        Mount("/ui/static", app=StaticFiles(directory=_STATIC), name="ui-static"),
    ]
