"""The explanation pages and model cards (contract C5).

* ``GET /ui/explain/{card uuid}`` - why an NCD card says what it says.
* ``GET /ui/explain/cxr/{result id}`` - a chest X-ray result with its heatmap.
* ``GET /ui/explain/cxr/{result id}/heatmap.png`` and ``.../image.png`` - its images.
* ``GET /ui/models/{name}/{version}`` - the model card of a loaded model.

The explanation pages and their images are opened from cards in a browser without
credentials: their links are signed (:mod:`serving.ui.links`, ``?exp=&sig=``; 403 /
410 otherwise, before any lookup). An NCD explanation is read from the service
database, where the CDS call stored it with its audit row, so any worker shows it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from models.who_chart import ChartGrid, grid
from serving import i18n
from serving.cards import feature_label, missing_how, missing_text, value_text
from serving.runtime import Runtime
from serving.ui import links
from serving.ui.explanations import NcdExplanation, headline_metrics
from serving.ui.render import (
    CARD_ID,
    language,
    link_refused,
    message_page,
    render_page,
    runtime_of,
    script_json,
    signed_link,
)

__all__ = ["cxr_png", "cxr_store", "explain_cxr", "explain_ncd", "model_card", "stored_explanation"]

# --- NCD explanation -------------------------------------------------------------------


def stored_explanation(runtime: Runtime, card_id: str) -> NcdExplanation | None:
    """The stored explanation of a card; None if unknown, purged or past its retention."""
    lookup = getattr(runtime.audit, "explanation", None)
    found = lookup(card_id) if lookup is not None and CARD_ID.match(card_id) else None
    if found is None or found.expires <= datetime.now(UTC):
        return None
    return NcdExplanation.model_validate_json(found.content)


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
    runtime = runtime_of(request)
    refused = await link_refused(request)
    if refused is not None:
        return refused
    ex = await run_in_threadpool(stored_explanation, runtime, request.path_params["card_id"])
    if ex is None:
        return message_page(request, "ui.explain.not_found", 404)
    lang = language(request)
    meta = runtime.ncd[ex.service_id].metadata if ex.service_id in runtime.ncd else None
    units = {spec.name: spec.unit for spec in meta.features} if meta is not None else {}
    if meta is not None and (meta.name, meta.version) != (ex.model.name, ex.model.version):
        meta = None  # another version scored this card: say nothing of its missing inputs
    top = max((abs(c.delta_risk) for c in ex.contributions), default=0.0) or 1.0
    factors = [
        {
            "label": feature_label(c.feature, lang),
            "value": value_text(
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
            "label": feature_label(name, lang),
            "value": value_text(name, value, units.get(name, ex.units.get(name, "")), lang),
            "date": ex.dates.get(name),
        }
        for name, value in ex.features.items()
    ]
    # Inputs not recorded: shown, with what the model scored them as (never hidden).
    for name, scored_as in ex.missing.items():
        unit = units.get(name, "1")
        how = missing_how(meta, name) if meta is not None else "unmeasured"
        text = missing_text(name, scored_as, unit, lang, how)  # as on the card
        data_rows.append(
            {"label": feature_label(name, lang), "value": text, "date": None, "missing": True}
        )
    missing_note = (
        i18n.t(
            "card.ncd.missing.note",
            lang,
            fields=", ".join(feature_label(name, lang) for name in ex.missing),
        )
        if ex.missing
        else ""
    )
    chart = await run_in_threadpool(_who_grid, ex, runtime)
    # The headline's "WHO chart" number is the outlined cell's, as on the card; the
    # equation at the patient's exact values is shown beside it, named as such.
    who_cell = chart.patient() if chart is not None else None
    return render_page(
        request,
        "explain_ncd.html",
        lang=lang,
        ex=ex,
        what_ifs=await run_in_threadpool(ex.what_ifs),
        factors=factors,
        data_rows=data_rows,
        missing_note=missing_note,
        chart=chart,
        who_cell=who_cell,
        link=request.query_params,
        metrics=ex.model.metrics,
        title_key={"cvd": "ui.explain.ncd.title", "diabetes": "ui.explain.diabetes.title"}.get(
            ex.outcome, "ui.explain.title"
        ),
    )


# --- chest X-ray explanation -----------------------------------------------------------


def cxr_store(runtime: Runtime) -> Any | None:
    """The imaging result store (``runtime.imaging.store``), if imaging is on."""
    return getattr(runtime.imaging, "store", None)


async def explain_cxr(request: Request) -> Response:
    """``GET /ui/explain/cxr/{result_id}``: a chest X-ray result with its heatmap."""
    runtime = runtime_of(request)
    refused = await link_refused(request)
    if refused is not None:
        return refused
    store = cxr_store(runtime)
    result_id = request.path_params["result_id"]
    try:
        if store is None:
            raise KeyError(result_id)
        result = (await run_in_threadpool(store.by_link, result_id)).result
    except KeyError:
        return message_page(request, "ui.explain.not_found", 404)
    return render_page(
        request,
        "explain_cxr.html",
        result=result,
        heatmap=signed_link(runtime, f"/ui/explain/cxr/{result.id}/heatmap.png"),
        # The plain image under the overlay (every stored read keeps it).
        base_image=signed_link(runtime, f"/ui/explain/cxr/{result.id}/image.png"),
        link=request.query_params,
    )


async def cxr_png(request: Request) -> Response:
    """The overlay (``heatmap.png``) or plain (``image.png``) PNG of a stored result."""
    verdict = await run_in_threadpool(links.verdict, request)
    if verdict != "ok":
        return links.refusal(verdict)
    store = cxr_store(runtime_of(request))
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
    runtime = runtime_of(request)
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
        return message_page(request, "ui.explain.not_found", 404)
    cards = [stored.card_dir / n for n in ("model-card.md", "README.md")]
    found = next((c for c in cards if c.is_file()), None)
    text = found.read_text(encoding="utf-8") if found else ""
    return render_page(
        request,
        "model_card.html",
        meta_=stored.metadata,
        card_json=script_json(text),
        metrics=headline_metrics(stored.metadata.metrics, limit=50),
    )
